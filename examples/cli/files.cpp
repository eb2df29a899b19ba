// mevbackup backup files / restore files
#include "cli.hpp"

namespace cli {

namespace {

std::vector<const char*> c_strings(const std::vector<std::string>& v) {
  std::vector<const char*> out;
  for (auto& s : v) out.push_back(s.c_str());
  return out;
}

struct EntryReport {
  bool dry = false;
  int conflicts = 0;
};

void on_entry(const char* name, const char* action, void* user) {
  auto* r = static_cast<EntryReport*>(user);
  if (std::strcmp(action, "conflict") == 0) r->conflicts++;
  if (r->dry || std::strcmp(action, "unchanged") != 0) std::printf("%-9s %s\n", action, name);
}

}  // namespace

int cmd_backup_files(int argc, char** argv, int start) {
  std::vector<std::string> paths;
  Args a = parse(argc, argv, start, {"repo", "base", "prefix", "compress", "level"}, {"exclude"},
                 {"include-secrets", "ignore-missing", "json", "quiet", "verbose"}, &paths);
  common_flags(a);
  if (paths.empty()) throw UsageError{"backup files needs at least one PATH"};
  mevb_files_backup_opts o = MEVB_FILES_BACKUP_OPTS_INIT;
  o.base_dir = opt(a, "base");
  o.name_prefix = opt(a, "prefix");
  o.compression = opt(a, "compress");
  o.level = level_option(a);
  auto cpaths = c_strings(paths);
  o.paths = cpaths.data();
  o.paths_count = cpaths.size();
  std::vector<const char*> excludes;
  if (auto it = a.many.find("exclude"); it != a.many.end()) excludes = c_strings(it->second);
  o.excludes = excludes.data();
  o.excludes_count = excludes.size();
  o.include_secrets = a.flags.count("include-secrets") ? 1 : 0;
  o.ignore_missing = a.flags.count("ignore-missing") ? 1 : 0;
  o.progress = on_progress;
  mevb_repo* repo = open_repo(a);
  mevb_backup* b = nullptr;
  if (mevb_repo_backup_files(repo, &o, &b) != MEVB_OK) fail();
  return report_backup(repo, b, a.flags.count("json") > 0);
}

int cmd_restore_files(int argc, char** argv, int start) {
  Args a = parse(argc, argv, start, {"repo", "backup", "target", "source"}, {"only"},
                 {"dry-run", "overwrite", "keep-special-modes", "quiet", "verbose"});
  common_flags(a);
  std::string target = need(a, "target");
  std::string backup = a.one.count("backup") ? a.one["backup"] : "latest";
  bool dry = a.flags.count("dry-run") > 0;
  mevb_files_restore_opts o = MEVB_FILES_RESTORE_OPTS_INIT;
  o.target = target.c_str();
  std::vector<const char*> only;
  if (auto it = a.many.find("only"); it != a.many.end()) only = c_strings(it->second);
  o.only = only.data();
  o.only_count = only.size();
  o.dry_run = dry ? 1 : 0;
  o.overwrite = a.flags.count("overwrite") ? 1 : 0;
  o.keep_special_modes = a.flags.count("keep-special-modes") ? 1 : 0;
  o.source_name = opt(a, "source");
  EntryReport report;
  report.dry = dry;
  o.on_entry = on_entry;
  o.on_entry_user = &report;
  o.progress = on_progress;
  mevb_repo* repo = open_repo(a);
  if (mevb_repo_restore_files(repo, backup.c_str(), &o) != MEVB_OK) fail();
  if (!dry) std::printf("restored %s into %s\n", backup.c_str(), target.c_str());
  if (dry && report.conflicts)
    std::fprintf(stderr, "mevbackup: %d existing file(s) differ; a restore would refuse them without --overwrite\n",
                 report.conflicts);
  mevb_repo_free(repo);
  return 0;
}

}  // namespace cli
