// mevbackup prune / verify / check
#include "cli.hpp"

namespace cli {

namespace {

int to_int(const Args& a, const std::string& name, int dflt, int min) {
  const char* v = opt(a, name);
  if (!v) return dflt;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  if (!*v || *end || n < min || n > 1000000)
    throw UsageError{"--" + name + " must be an integer >= " + std::to_string(min) + ", not \"" + v + "\""};
  return static_cast<int>(n);
}

// Seconds of a duration such as 25h, 7d, 1d12h.
// A duration such as 25h, 7d or 1d12h; "0" too where zero makes sense (allow_zero).
long long to_seconds(const std::string& name, const std::string& v, bool allow_zero = false) {
  if (allow_zero && (v == "0" || v == "0s")) return 0;
  long long total = 0, n = 0;
  bool digits = false;
  for (char c : v) {
    if (c >= '0' && c <= '9') {
      n = n * 10 + (c - '0');
      digits = true;
      if (n > 100000000) break;
      continue;
    }
    long long unit = c == 's' ? 1 : c == 'm' ? 60 : c == 'h' ? 3600 : c == 'd' ? 86400 : c == 'w' ? 604800 : 0;
    if (!unit || !digits) throw UsageError{"--" + name + ": invalid duration \"" + v + "\" (e.g. 25h, 7d, 1d12h)"};
    total += n * unit;
    n = 0;
    digits = false;
  }
  if (digits || total <= 0) throw UsageError{"--" + name + ": invalid duration \"" + v + "\" (e.g. 25h, 7d, 1d12h)"};
  return total;
}

int finish_report(mevb_report* r, bool json, int exit_code) {
  std::fputs(json ? mevb_report_json(r) : mevb_report_text(r), stdout);
  if (json) std::fputc('\n', stdout);
  mevb_report_free(r);
  return exit_code;
}

}  // namespace

int cmd_prune(int argc, char** argv, int start) {
  Args a = parse(argc, argv, start,
                 {"repo", "keep-last", "keep-days", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly",
                  "grace", "kind", "source", "now"},
                 {}, {"dry-run", "json", "quiet", "verbose"});
  common_flags(a);
  static const char* rules[] = {"keep-last", "keep-days", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly"};
  bool any = false;
  for (const char* r : rules) any = any || a.one.count(r);
  if (!any) throw UsageError{"prune needs a policy: --keep-last, --keep-days or --keep-daily/weekly/monthly/yearly"};
  mevb_prune_opts o = MEVB_PRUNE_OPTS_INIT;
  o.keep_last = to_int(a, "keep-last", 1, 1);
  o.keep_days = to_int(a, "keep-days", 0, 1);
  o.keep_daily = to_int(a, "keep-daily", 0, 1);
  o.keep_weekly = to_int(a, "keep-weekly", 0, 1);
  o.keep_monthly = to_int(a, "keep-monthly", 0, 1);
  o.keep_yearly = to_int(a, "keep-yearly", 0, 1);
  if (const char* g = opt(a, "grace")) o.incomplete_grace_seconds = to_seconds("grace", g, true);
  o.kind = opt(a, "kind");
  o.source = opt(a, "source");
  o.now = opt(a, "now");
  o.dry_run = a.flags.count("dry-run") ? 1 : 0;
  mevb_repo* repo = open_repo(a);
  mevb_report* r = nullptr;
  if (mevb_repo_prune(repo, &o, &r) != MEVB_OK) fail();
  mevb_repo_free(repo);
  return finish_report(r, a.flags.count("json"), 0);
}

int cmd_verify(int argc, char** argv, int start) {
  Args a = parse(argc, argv, start, {"repo", "backup", "kind", "source", "restore-test"}, {"query"},
                 {"no-record", "json", "quiet", "verbose"});
  common_flags(a);
  std::string which = a.one.count("backup") ? a.one["backup"] : "latest";
  mevb_verify_opts o = MEVB_VERIFY_OPTS_INIT;
  o.kind = opt(a, "kind");
  o.source = opt(a, "source");
  o.restore_test_conninfo = opt(a, "restore-test");
  if (o.restore_test_conninfo) warn_password_in_argv(o.restore_test_conninfo);
  std::vector<const char*> queries;
  if (auto it = a.many.find("query"); it != a.many.end())
    for (auto& q : it->second) queries.push_back(q.c_str());
  o.queries = queries.data();
  o.queries_count = queries.size();
  if (!queries.empty() && !o.restore_test_conninfo) throw UsageError{"--query needs --restore-test CONNINFO"};
  o.no_record = a.flags.count("no-record") ? 1 : 0;
  o.progress = on_progress;
  mevb_repo* repo = open_repo(a);
  mevb_report* r = nullptr;
  if (mevb_repo_verify(repo, which.c_str(), &o, &r) != MEVB_OK) fail();
  mevb_repo_free(repo);
  int failed = mevb_report_status(r);
  return finish_report(r, a.flags.count("json"), failed ? 1 : 0);
}

// Nagios plugin conventions: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN — also for
// usage errors and failures, so a monitoring system never reads them as CRITICAL.
int cmd_check(int argc, char** argv, int start) {
  try {
    Args a = parse(argc, argv, start, {"repo", "kind", "max-age", "now", "prometheus", "warning", "critical", "future-skew"},
                   {}, {"json", "quiet", "verbose"});
    common_flags(a);
    mevb_check_opts o = MEVB_CHECK_OPTS_INIT;
    o.kind = opt(a, "kind");
    o.max_age_seconds = to_seconds("max-age", need(a, "max-age"));
    if (const char* w = opt(a, "warning")) o.warning_seconds = to_seconds("warning", w);
    if (const char* c = opt(a, "critical")) o.critical_seconds = to_seconds("critical", c);
    if (const char* f = opt(a, "future-skew")) o.future_skew_seconds = to_seconds("future-skew", f, true);
    o.now = opt(a, "now");
    o.prometheus_file = opt(a, "prometheus");
    std::string location = need(a, "repo", "MEVBACKUP_REPO");
    mevb_repo* repo = nullptr;
    mevb_report* r = nullptr;
    if (mevb_repo_open(&repo, location.c_str(), nullptr) != MEVB_OK || mevb_repo_check(repo, &o, &r) != MEVB_OK) {
      std::printf("MEVBACKUP UNKNOWN - %s\n", mevb_error_last()->message);
      mevb_repo_free(repo);
      return 3;
    }
    mevb_repo_free(repo);
    int status = mevb_report_status(r);
    return finish_report(r, a.flags.count("json"), status);
  } catch (const UsageError& e) {
    std::printf("MEVBACKUP UNKNOWN - usage: %s\n", e.msg.c_str());
    return 3;
  }
}

// Exit 0 when every runbook backup found was adopted (or none was found), 1 when some
// file is damaged (reported, not adopted, left as it is).
int cmd_adopt(int argc, char** argv, int start) {
  Args a = parse(argc, argv, start, {"repo", "pg-restore"}, {}, {"dry-run", "json", "quiet", "verbose"});
  common_flags(a);
  mevb_adopt_opts o = MEVB_ADOPT_OPTS_INIT;
  o.dry_run = a.flags.count("dry-run") ? 1 : 0;
  o.pg_restore_path = opt(a, "pg-restore");
  mevb_repo* repo = open_repo(a);
  mevb_report* r = nullptr;
  if (mevb_repo_adopt(repo, &o, &r) != MEVB_OK) fail();
  mevb_repo_free(repo);
  int damaged = mevb_report_status(r);
  return finish_report(r, a.flags.count("json"), damaged ? 1 : 0);
}

}  // namespace cli
