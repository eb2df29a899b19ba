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
  bool dry = false, quiet = false;
  int conflicts = 0;
  nlohmann::json* entries = nullptr;  // with --json: collected instead of printed
};

void on_entry(const char* name, const char* action, void* user) {
  auto* r = static_cast<EntryReport*>(user);
  if (std::strcmp(action, "conflict") == 0) r->conflicts++;
  if (!r->dry && (r->quiet || std::strcmp(action, "unchanged") == 0)) return;
  if (r->entries) r->entries->push_back({{"action", action}, {"name", name}});
  else std::printf("%-9s %s\n", action, name);
}

}  // namespace

Action setup_backup_files(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::string base, prefix, compress;
    std::vector<std::string> excludes, paths;
    int level = -1;
    bool include_secrets = false, ignore_missing = false;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  app->add_option("--base", o->base, "directory the PATHs are relative to (default: the current one)")
      ->type_name("DIR");
  app->add_option("-e,--exclude", o->excludes, "leave out what matches (repeatable)")
      ->allow_extra_args(false)->type_name("GLOB");
  app->add_flag("--include-secrets", o->include_secrets, "back up .env, *.pem, *.key, id_rsa*, secrets/, ... too");
  app->add_flag("--ignore-missing", o->ignore_missing, "skip PATHs that do not exist");
  app->add_option("--prefix", o->prefix, "name prefix of the backup (default config)")->type_name("NAME");
  app->add_option("--compress", o->compress, "compression (default gzip)")->type_name("gzip|zstd|none");
  add_level_option(app, o->level);
  add_output_options(app, o->out);
  app->add_option("paths", o->paths, "files, directories or globs to back up")->type_name("PATH");
  return [o] {
    apply_output(o->out);
    if (o->paths.empty()) throw UsageError{"backup files needs at least one PATH"};
    auto c = [](const std::string& v) { return v.empty() ? nullptr : v.c_str(); };
    mevb_files_backup_opts fo = MEVB_FILES_BACKUP_OPTS_INIT;
    fo.base_dir = c(o->base);
    fo.name_prefix = c(o->prefix);
    fo.compression = c(o->compress);
    fo.level = o->level;
    auto cpaths = c_strings(o->paths);
    fo.paths = cpaths.data();
    fo.paths_count = cpaths.size();
    auto excludes = c_strings(o->excludes);
    fo.excludes = excludes.data();
    fo.excludes_count = excludes.size();
    fo.include_secrets = o->include_secrets ? 1 : 0;
    fo.ignore_missing = o->ignore_missing ? 1 : 0;
    fo.progress = on_progress;
    mevb_repo* repo = open_repo(o->repo);
    mevb_backup* b = nullptr;
    if (mevb_repo_backup_files(repo, &fo, &b) != MEVB_OK) fail();
    return report_backup(repo, b, o->out);
  };
}

Action setup_restore_files(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::string backup = "latest", target, source;
    std::vector<std::string> only;
    bool dry_run = false, overwrite = false, keep_special_modes = false;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  app->add_option("-t,--target", o->target, "directory to restore into")->required()->type_name("DIR");
  app->add_option("-b,--backup", o->backup, "backup id, or latest (default)")->type_name("ID|latest");
  app->add_option("--only", o->only, "restore only what matches (repeatable)")
      ->allow_extra_args(false)->type_name("GLOB");
  app->add_flag("-n,--dry-run", o->dry_run, "say what a restore would do, change nothing");
  app->add_flag("--overwrite", o->overwrite, "replace existing files that differ");
  app->add_flag("--keep-special-modes", o->keep_special_modes,
                "keep setuid/setgid and world-writable bits as archived (dropped by default)");
  app->add_option("--source", o->source, "with latest: the latest backup of this prefix")->type_name("NAME");
  add_output_options(app, o->out);
  return [o] {
    apply_output(o->out);
    mevb_files_restore_opts fo = MEVB_FILES_RESTORE_OPTS_INIT;
    fo.target = o->target.c_str();
    auto only = c_strings(o->only);
    fo.only = only.data();
    fo.only_count = only.size();
    fo.dry_run = o->dry_run ? 1 : 0;
    fo.overwrite = o->overwrite ? 1 : 0;
    fo.keep_special_modes = o->keep_special_modes ? 1 : 0;
    fo.source_name = o->source.empty() ? nullptr : o->source.c_str();
    nlohmann::json entries = nlohmann::json::array();
    EntryReport report;
    report.dry = o->dry_run;
    report.quiet = o->out.quiet;
    if (o->out.json) report.entries = &entries;
    fo.on_entry = on_entry;
    fo.on_entry_user = &report;
    fo.progress = on_progress;
    mevb_repo* repo = open_repo(o->repo);
    std::string id = resolve_backup(repo, o->backup, "files", fo.source_name);
    if (mevb_repo_restore_files(repo, id.c_str(), &fo) != MEVB_OK) fail();
    if (o->out.json) {
      nlohmann::json j = {{"target", o->target}, {"dry_run", o->dry_run}, {"entries", entries}};
      if (o->dry_run) j["conflicts"] = report.conflicts;
      report_restore(o->out, id, "files", "", j);
    } else if (!o->dry_run) {
      report_restore(o->out, id, "files", " into " + o->target);
    }
    if (o->dry_run && report.conflicts && !o->out.json)
      std::fprintf(stderr, "mevbackup: %d existing file(s) differ; a restore would refuse them without --overwrite\n",
                   report.conflicts);
    mevb_repo_free(repo);
    return kExitOk;
  };
}

}  // namespace cli
