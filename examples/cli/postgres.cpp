// mevbackup backup postgres / restore postgres
#include "cli.hpp"

namespace cli {

int cmd_backup_postgres(int argc, char** argv, int start) {
  Args a = parse(argc, argv, start, {"repo", "dbname", "prefix", "compress", "level", "pg-dump"}, {"pg-dump-arg"},
                 {"json", "quiet", "verbose"});
  common_flags(a);
  std::string conninfo = need(a, "dbname");
  warn_password_in_argv(conninfo);
  mevb_pg_backup_opts o = MEVB_PG_BACKUP_OPTS_INIT;
  o.conninfo = conninfo.c_str();
  o.name_prefix = opt(a, "prefix");
  o.compression = opt(a, "compress");
  o.pg_dump_path = opt(a, "pg-dump");
  o.level = level_option(a);
  std::vector<const char*> extra;
  if (auto it = a.many.find("pg-dump-arg"); it != a.many.end()) {
    for (auto& s : it->second) extra.push_back(s.c_str());
    o.pg_dump_args = extra.data();
    o.pg_dump_args_count = extra.size();
  }
  o.progress = on_progress;
  mevb_repo* repo = open_repo(a);
  mevb_backup* b = nullptr;
  if (mevb_repo_backup_postgres(repo, &o, &b) != MEVB_OK) fail();
  return report_backup(repo, b, a.flags.count("json") > 0);
}

int cmd_restore_postgres(int argc, char** argv, int start) {
  Args a = parse(argc, argv, start, {"repo", "dbname", "backup", "source", "pg-restore", "jobs", "staging-dir"},
                 {"pg-restore-arg"},
                 {"clean", "quiet", "verbose", "allow-property-loss"});
  common_flags(a);
  std::string conninfo = need(a, "dbname");
  warn_password_in_argv(conninfo);
  std::string backup = a.one.count("backup") ? a.one["backup"] : "latest";
  mevb_pg_restore_opts o = MEVB_PG_RESTORE_OPTS_INIT;
  o.conninfo = conninfo.c_str();
  o.clean = a.flags.count("clean") ? 1 : 0;
  o.allow_property_loss = a.flags.count("allow-property-loss") ? 1 : 0;
  o.source_name = opt(a, "source");
  o.pg_restore_path = opt(a, "pg-restore");
  o.staging_dir = opt(a, "staging-dir");
  if (const char* j = opt(a, "jobs")) {
    char* end = nullptr;
    long v = std::strtol(j, &end, 10);
    if (!*j || *end || v < 1 || v > 64) throw UsageError{std::string("--jobs must be 1..64, not \"") + j + "\""};
    o.jobs = static_cast<int>(v);
  }
  std::vector<const char*> extra;
  if (auto it = a.many.find("pg-restore-arg"); it != a.many.end()) {
    for (auto& s : it->second) extra.push_back(s.c_str());
    o.pg_restore_args = extra.data();
    o.pg_restore_args_count = extra.size();
  }
  o.progress = on_progress;
  mevb_repo* repo = open_repo(a);
  if (mevb_repo_restore_postgres(repo, backup.c_str(), &o) != MEVB_OK) fail();
  std::printf("restored %s\n", backup.c_str());
  mevb_repo_free(repo);
  return 0;
}

}  // namespace cli
