// C API: point-in-time recovery (WAL archive primitives).
#include "internal.hpp"
#include "mevbackup/pitr.hpp"

using namespace mevb_capi;

extern "C" {

int mevb_wal_push(mevb_repo* repo, const char* path, int* already_archived) {
  return guard([&] {
    if (already_archived) *already_archived = 0;
    require(repo, "repo");
    require(path, "path");
    RunContext ctx = make_context(repo, nullptr, nullptr);
    auto r = pitr::wal_push(repo->repo.storage(), path, ctx);
    if (already_archived) *already_archived = r == pitr::PushResult::already_archived ? 1 : 0;
  });
}

int mevb_wal_fetch(mevb_repo* repo, const char* name, const char* dest) {
  return guard([&] {
    require(repo, "repo");
    require(name, "name");
    require(dest, "dest");
    RunContext ctx = make_context(repo, nullptr, nullptr);
    if (!pitr::wal_fetch(repo->repo.storage(), name, dest, ctx))
      throw Error(Code::not_found,
                  std::string("WAL file ") + name + " is not in the archive " + repo->repo.storage().describe());
  });
}

int mevb_basebackup_opts_init(mevb_basebackup_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_basebackup_opts MEVB_BASEBACKUP_OPTS_INIT);
}

int mevb_repo_backup_basebackup(mevb_repo* repo, const mevb_basebackup_opts* opts, mevb_backup** out) {
  return guard([&] {
    if (out) *out = nullptr;
    require(repo, "repo");
    require(opts, "opts");
    mevb_basebackup_opts o = MEVB_BASEBACKUP_OPTS_INIT;
    read_opts(opts, o, "mevb_basebackup_opts");
    if (!o.conninfo) throw invalid("mevb_basebackup_opts.conninfo must be set");
    pitr::BaseBackupOptions bo;
    bo.conninfo = o.conninfo;
    if (o.name_prefix) bo.name_prefix = o.name_prefix;
    bo.compression = parse_compression(str_or(o.compression, "gzip"));
    bo.level = o.level;
    bo.fast_checkpoint = o.spread_checkpoint == 0;
    bo.max_rate_kbps = o.max_rate_kbps;
    bo.require_archiving = o.allow_no_archiving == 0;
    RunContext ctx = make_context(repo, o.progress, o.progress_user);
    Manifest m = pitr::backup_base(repo->repo, bo, ctx);
    if (out) *out = new_backup(std::move(m));
  });
}

int mevb_pitr_restore_opts_init(mevb_pitr_restore_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_pitr_restore_opts MEVB_PITR_RESTORE_OPTS_INIT);
}

int mevb_repo_restore_pitr(mevb_repo* repo, const mevb_pitr_restore_opts* opts, mevb_report** out) {
  return guard([&] {
    if (out) *out = nullptr;
    require(repo, "repo");
    require(opts, "opts");
    mevb_pitr_restore_opts o = MEVB_PITR_RESTORE_OPTS_INIT;
    read_opts(opts, o, "mevb_pitr_restore_opts");
    if (!o.data_dir) throw invalid("mevb_pitr_restore_opts.data_dir must be set");
    pitr::PitrRestoreOptions ro;
    ro.data_dir = o.data_dir;
    ro.target_time = str_or(o.target_time);
    ro.target_lsn = str_or(o.target_lsn);
    ro.target_name = str_or(o.target_name);
    ro.backup_id = str_or(o.backup_id);
    ro.repo_url = str_or(o.repo_url);
    if (o.mevbackup_path) ro.mevbackup_path = o.mevbackup_path;
    ro.restore_command = str_or(o.restore_command);
    ro.owner = str_or(o.owner);
    for (auto& kv : args_or(o.settings, o.settings_count, {})) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) throw invalid("setting \"" + kv + "\" is not name=value");
      ro.settings.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    }
    for (auto& kv : args_or(o.tablespace_map, o.tablespace_map_count, {})) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) throw invalid("tablespace mapping \"" + kv + "\" is not OID=DIR");
      ro.tablespace_map[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    ro.wal_fetch_args = args_or(o.wal_fetch_args, o.wal_fetch_args_count, {});
    ro.start = o.start != 0;
    if (o.timeout_seconds < 0) throw invalid("mevb_pitr_restore_opts.timeout_seconds must not be negative");
    if (o.timeout_seconds) ro.timeout_seconds = o.timeout_seconds;
    ro.log_file = str_or(o.log_file);
    RunContext ctx = make_context(repo, o.progress, o.progress_user);
    pitr::PitrRestoreResult r = pitr::restore_pitr(repo->repo, ro, ctx);
    if (out) {
      auto* rep = new mevb_report;
      rep->json = r.to_json().dump(2) + "\n";
      rep->text = r.summary;
      rep->status = r.started ? 1 : 0;
      *out = rep;
    }
  });
}

}  // extern "C"
