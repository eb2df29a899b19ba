// C API: Redis backup and restore.
#include "internal.hpp"

using namespace mevb_capi;

extern "C" {

int mevb_redis_backup_opts_init(mevb_redis_backup_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_redis_backup_opts MEVB_REDIS_BACKUP_OPTS_INIT);
}

int mevb_repo_backup_redis(mevb_repo* repo, const mevb_redis_backup_opts* opts, mevb_backup** out) {
  return guard([&] {
    if (out) *out = nullptr;
    require(repo, "repo");
    require(opts, "opts");
    mevb_redis_backup_opts o = MEVB_REDIS_BACKUP_OPTS_INIT;
    read_opts(opts, o, "mevb_redis_backup_opts");
    if (!o.url) throw invalid("mevb_redis_backup_opts.url must be set");
    RedisBackupOptions bo;
    bo.url = o.url;
    bo.password = str_or(o.password);
    bo.default_password = str_or(o.default_password);
    bo.mode = parse_redis_mode(str_or(o.mode));
    if (o.name_prefix) bo.name_prefix = o.name_prefix;
    bo.compression = parse_compression(str_or(o.compression, "gzip"));
    bo.level = o.level;
    if (o.timeout_seconds < 0) throw invalid("mevb_redis_backup_opts.timeout_seconds must not be negative");
    if (o.timeout_seconds) bo.save_timeout_s = o.timeout_seconds;
    bo.allow_modules = o.allow_modules != 0;
    RunContext ctx = make_context(repo, o.progress, o.progress_user);
    Manifest m = backup_redis(repo->repo, bo, ctx);
    if (out) *out = new_backup(std::move(m));
  });
}

int mevb_redis_restore_opts_init(mevb_redis_restore_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_redis_restore_opts MEVB_REDIS_RESTORE_OPTS_INIT);
}

int mevb_repo_restore_redis(mevb_repo* repo, const char* id_or_latest, const mevb_redis_restore_opts* opts) {
  return guard([&] {
    require(repo, "repo");
    require(id_or_latest, "id_or_latest");
    require(opts, "opts");
    mevb_redis_restore_opts o = MEVB_REDIS_RESTORE_OPTS_INIT;
    read_opts(opts, o, "mevb_redis_restore_opts");
    if (o.redis_url && o.data_dir) throw invalid("give either data_dir or redis_url, not both");
    if (!o.data_dir && !o.redis_url) throw invalid("mevb_redis_restore_opts: set data_dir or redis_url");
    RedisRestoreOptions ro;
    ro.data_dir = str_or(o.data_dir);
    ro.redis_url = str_or(o.redis_url);
    ro.password = str_or(o.password);
    ro.default_password = str_or(o.default_password);
    ro.replace = o.replace != 0;
    ro.flush = o.flush != 0;
    if (o.rdb_name) ro.rdb_name = o.rdb_name;
    ro.before = args_or(o.before, o.before_count, {});
    ro.after = args_or(o.after, o.after_count, {});
    if (o.target_rdb_version < 0) throw invalid("mevb_redis_restore_opts.target_rdb_version must not be negative");
    ro.target_rdb_version = o.target_rdb_version;
    RunContext ctx = make_context(repo, o.progress, o.progress_user);
    Manifest m = repo->repo.find(id_or_latest, "redis", str_or(o.source_name), ctx.log);
    restore_redis(repo->repo, m, ro, ctx);
  });
}

}  // extern "C"
