// mevbackup run --plan / restore --plan / list --sets: the whole service from one plan file.
#include "cli.hpp"

namespace cli {

namespace {

mevb_plan* open_plan(const std::string& path) {
  mevb_repo_opts ro = base_repo_opts();
  mevb_plan* plan = nullptr;
  if (mevb_plan_load(&plan, path.c_str(), &ro) != MEVB_OK) fail();
  return plan;
}

void add_plan_option(CLI::App* app, std::string& path) {
  app->add_option("--plan", path, "the plan file (TOML): sources, repository, copies, objectives, hooks")
      ->envname("MEVBACKUP_PLAN")->required()->type_name("FILE");
}

// Prints the report (JSON, or one line per step and the outcome) and returns the exit
// status: the report's on success, else the library's error as every command reports it.
int finish(int rc, mevb_report* rep, mevb_plan* plan, const OutputOptions& out) {
  // Read before the report's accessors set the last error anew.
  const mevb_error* e = mevb_error_last();
  int code = e->code;
  std::string message = e->message && *e->message ? e->message : mevb_status_str(code);
  bool retriable = e->retriable != 0;
  if (rep && out.json) {
    std::printf("%s\n", mevb_report_json(rep));
  } else if (rep && !out.quiet) {
    for (size_t i = 0; i < mevb_report_step_count(rep); ++i) {
      mevb_plan_step s = MEVB_PLAN_STEP_INIT;
      if (mevb_report_step(rep, i, &s) != MEVB_OK) continue;
      std::printf("%-8s %-28s %7.1f s  %s\n", s.status, s.name, s.seconds, s.message);
    }
    if (rc == MEVB_OK) std::printf("%s\n", mevb_report_text(rep));
  }
  std::fflush(stdout);
  if (rep) mevb_report_free(rep);
  if (rc != MEVB_OK) fail_with(code, message, retriable);
  mevb_plan_free(plan);
  return kExitOk;
}

}  // namespace

// The options of run, restore --plan and drill; each command adds those it takes.
struct PlanCommand {
  OutputOptions out;
  std::string plan, set = "latest", from, report, target_time;
  bool dry_run = false;

  void add_set_and_from(CLI::App* app, const char* verb) {
    app->add_option("--set", set, "the backup set: an id, or latest (default: the newest complete set)")
        ->type_name("ID|latest");
    app->add_option("--from", from,
                    std::string(verb) + " from this location (an off-site copy) instead of the repository")
        ->type_name("REPO");
  }

  // Loads the plan, runs `op` with the options set, prints its report, returns the exit status.
  int perform(int (*op)(mevb_plan*, const mevb_plan_run_opts*, mevb_report**)) const {
    apply_output(out);
    mevb_plan* p = open_plan(plan);
    mevb_plan_run_opts ro = MEVB_PLAN_RUN_OPTS_INIT;
    ro.progress = on_progress;
    ro.set = set.c_str();
    ro.dry_run = dry_run ? 1 : 0;
    ro.from = from.empty() ? nullptr : from.c_str();
    ro.report_dir = report.empty() ? nullptr : report.c_str();
    ro.target_time = target_time.empty() ? nullptr : target_time.c_str();
    std::string exe = self_path();  // restore_command (wal-fetch) runs this very program
    ro.mevbackup_path = exe.c_str();
    mevb_report* rep = nullptr;
    int rc = op(p, &ro, &rep);
    return finish(rc, rep, p, out);
  }
};

Action setup_run(CLI::App* app) {
  auto o = std::make_shared<PlanCommand>();
  add_plan_option(app, o->plan);
  add_output_options(app, o->out);
  return [o] { return o->perform(mevb_plan_run); };
}

Action setup_restore_plan(CLI::App* app) {
  auto o = std::make_shared<PlanCommand>();
  add_plan_option(app, o->plan);
  o->add_set_and_from(app, "restore");
  app->add_flag("-n,--dry-run", o->dry_run, "check the set and print each step; change nothing");
  app->add_option("--target-time", o->target_time,
                  "PostgreSQL to this moment through the plan's [pitr] base backups and WAL, the other sources "
                  "from the newest set that finished before it (\"2026-11-27 07:50:00+00\")")
      ->type_name("TIME");
  add_output_options(app, o->out);
  return [o] { return o->perform(mevb_plan_restore); };
}

Action setup_drill(CLI::App* app) {
  auto o = std::make_shared<PlanCommand>();
  add_plan_option(app, o->plan);
  o->add_set_and_from(app, "drill");
  app->add_option("--report", o->report,
                  "write the report there: drill-<time>.json, latest.json, summary.txt, report.html, "
                  "mevbackup_drill.prom")
      ->type_name("DIR");
  add_output_options(app, o->out);
  return [o] { return o->perform(mevb_plan_drill); };
}

int list_sets(mevb_repo* repo, const std::string& plan_name, const OutputOptions& out) {
  mevb_report* rep = nullptr;
  if (mevb_repo_list_sets(repo, plan_name.empty() ? nullptr : plan_name.c_str(), &rep) != MEVB_OK) fail();
  std::fputs(out.json ? mevb_report_json(rep) : mevb_report_text(rep), stdout);
  if (out.json) std::fputs("\n", stdout);
  mevb_report_free(rep);
  mevb_repo_free(repo);
  return kExitOk;
}

mevb_repo* open_plan_repo(const std::string& path, std::string* name) {
  mevb_plan* plan = open_plan(path);
  mevb_repo* repo = nullptr;
  if (mevb_plan_open_repo(plan, 0, &repo) != MEVB_OK) fail();
  *name = mevb_plan_name(plan);
  mevb_plan_free(plan);
  return repo;
}

}  // namespace cli
