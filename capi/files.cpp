// C API: configuration files backup and restore.
#include "internal.hpp"

using namespace mevb_capi;

extern "C" {

int mevb_files_backup_opts_init(mevb_files_backup_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_files_backup_opts MEVB_FILES_BACKUP_OPTS_INIT);
}

int mevb_repo_backup_files(mevb_repo* repo, const mevb_files_backup_opts* opts, mevb_backup** out) {
  return guard([&] {
    if (out) *out = nullptr;
    require(repo, "repo");
    require(opts, "opts");
    mevb_files_backup_opts o = MEVB_FILES_BACKUP_OPTS_INIT;
    read_opts(opts, o, "mevb_files_backup_opts");
    if (!o.paths || o.paths_count == 0) throw invalid("mevb_files_backup_opts.paths must name at least one path");
    FilesBackupOptions fo;
    fo.base_dir = str_or(o.base_dir);
    fo.paths = args_or(o.paths, o.paths_count, {});
    fo.excludes = args_or(o.excludes, o.excludes_count, {});
    fo.include_secrets = o.include_secrets != 0;
    fo.ignore_missing = o.ignore_missing != 0;
    fo.name_prefix = str_or(o.name_prefix, "config");
    fo.compression = parse_compression(str_or(o.compression, "gzip"));
    fo.level = o.level;
    RunContext ctx = make_context(repo, o.progress, o.progress_user);
    Manifest m = backup_files(repo->repo, fo, ctx);
    if (out) *out = new_backup(std::move(m));
  });
}

int mevb_files_restore_opts_init(mevb_files_restore_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_files_restore_opts MEVB_FILES_RESTORE_OPTS_INIT);
}

int mevb_repo_restore_files(mevb_repo* repo, const char* id_or_latest, const mevb_files_restore_opts* opts) {
  return guard([&] {
    require(repo, "repo");
    require(id_or_latest, "id_or_latest");
    require(opts, "opts");
    mevb_files_restore_opts o = MEVB_FILES_RESTORE_OPTS_INIT;
    read_opts(opts, o, "mevb_files_restore_opts");
    if (!o.target || !*o.target) throw invalid("mevb_files_restore_opts.target must be set");
    FilesRestoreOptions fo;
    fo.target = o.target;
    fo.only = args_or(o.only, o.only_count, {});
    fo.dry_run = o.dry_run != 0;
    fo.overwrite = o.overwrite != 0;
    fo.keep_special_modes = o.keep_special_modes != 0;
    RunContext ctx = make_context(repo, o.progress, o.progress_user);
    Manifest m = repo->repo.find(id_or_latest, "files", str_or(o.source_name), ctx.log);
    auto actions = restore_files(repo->repo, m, fo, ctx);
    if (o.on_entry)
      for (auto& a : actions) o.on_entry(a.name.c_str(), a.action.c_str(), o.on_entry_user);
  });
}

}  // extern "C"
