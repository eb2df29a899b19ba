// mevbackup prune / verify / check
#include "cli.hpp"

namespace cli {

namespace {

int finish_report(mevb_report* r, const OutputOptions& out, int exit_code) {
  if (out.json) {
    std::fputs(mevb_report_json(r), stdout);
    std::fputc('\n', stdout);
  } else if (!out.quiet || exit_code != 0) {
    std::fputs(mevb_report_text(r), stdout);
  }
  mevb_report_free(r);
  return exit_code;
}

}  // namespace

Action setup_prune(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::optional<int> keep_last, keep_days, keep_daily, keep_weekly, keep_monthly, keep_yearly;
    std::string grace, kind, source, now;
    bool dry_run = false;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  const char* g = "Policy (at least one)";
  auto keep = [&](const char* name, std::optional<int>& v, const char* what) {
    app->add_option(name, v, what)->type_name("N")->check(CLI::Range(1, 1000000))->group(g);
  };
  keep("--keep-last", o->keep_last, "keep the newest N backups (at least 1 is always kept)");
  keep("--keep-days", o->keep_days, "keep every backup of the last N days");
  keep("--keep-daily", o->keep_daily, "keep the newest backup of each of the last N days");
  keep("--keep-weekly", o->keep_weekly, "... of each of the last N weeks");
  keep("--keep-monthly", o->keep_monthly, "... of each of the last N months");
  keep("--keep-yearly", o->keep_yearly, "... of each of the last N years");
  app->add_option("--grace", o->grace, "age after which an incomplete upload is a leftover (0: at once)")
      ->type_name("DURATION")->check(duration_validator(true));
  app->add_option("-k,--kind", o->kind, "only backups of this kind")->type_name("KIND");
  app->add_option("--source", o->source, "only backups of this source")->type_name("NAME");
  app->add_option("--now", o->now, "the time to judge ages against (RFC 3339; default: now)")->type_name("TIME");
  app->add_flag("-n,--dry-run", o->dry_run, "say what would be deleted, delete nothing");
  add_output_options(app, o->out);
  return [o] {
    apply_output(o->out);
    if (!o->keep_last && !o->keep_days && !o->keep_daily && !o->keep_weekly && !o->keep_monthly && !o->keep_yearly)
      throw UsageError{"prune needs a policy: --keep-last, --keep-days or --keep-daily/weekly/monthly/yearly"};
    auto c = [](const std::string& v) { return v.empty() ? nullptr : v.c_str(); };
    mevb_prune_opts po = MEVB_PRUNE_OPTS_INIT;
    po.keep_last = o->keep_last.value_or(1);
    po.keep_days = o->keep_days.value_or(0);
    po.keep_daily = o->keep_daily.value_or(0);
    po.keep_weekly = o->keep_weekly.value_or(0);
    po.keep_monthly = o->keep_monthly.value_or(0);
    po.keep_yearly = o->keep_yearly.value_or(0);
    if (!o->grace.empty()) po.incomplete_grace_seconds = parse_duration("--grace", o->grace, true);
    po.kind = c(o->kind);
    po.source = c(o->source);
    po.now = c(o->now);
    po.dry_run = o->dry_run ? 1 : 0;
    mevb_repo* repo = open_repo(o->repo);
    mevb_report* r = nullptr;
    if (mevb_repo_prune(repo, &po, &r) != MEVB_OK) fail();
    mevb_repo_free(repo);
    OutputOptions out = o->out;
    if (o->dry_run) out.quiet = false;  // a dry run's report is its whole point
    return finish_report(r, out, kExitOk);
  };
}

Action setup_verify(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::string backup = "latest", kind, source, restore_test;
    std::vector<std::string> queries;
    bool no_record = false;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  app->add_option("-b,--backup", o->backup, "backup id, latest (default) or all")->type_name("ID|latest|all");
  app->add_option("-k,--kind", o->kind, "with latest or all: backups of this kind")->type_name("KIND");
  app->add_option("--source", o->source, "with latest or all: backups of this source")->type_name("NAME");
  app->add_option("--restore-test", o->restore_test, "restore into a scratch database on this server and check it")
      ->type_name("CONNINFO");
  app->add_option("--query", o->queries, "with --restore-test: a query that must succeed (repeatable)")
      ->allow_extra_args(false)->type_name("SQL");
  app->add_flag("--no-record", o->no_record, "do not store the result beside the backup");
  add_output_options(app, o->out);
  return [o] {
    apply_output(o->out);
    auto c = [](const std::string& v) { return v.empty() ? nullptr : v.c_str(); };
    mevb_verify_opts vo = MEVB_VERIFY_OPTS_INIT;
    vo.kind = c(o->kind);
    vo.source = c(o->source);
    vo.restore_test_conninfo = c(o->restore_test);
    if (vo.restore_test_conninfo) warn_password_in_argv(o->restore_test);
    std::vector<const char*> queries;
    for (auto& q : o->queries) queries.push_back(q.c_str());
    vo.queries = queries.data();
    vo.queries_count = queries.size();
    if (!queries.empty() && !vo.restore_test_conninfo) throw UsageError{"--query needs --restore-test CONNINFO"};
    vo.no_record = o->no_record ? 1 : 0;
    vo.progress = on_progress;
    mevb_repo* repo = open_repo(o->repo);
    mevb_report* r = nullptr;
    if (mevb_repo_verify(repo, o->backup.c_str(), &vo, &r) != MEVB_OK) fail();
    mevb_repo_free(repo);
    int failed = mevb_report_status(r);
    return finish_report(r, o->out, failed ? kExitFailure : kExitOk);
  };
}

// Nagios plugin conventions: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, also for usage
// errors and failures (main.cpp), so a monitoring system never reads them as CRITICAL.
Action setup_check(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::string kind, max_age, now, prometheus, warning, critical, future_skew;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  app->add_option("--max-age", o->max_age, "the newest good backup must be younger (e.g. 25h)")
      ->required()->type_name("DURATION")->check(duration_validator());
  app->add_option("--warning", o->warning, "WARNING when the newest good backup is older (default: --max-age)")
      ->type_name("DURATION")->check(duration_validator());
  app->add_option("--critical", o->critical, "CRITICAL when it is older (default: twice --max-age)")
      ->type_name("DURATION")->check(duration_validator());
  app->add_option("--future-skew", o->future_skew,
                  "a backup finished later than now + this is future-dated: WARNING, not fresh (default 5m)")
      ->type_name("DURATION")->check(duration_validator(true));
  app->add_option("-k,--kind", o->kind, "only backups of this kind")->type_name("KIND");
  app->add_option("--now", o->now, "the time to judge ages against (RFC 3339; default: now)")->type_name("TIME");
  app->add_option("--prometheus", o->prometheus, "also write the metrics to FILE (node_exporter textfile)")
      ->type_name("FILE");
  add_output_options(app, o->out);
  return [o] {
    apply_output(o->out);
    g_json_errors = false;  // check reports its failures as UNKNOWN on stdout
    auto c = [](const std::string& v) { return v.empty() ? nullptr : v.c_str(); };
    mevb_check_opts co = MEVB_CHECK_OPTS_INIT;
    co.kind = c(o->kind);
    co.max_age_seconds = parse_duration("--max-age", o->max_age);
    if (!o->warning.empty()) co.warning_seconds = parse_duration("--warning", o->warning);
    if (!o->critical.empty()) co.critical_seconds = parse_duration("--critical", o->critical);
    if (!o->future_skew.empty()) co.future_skew_seconds = parse_duration("--future-skew", o->future_skew, true);
    co.now = c(o->now);
    co.prometheus_file = c(o->prometheus);
    mevb_repo* repo = try_open_repo_at(o->repo.storage, o->repo.repo);
    mevb_report* r = nullptr;
    if (!repo || mevb_repo_check(repo, &co, &r) != MEVB_OK) {
      std::printf("MEVBACKUP UNKNOWN - %s\n", mevb_error_last()->message);
      mevb_repo_free(repo);
      return 3;
    }
    mevb_repo_free(repo);
    int status = mevb_report_status(r);
    return finish_report(r, o->out, status);
  };
}

// Exit 0 when every runbook backup found was adopted (or none was found), 1 when some
// file is damaged (reported, not adopted, left as it is).
Action setup_adopt(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::string pg_restore;
    bool dry_run = false;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  app->add_flag("-n,--dry-run", o->dry_run, "say what would be adopted, write nothing");
  app->add_option("--pg-restore", o->pg_restore, "the pg_restore that reads the dumps' table of contents")
      ->type_name("PATH");
  add_output_options(app, o->out);
  return [o] {
    apply_output(o->out);
    mevb_adopt_opts ao = MEVB_ADOPT_OPTS_INIT;
    ao.dry_run = o->dry_run ? 1 : 0;
    ao.pg_restore_path = o->pg_restore.empty() ? nullptr : o->pg_restore.c_str();
    mevb_repo* repo = open_repo(o->repo);
    mevb_report* r = nullptr;
    if (mevb_repo_adopt(repo, &ao, &r) != MEVB_OK) fail();
    mevb_repo_free(repo);
    int damaged = mevb_report_status(r);
    OutputOptions out = o->out;
    if (o->dry_run) out.quiet = false;  // a dry run's report is its whole point
    return finish_report(r, out, damaged ? kExitFailure : kExitOk);
  };
}

}  // namespace cli
