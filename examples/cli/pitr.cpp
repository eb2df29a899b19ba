// mevbackup wal-push / wal-fetch: PostgreSQL's archive_command and restore_command.
//   archive_command = 'mevbackup wal-push --repo /backups %p'
//   restore_command = 'mevbackup wal-fetch --repo /backups %f %p'
#include "cli.hpp"

#include <climits>

namespace cli {

int cmd_wal_push(int argc, char** argv, int start) {
  std::vector<std::string> pos;
  Args a = parse(argc, argv, start, {"repo"}, {}, {"quiet", "verbose"}, &pos);
  common_flags(a);
  g_progress = false;
  if (pos.size() != 1) throw UsageError{"wal-push takes one WAL file path (%p)"};
  mevb_repo* repo = open_repo(a);
  int already = 0;
  if (mevb_wal_push(repo, pos[0].c_str(), &already) != MEVB_OK) fail();
  mevb_repo_free(repo);
  if (already && g_verbose) std::fprintf(stderr, "mevbackup: %s was already archived\n", pos[0].c_str());
  return 0;
}

int cmd_wal_fetch(int argc, char** argv, int start) {
  std::vector<std::string> pos;
  Args a = parse(argc, argv, start, {"repo"}, {}, {"quiet", "verbose"}, &pos);
  common_flags(a);
  g_progress = false;
  if (pos.size() != 2) throw UsageError{"wal-fetch takes a WAL file name (%f) and a destination path (%p)"};
  mevb_repo* repo = open_repo(a);
  int rc = mevb_wal_fetch(repo, pos[0].c_str(), pos[1].c_str());
  // PostgreSQL asks for files that do not exist (the next timeline's history, the
  // segment past the end of the archive): that is an ordinary "no", said quietly.
  if (rc == MEVB_ERR_NOT_FOUND) {
    if (g_verbose) std::fprintf(stderr, "mevbackup: %s is not archived\n", pos[0].c_str());
    mevb_repo_free(repo);
    return 1;
  }
  if (rc != MEVB_OK) fail();
  mevb_repo_free(repo);
  return 0;
}

// mevbackup backup basebackup --repo R --dbname CONNINFO
int cmd_backup_basebackup(int argc, char** argv, int start) {
  Args a = parse(argc, argv, start, {"repo", "dbname", "prefix", "compress", "level", "max-rate"}, {},
                 {"json", "quiet", "verbose", "spread-checkpoint", "allow-no-archiving"});
  common_flags(a);
  std::string conninfo = need(a, "dbname");
  warn_password_in_argv(conninfo);
  mevb_basebackup_opts o = MEVB_BASEBACKUP_OPTS_INIT;
  o.conninfo = conninfo.c_str();
  o.name_prefix = opt(a, "prefix");
  o.compression = opt(a, "compress");
  o.level = level_option(a);
  o.spread_checkpoint = a.flags.count("spread-checkpoint") ? 1 : 0;
  o.allow_no_archiving = a.flags.count("allow-no-archiving") ? 1 : 0;
  if (const char* r = opt(a, "max-rate")) {
    char* end = nullptr;
    unsigned long v = std::strtoul(r, &end, 10);
    if (!*r || *end || v < 32 || v > 1048576) throw UsageError{std::string("--max-rate is in kB/s, 32..1048576, not \"") + r + "\""};
    o.max_rate_kbps = static_cast<uint32_t>(v);
  }
  o.progress = on_progress;
  mevb_repo* repo = open_repo(a);
  mevb_backup* b = nullptr;
  if (mevb_repo_backup_basebackup(repo, &o, &b) != MEVB_OK) fail();
  return report_backup(repo, b, a.flags.count("json") > 0);
}

// mevbackup restore pitr --repo R [--target-time T | --target-lsn L | --target-name N] --data-dir DIR
int cmd_restore_pitr(int argc, char** argv, int start) {
  Args a = parse(argc, argv, start,
                 {"repo", "target-time", "target-lsn", "target-name", "data-dir", "backup", "owner", "timeout", "log"},
                 {"set", "tablespace-map"}, {"start", "json", "quiet", "verbose"});
  common_flags(a);
  std::string repo_url = need(a, "repo", "MEVBACKUP_REPO");
  std::string data_dir = need(a, "data-dir");
  int targets = (opt(a, "target-time") != nullptr) + (opt(a, "target-lsn") != nullptr) + (opt(a, "target-name") != nullptr);
  if (targets > 1) throw UsageError{"give at most one of --target-time, --target-lsn, --target-name"};
  // restore_command runs this very program, by its absolute path.
  char self[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  std::string exe = n > 0 ? std::string(self, static_cast<size_t>(n)) : "mevbackup";
  // S3 options that are not secrets travel into restore_command; credentials must come
  // from the server's environment (AWS_ACCESS_KEY_ID, ...), never from its configuration.
  std::vector<std::string> fetch_args;
  for (auto& name : kStorageOptions)
    if (const char* v = opt(a, name)) {
      fetch_args.push_back("--" + name);
      fetch_args.push_back(v);
    }
  for (auto& name : kStorageFlags)
    if (a.flags.count(name)) fetch_args.push_back("--" + name);
  std::vector<const char*> fa, sets, maps;
  for (auto& s : fetch_args) fa.push_back(s.c_str());
  if (auto it = a.many.find("set"); it != a.many.end())
    for (auto& s : it->second) sets.push_back(s.c_str());
  if (auto it = a.many.find("tablespace-map"); it != a.many.end())
    for (auto& s : it->second) maps.push_back(s.c_str());
  mevb_pitr_restore_opts o = MEVB_PITR_RESTORE_OPTS_INIT;
  o.data_dir = data_dir.c_str();
  o.target_time = opt(a, "target-time");
  o.target_lsn = opt(a, "target-lsn");
  o.target_name = opt(a, "target-name");
  o.backup_id = opt(a, "backup");
  o.repo_url = repo_url.c_str();
  o.mevbackup_path = exe.c_str();
  o.owner = opt(a, "owner");
  o.settings = sets.empty() ? nullptr : sets.data();
  o.settings_count = sets.size();
  o.tablespace_map = maps.empty() ? nullptr : maps.data();
  o.tablespace_map_count = maps.size();
  o.wal_fetch_args = fa.empty() ? nullptr : fa.data();
  o.wal_fetch_args_count = fa.size();
  o.start = a.flags.count("start") ? 1 : 0;
  if (const char* t = opt(a, "timeout")) {
    char* end = nullptr;
    long v = std::strtol(t, &end, 10);
    if (!*t || *end || v < 1 || v > 86400 * 7) throw UsageError{std::string("--timeout is seconds, not \"") + t + "\""};
    o.timeout_seconds = static_cast<int>(v);
  }
  o.log_file = opt(a, "log");
  o.progress = on_progress;
  mevb_repo* repo = open_repo_at(a, repo_url);
  mevb_report* r = nullptr;
  if (mevb_repo_restore_pitr(repo, &o, &r) != MEVB_OK) fail();
  std::fputs(a.flags.count("json") ? mevb_report_json(r) : mevb_report_text(r), stdout);
  mevb_report_free(r);
  mevb_repo_free(repo);
  return 0;
}

}  // namespace cli
