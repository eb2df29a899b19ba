// C API: a whole-service plan (run, restore, backup sets) and the steps of its reports.
#include "internal.hpp"

using namespace mevb_capi;

struct mevb_plan {
  Plan plan;
  PlanEnvironment env;  // storage defaults and the run context, but for cancel and progress
  CancelToken cancel;
  mevb_log_cb log = nullptr;
  void* log_user = nullptr;
  mevb_capi::Live<mevb_plan> live_;
};

namespace {

PlanEnvironment environment(const mevb_repo_opts& o) {
  PlanEnvironment env;
  env.storage = storage_options(o);
  if (o.stall_timeout_seconds < 0) throw invalid("mevb_repo_opts.stall_timeout_seconds must not be negative");
  env.storage.stall_timeout_seconds = o.stall_timeout_seconds;
  env.ctx.pipeline.stall_timeout = std::chrono::seconds(o.stall_timeout_seconds);
  env.ctx.lock = lock_options(o);
  env.ctx.encryption = encryption_options(o);
  env.ctx.max_rate = o.max_rate;
  if (o.log) {
    auto log = o.log;
    auto lu = o.log_user;
    env.ctx.log = [log, lu](LogLevel lvl, const std::string& msg) { log(static_cast<int>(lvl), msg.c_str(), lu); };
  }
  return env;
}

PlanEnvironment run_environment(mevb_plan* p, const mevb_plan_run_opts& o) {
  PlanEnvironment env = p->env;
  p->cancel.reset();
  env.ctx.cancel = &p->cancel;
  if (o.progress) {
    auto cb = o.progress;
    auto user = o.progress_user;
    env.ctx.progress = [cb, user](const Progress& pr) {
      mevb_progress cp{sizeof(mevb_progress), pr.stage, pr.bytes_in, pr.bytes_out, pr.elapsed_s, pr.done ? 1 : 0};
      return cb(&cp, user) == 0;
    };
  }
  return env;
}

// The report handed out also when the operation failed; the status is its first failure's.
void hand_out(PlanReport r, mevb_report** out) {
  auto rep = std::make_unique<mevb_report>();
  rep->json = r.to_json().dump(2);
  rep->text = r.message;
  rep->status = r.ok ? 0 : 1;
  rep->steps = r.steps;
  if (out) *out = rep.release();
  if (!r.ok) throw Error(r.code == Code::ok ? Code::internal : r.code, r.message);
}

}  // namespace

extern "C" {

int mevb_plan_load(mevb_plan** out, const char* path, const mevb_repo_opts* opts) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(path, "path");
    mevb_repo_opts o = MEVB_REPO_OPTS_INIT;
    read_opts(opts, o, "mevb_repo_opts");
    auto p = std::make_unique<mevb_plan>();
    p->plan = load_plan(path);
    p->env = environment(o);
    p->log = o.log;
    p->log_user = o.log_user;
    *out = p.release();
  });
}

void mevb_plan_free(mevb_plan* plan) {
  if (live(plan)) delete plan;
}

void mevb_plan_cancel(mevb_plan* plan) {
  if (live(plan)) plan->cancel.cancel();
}

const char* mevb_plan_name(const mevb_plan* plan) { return live(plan) ? plan->plan.name.c_str() : nullptr; }

int mevb_plan_run_opts_init(mevb_plan_run_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_plan_run_opts MEVB_PLAN_RUN_OPTS_INIT);
}

int mevb_plan_run(mevb_plan* plan, const mevb_plan_run_opts* opts, mevb_report** out) {
  return guard([&] {
    if (out) *out = nullptr;
    require(plan, "plan");
    mevb_plan_run_opts o = MEVB_PLAN_RUN_OPTS_INIT;
    read_opts(opts, o, "mevb_plan_run_opts");
    hand_out(run_plan(plan->plan, run_environment(plan, o)), out);
  });
}

int mevb_plan_restore(mevb_plan* plan, const mevb_plan_run_opts* opts, mevb_report** out) {
  return guard([&] {
    if (out) *out = nullptr;
    require(plan, "plan");
    mevb_plan_run_opts o = MEVB_PLAN_RUN_OPTS_INIT;
    read_opts(opts, o, "mevb_plan_run_opts");
    PlanRestoreOptions ro;
    ro.set = str_or(o.set, "latest");
    ro.dry_run = o.dry_run != 0;
    ro.from = str_or(o.from);
    ro.target_time = str_or(o.target_time);
    if (o.mevbackup_path) ro.mevbackup_path = o.mevbackup_path;
    hand_out(restore_plan(plan->plan, ro, run_environment(plan, o)), out);
  });
}

int mevb_plan_drill(mevb_plan* plan, const mevb_plan_run_opts* opts, mevb_report** out) {
  return guard([&] {
    if (out) *out = nullptr;
    require(plan, "plan");
    mevb_plan_run_opts o = MEVB_PLAN_RUN_OPTS_INIT;
    read_opts(opts, o, "mevb_plan_run_opts");
    if (o.dry_run) throw invalid("mevb_plan_run_opts.dry_run: a drill has no dry run (it only touches scratch targets)");
    PlanDrillOptions d;
    d.set = str_or(o.set, "latest");
    d.from = str_or(o.from);
    d.report_dir = str_or(o.report_dir);
    hand_out(drill_plan(plan->plan, d, run_environment(plan, o)), out);
  });
}

int mevb_plan_open_repo(mevb_plan* plan, size_t index, mevb_repo** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(plan, "plan");
    if (index > plan->plan.copies.size())
      throw Error(Code::not_found, fmt::format("plan {} has {} copies: there is no repository {}", plan->plan.name,
                                               plan->plan.copies.size(), index));
    const PlanStorage& s = index == 0 ? plan->plan.repository : plan->plan.copies[index - 1];
    RunContext ctx;
    auto r = std::make_unique<mevb_repo>(open_plan_repository(s, plan->env, &ctx));
    r->stall_timeout = std::chrono::duration_cast<std::chrono::seconds>(plan->env.ctx.pipeline.stall_timeout);
    r->lock = plan->env.ctx.lock;
    r->encryption = ctx.encryption;
    r->max_rate = plan->env.ctx.max_rate;
    r->log = plan->log;
    r->log_user = plan->log_user;
    *out = r.release();
  });
}

int mevb_repo_list_sets(mevb_repo* repo, const char* plan_name, mevb_report** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(repo, "repo");
    RunContext ctx = make_context(repo, nullptr, nullptr);
    auto rep = std::make_unique<mevb_report>();
    nlohmann::json arr = nlohmann::json::array();
    for (auto& e : list_backup_sets(repo->repo, str_or(plan_name), ctx.log)) {
      nlohmann::json j = e.set.to_json();
      j.erase("type");
      j.erase("format_version");
      j["complete"] = e.complete;
      j["problem"] = e.problem;
      arr.push_back(j);
      rep->text += fmt::format("{:<40} {:<20} {} members  {}\n", e.set.id, e.set.started_at, e.set.members.size(),
                               e.complete ? "complete" : "INCOMPLETE: " + e.problem);
      if (!e.complete) ++rep->status;
    }
    rep->json = nlohmann::json{{"sets", arr}}.dump(2);
    *out = rep.release();
  });
}

size_t mevb_report_step_count(const mevb_report* r) { return live(r) ? r->steps.size() : 0; }

int mevb_report_step(const mevb_report* r, size_t index, mevb_plan_step* out) {
  return guard([&] {
    require(r, "r");
    require(out, "out");
    if (out->struct_size < sizeof(uint32_t)) throw invalid("mevb_plan_step.struct_size is too small");
    if (index >= r->steps.size())
      throw invalid(fmt::format("step {} out of range: the report has {}", index, r->steps.size()));
    const PlanStep& s = r->steps[index];
    mevb_plan_step v{sizeof(mevb_plan_step), s.name.c_str(), s.status.c_str(), s.message.c_str(),
                     s.started_at.c_str(), s.seconds};
    size_t n = std::min<size_t>(out->struct_size, sizeof v);
    std::memcpy(reinterpret_cast<unsigned char*>(out) + sizeof(uint32_t),
                reinterpret_cast<unsigned char*>(&v) + sizeof(uint32_t), n - sizeof(uint32_t));
  });
}

}  // extern "C"
