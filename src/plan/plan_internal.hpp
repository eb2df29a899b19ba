// Shared by the plan's operations (plan_run.cpp, drill.cpp): opened repositories, the
// step recorder and the hook runner.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "mevbackup/plan.hpp"

namespace mevbackup::plan_detail {

// A repository of the plan, opened with its own storage options and keys.
struct OpenedRepository {
  OpenedRepository(Repository r, const RunContext& c) : repo(std::move(r)), ctx(c) {}
  Repository repo;
  RunContext ctx;  // the environment's, with this repository's encryption
  std::string place, location;
};
std::unique_ptr<OpenedRepository> open_plan_storage(const PlanStorage& s, const PlanEnvironment& env);

// Records the steps of a report: each with its start, duration and outcome.
class Steps {
 public:
  Steps(PlanReport& r, const RunContext& ctx);
  // Runs `fn` as the step `name`; a thrown Error fails the step (the report keeps the
  // first failure's code). True when it succeeded.
  bool run(const std::string& name, const std::function<void(PlanStep&)>& fn);
  // A step not run: "skipped" or "planned".
  void note(const std::string& name, const std::string& status, const std::string& message);
  bool failed() const;
  // Sets the report's end, duration, ok and message.
  void finish(const std::string& message);

 private:
  PlanReport& r_;
  const RunContext& ctx_;
  std::chrono::steady_clock::time_point t0_;
};

// Runs one hook command with /bin/sh -c in the plan's hook directory, with the base
// environment only; killed (its whole process group) after `timeout` or on cancel.
void run_hook(const Plan& plan, const std::string& command, std::chrono::seconds timeout, Code fail_code,
              const RunContext& ctx, PlanStep& step);
// Runs the hooks in order as steps "hook WHICH[i]"; false at the first that fails.
bool run_hooks(Steps& steps, const Plan& plan, const char* which, const std::vector<std::string>& commands,
               Code fail_code, const RunContext& ctx);

// The password a [redis.NAME] password_file holds (its first line); empty without one.
std::string redis_password(const PlanRedis& r);

}  // namespace mevbackup::plan_detail
