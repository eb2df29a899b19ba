// C API: PostgreSQL backup and restore.
#include "internal.hpp"

using namespace mevb_capi;

extern "C" {

int mevb_pg_backup_opts_init(mevb_pg_backup_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_pg_backup_opts MEVB_PG_BACKUP_OPTS_INIT);
}

int mevb_repo_backup_postgres(mevb_repo* repo, const mevb_pg_backup_opts* opts, mevb_backup** out) {
  return guard([&] {
    if (out) *out = nullptr;
    require(repo, "repo");
    require(opts, "opts");
    mevb_pg_backup_opts o = MEVB_PG_BACKUP_OPTS_INIT;
    read_opts(opts, o, "mevb_pg_backup_opts");
    if (!o.conninfo) throw invalid("mevb_pg_backup_opts.conninfo must be set");
    PgBackupOptions po;
    po.conninfo = o.conninfo;
    po.pg_dump_path = str_or(o.pg_dump_path);
    po.pg_dump_args = args_or(o.pg_dump_args, o.pg_dump_args_count, po.pg_dump_args);
    po.name_prefix = str_or(o.name_prefix);
    po.compression = parse_compression(str_or(o.compression, "gzip"));
    po.level = o.level;
    if (o.exact_count_max_bytes) po.exact_count_max_bytes = o.exact_count_max_bytes;
    RunContext ctx = make_context(repo, o.progress, o.progress_user);
    Manifest m = backup_postgres(repo->repo, po, ctx);
    if (out) *out = new_backup(std::move(m));
  });
}

int mevb_pg_restore_opts_init(mevb_pg_restore_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_pg_restore_opts MEVB_PG_RESTORE_OPTS_INIT);
}

int mevb_repo_restore_postgres(mevb_repo* repo, const char* id_or_latest, const mevb_pg_restore_opts* opts) {
  return guard([&] {
    require(repo, "repo");
    require(id_or_latest, "id_or_latest");
    require(opts, "opts");
    mevb_pg_restore_opts o = MEVB_PG_RESTORE_OPTS_INIT;
    read_opts(opts, o, "mevb_pg_restore_opts");
    if (!o.conninfo) throw invalid("mevb_pg_restore_opts.conninfo must be set");
    PgRestoreOptions ro;
    ro.conninfo = o.conninfo;
    ro.clean = o.clean != 0;
    ro.pg_restore_path = str_or(o.pg_restore_path);
    ro.pg_restore_args = args_or(o.pg_restore_args, o.pg_restore_args_count, ro.pg_restore_args);
    if (o.jobs < 0 || o.jobs > 64) throw invalid("mevb_pg_restore_opts.jobs must be 0 (one per core) .. 64");
    ro.jobs = o.jobs;
    ro.stage = o.stage != 0;
    ro.staging_dir = str_or(o.staging_dir);
    ro.allow_property_loss = o.allow_property_loss != 0;
    RunContext ctx = make_context(repo, o.progress, o.progress_user);
    Manifest m = repo->repo.find(id_or_latest, "postgres", str_or(o.source_name), ctx.log);
    restore_postgres(repo->repo, m, ro, ctx);
  });
}

}  // extern "C"
