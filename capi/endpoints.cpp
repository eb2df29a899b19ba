// C API: the services' own sources and sinks (pg_dump, pg_restore, ...) for pipelines.
#include <fmt/format.h>

#include "stream_internal.hpp"

#include "mevbackup/files.hpp"
#include "mevbackup/pitr.hpp"
#include "mevbackup/postgres.hpp"
#include "mevbackup/redis.hpp"

using namespace mevb_capi;

namespace {

// The stage's own context: the run's cancel and progress reach a sink only through the
// pipeline, so what the endpoint does outside it (its setup, its commit) logs nowhere.
RunContext endpoint_context() { return RunContext{}; }

}  // namespace

extern "C" {

int mevb_pg_source_opts_init(mevb_pg_source_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_pg_source_opts MEVB_PG_SOURCE_OPTS_INIT);
}

int mevb_source_new_pg_dump(mevb_source** out, const mevb_pg_source_opts* opts) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(opts, "opts");
    mevb_pg_source_opts o = MEVB_PG_SOURCE_OPTS_INIT;
    read_opts(opts, o, "mevb_pg_source_opts");
    if (!o.conninfo) throw invalid("mevb_pg_source_opts.conninfo must be set");
    PgDumpSourceOptions so;
    so.conninfo = o.conninfo;
    so.pg_dump_path = str_or(o.pg_dump_path);
    so.pg_dump_args = args_or(o.pg_dump_args, o.pg_dump_args_count, so.pg_dump_args);
    PgDumpInfo info;
    info.describe = false;
    auto s = std::make_unique<mevb_source>();
    s->src = pg_dump_source(so, endpoint_context(), &info);
    s->label = fmt::format("source (pg_dump {})", info.database);
    *out = s.release();
  });
}

int mevb_basebackup_source_opts_init(mevb_basebackup_source_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_basebackup_source_opts MEVB_BASEBACKUP_SOURCE_OPTS_INIT);
}

int mevb_source_new_basebackup(mevb_source** out, const mevb_basebackup_source_opts* opts) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(opts, "opts");
    mevb_basebackup_source_opts o = MEVB_BASEBACKUP_SOURCE_OPTS_INIT;
    read_opts(opts, o, "mevb_basebackup_source_opts");
    if (!o.conninfo) throw invalid("mevb_basebackup_source_opts.conninfo must be set");
    pitr::BaseBackupSourceOptions bo;
    bo.conninfo = o.conninfo;
    bo.fast_checkpoint = o.fast_checkpoint != 0;
    bo.max_rate_kbps = o.max_rate_kbps;
    bo.include_wal = o.include_wal != 0;
    auto info = std::make_shared<pitr::BaseBackupSourceInfo>();
    auto s = std::make_unique<mevb_source>();
    s->src = pitr::basebackup_source(bo, info.get());
    s->label = fmt::format("source (base backup of {})", info->server);
    s->keep = info;
    *out = s.release();
  });
}

int mevb_pg_sink_opts_init(mevb_pg_sink_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_pg_sink_opts MEVB_PG_SINK_OPTS_INIT);
}

int mevb_sink_new_pg_restore(mevb_sink** out, const mevb_pg_sink_opts* opts) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(opts, "opts");
    mevb_pg_sink_opts o = MEVB_PG_SINK_OPTS_INIT;
    read_opts(opts, o, "mevb_pg_sink_opts");
    if (!o.conninfo) throw invalid("mevb_pg_sink_opts.conninfo must be set");
    if (o.jobs < 1 || o.jobs > 64) throw invalid("mevb_pg_sink_opts.jobs must be 1..64");
    PgRestoreSinkOptions ro;
    ro.conninfo = o.conninfo;
    ro.dbname = str_or(o.dbname);
    ro.clean = o.clean != 0;
    ro.pg_restore_path = str_or(o.pg_restore_path);
    ro.pg_restore_args = args_or(o.pg_restore_args, o.pg_restore_args_count, ro.pg_restore_args);
    ro.jobs = o.jobs;
    ro.staging_dir = str_or(o.staging_dir);
    // No manifest: nothing records the source database's properties to insist on.
    ro.allow_property_loss = true;
    std::string target = ro.dbname.empty() ? pg_conninfo_dbname(ro.conninfo) : ro.dbname;
    auto s = std::make_unique<mevb_sink>();
    s->sink = pg_restore_sink(ro, endpoint_context());
    s->label = fmt::format("sink (pg_restore into {})", target);
    *out = s.release();
  });
}

int mevb_files_source_opts_init(mevb_files_source_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_files_source_opts MEVB_FILES_SOURCE_OPTS_INIT);
}

int mevb_source_new_files_tar(mevb_source** out, const mevb_files_source_opts* opts) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(opts, "opts");
    mevb_files_source_opts o = MEVB_FILES_SOURCE_OPTS_INIT;
    read_opts(opts, o, "mevb_files_source_opts");
    if (!o.paths || !o.paths_count) throw invalid("mevb_files_source_opts.paths must name at least one path");
    FilesTarSourceOptions fo;
    fo.base_dir = str_or(o.base_dir);
    fo.paths = args_or(o.paths, o.paths_count, {});
    fo.excludes = args_or(o.excludes, o.excludes_count, {});
    fo.include_secrets = o.include_secrets != 0;
    fo.ignore_missing = o.ignore_missing != 0;
    auto s = std::make_unique<mevb_source>();
    auto holder = std::make_shared<FilesTarInfo>();  // the source writes its member list there
    s->src = files_tar_source(fo, endpoint_context(), holder.get());
    s->label = fmt::format("source (tar of {})", holder->base_dir);
    s->keep = holder;
    *out = s.release();
  });
}

int mevb_extract_sink_opts_init(mevb_extract_sink_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_extract_sink_opts MEVB_EXTRACT_SINK_OPTS_INIT);
}

int mevb_sink_new_extract(mevb_sink** out, const mevb_extract_sink_opts* opts) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(opts, "opts");
    mevb_extract_sink_opts o = MEVB_EXTRACT_SINK_OPTS_INIT;
    read_opts(opts, o, "mevb_extract_sink_opts");
    if (!o.target || !*o.target) throw invalid("mevb_extract_sink_opts.target must be set");
    FilesExtractSinkOptions fo;
    fo.target = o.target;
    fo.only = args_or(o.only, o.only_count, {});
    fo.overwrite = o.overwrite != 0;
    fo.keep_special_modes = o.keep_special_modes != 0;
    auto s = std::make_unique<mevb_sink>();
    s->sink = files_extract_sink(fo, endpoint_context());
    s->label = fmt::format("sink (extract into {})", o.target);
    *out = s.release();
  });
}

int mevb_redis_source_opts_init(mevb_redis_source_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_redis_source_opts MEVB_REDIS_SOURCE_OPTS_INIT);
}

int mevb_source_new_redis_rdb(mevb_source** out, const mevb_redis_source_opts* opts) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(opts, "opts");
    mevb_redis_source_opts o = MEVB_REDIS_SOURCE_OPTS_INIT;
    read_opts(opts, o, "mevb_redis_source_opts");
    if (!o.url) throw invalid("mevb_redis_source_opts.url must be set");
    if (o.timeout_seconds < 0) throw invalid("mevb_redis_source_opts.timeout_seconds must not be negative");
    RedisRdbSourceOptions ro;
    ro.url = o.url;
    ro.password = str_or(o.password);
    ro.default_password = str_or(o.default_password);
    ro.mode = parse_redis_mode(str_or(o.mode));
    if (o.timeout_seconds) ro.save_timeout_s = o.timeout_seconds;
    RedisRdbInfo info;
    auto s = std::make_unique<mevb_source>();
    s->src = redis_rdb_source(ro, endpoint_context(), &info);
    // info.server is host:port only: the URL's credentials never reach the label.
    s->label = fmt::format("source (redis {} {})", redis_mode_name(info.mode), info.server);
    *out = s.release();
  });
}

int mevb_redis_offline_sink_opts_init(mevb_redis_offline_sink_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_redis_offline_sink_opts MEVB_REDIS_OFFLINE_SINK_OPTS_INIT);
}

int mevb_sink_new_redis_offline(mevb_sink** out, const mevb_redis_offline_sink_opts* opts) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(opts, "opts");
    mevb_redis_offline_sink_opts o = MEVB_REDIS_OFFLINE_SINK_OPTS_INIT;
    read_opts(opts, o, "mevb_redis_offline_sink_opts");
    if (!o.data_dir || !*o.data_dir) throw invalid("mevb_redis_offline_sink_opts.data_dir must be set");
    if (o.target_rdb_version < 0) throw invalid("mevb_redis_offline_sink_opts.target_rdb_version must not be negative");
    RedisOfflineSinkOptions ro;
    ro.data_dir = o.data_dir;
    if (o.rdb_name) ro.rdb_name = o.rdb_name;
    ro.before = args_or(o.before, o.before_count, {});
    ro.after = args_or(o.after, o.after_count, {});
    ro.target_rdb_version = o.target_rdb_version;
    auto s = std::make_unique<mevb_sink>();
    s->sink = redis_offline_sink(ro, endpoint_context());
    s->label = fmt::format("sink (redis RDB into {}/{})", ro.data_dir, ro.rdb_name);
    *out = s.release();
  });
}

int mevb_redis_live_sink_opts_init(mevb_redis_live_sink_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_redis_live_sink_opts MEVB_REDIS_LIVE_SINK_OPTS_INIT);
}

int mevb_sink_new_redis_live(mevb_sink** out, const mevb_redis_live_sink_opts* opts) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(opts, "opts");
    mevb_redis_live_sink_opts o = MEVB_REDIS_LIVE_SINK_OPTS_INIT;
    read_opts(opts, o, "mevb_redis_live_sink_opts");
    if (!o.url) throw invalid("mevb_redis_live_sink_opts.url must be set");
    RedisLiveSinkOptions ro;
    ro.redis_url = o.url;
    ro.password = str_or(o.password);
    ro.default_password = str_or(o.default_password);
    ro.replace = o.replace != 0;
    auto s = std::make_unique<mevb_sink>();
    s->sink = redis_live_sink(ro, endpoint_context());
    s->label = "sink (redis RESTORE)";
    *out = s.release();
  });
}

}  // extern "C"
