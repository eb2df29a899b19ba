// Storage (put as an atomic sink, get as a source, list, stat, remove) and artifacts of
// any kind through the repository (Repository::publish and restore_stream).
#include "stream_internal.hpp"

using namespace mevb_capi;

struct mevb_storage {
  std::shared_ptr<Storage> storage;
  mevb_capi::Live<mevb_storage> live_;
};

struct mevb_object_list {
  std::vector<ObjectInfo> items;
  mevb_capi::Live<mevb_object_list> live_;
};

namespace {

Compression compression_of(int c) {
  switch (c) {
    case MEVB_COMPRESSION_NONE: return Compression::none;
    case MEVB_COMPRESSION_GZIP: return Compression::gzip;
    case MEVB_COMPRESSION_ZSTD: return Compression::zstd;
    default: throw invalid(fmt::format("mevb_artifact_opts.compression {} is not NONE, GZIP or ZSTD", c));
  }
}

// A kind given to mevb_repo_put_artifact: a user kind, or a built-in one by its own name.
void check_kind(const std::string& kind) {
  if (kind.empty()) throw invalid("mevb_artifact_opts.kind must be set");
  if (kind == "postgres" || kind == "redis" || kind == "files") return;
  if (kind == "basebackup")
    throw invalid("kind \"basebackup\" is a set of parts (mevb_repo_backup_basebackup), not one artifact");
  if (!is_user_kind(kind))
    throw invalid(fmt::format("kind \"{}\" is not valid: use [a-z][a-z0-9_-]* (at most 64), not a name the "
                              "repository layout uses (database, config, wal, locks)",
                              kind));
}

void check_extension(const std::string& ext) {
  if (ext.empty()) return;
  bool ok = ext[0] == '.' && ext.size() <= 32;
  for (char c : ext.substr(ext.empty() ? 0 : 1))
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
  if (!ok) throw invalid(fmt::format("mevb_artifact_opts.extension \"{}\" must be '.' then letters, digits, '.', '_' or '-'", ext));
}


// A run on a repository handle: the run's callbacks (mevb_run_opts), and the handle's
// stall timeout, log (unless the run has its own), lock timing and keys.
void setup_repo_run(RunSetup& run, mevb_repo* repo, const mevb_run_opts* run_opts, const char* stage) {
  repo->cancel.reset();
  setup_run(run, run_opts, &repo->cancel, stage);
  apply_repo_settings(run.ctx, repo);
  if (!run.ctx.log && repo->log) {
    auto log = repo->log;
    auto lu = repo->log_user;
    run.ctx.log = [log, lu](LogLevel lvl, const std::string& msg) { log(static_cast<int>(lvl), msg.c_str(), lu); };
  }
}

}  // namespace

extern "C" {

int mevb_storage_open(mevb_storage** out, const char* url, const mevb_repo_opts* opts) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(url, "url");
    mevb_repo_opts o = MEVB_REPO_OPTS_INIT;
    read_opts(opts, o, "mevb_repo_opts");
    auto s = std::make_unique<mevb_storage>();
    if (o.stall_timeout_seconds < 0) throw invalid("mevb_repo_opts.stall_timeout_seconds must not be negative");
    s->storage = open_storage(url, storage_options(o));
    *out = s.release();
  });
}

void mevb_storage_free(mevb_storage* storage) {
  if (live(storage)) delete storage;
}

int mevb_storage_put(mevb_storage* storage, const char* key, mevb_sink** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(storage, "storage");
    require(key, "key");
    auto s = std::make_unique<mevb_sink>();
    s->sink = storage->storage->put(key);
    s->keep = storage->storage;
    s->label = fmt::format("sink ({} in {})", key, storage->storage->describe());
    *out = s.release();
  });
}

int mevb_storage_get(mevb_storage* storage, const char* key, mevb_source** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(storage, "storage");
    require(key, "key");
    validate_key(key);
    if (!storage->storage->stat(key))
      throw Error(Code::not_found, fmt::format("no object {} in {}", key, storage->storage->describe()));
    auto s = std::make_unique<mevb_source>();
    s->src = storage->storage->get(key);
    s->keep = storage->storage;
    s->label = fmt::format("source ({} in {})", key, storage->storage->describe());
    *out = s.release();
  });
}

int mevb_storage_stat(mevb_storage* storage, const char* key, mevb_object_info* info) {
  return guard([&] {
    require(storage, "storage");
    require(key, "key");
    require(info, "info");
    if (info->struct_size < sizeof(uint32_t)) throw invalid("mevb_object_info.struct_size is too small");
    validate_key(key);
    auto st = storage->storage->stat(key);
    if (!st) throw Error(Code::not_found, fmt::format("no object {} in {}", key, storage->storage->describe()));
    mevb_object_info r{sizeof(mevb_object_info), st->size, st->mtime};
    size_t n = std::min<size_t>(info->struct_size, sizeof r);
    std::memcpy(reinterpret_cast<unsigned char*>(info) + sizeof(uint32_t),
                reinterpret_cast<unsigned char*>(&r) + sizeof(uint32_t), n - sizeof(uint32_t));
  });
}

int mevb_storage_remove(mevb_storage* storage, const char* key) {
  return guard([&] {
    require(storage, "storage");
    require(key, "key");
    storage->storage->remove(key);
  });
}

int mevb_storage_list(mevb_storage* storage, const char* prefix, mevb_object_list** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(storage, "storage");
    auto l = std::make_unique<mevb_object_list>();
    l->items = storage->storage->list(str_or(prefix));
    *out = l.release();
  });
}

size_t mevb_object_list_count(const mevb_object_list* list) { return live(list) ? list->items.size() : 0; }
const char* mevb_object_list_key(const mevb_object_list* list, size_t index) {
  return live(list) && index < list->items.size() ? list->items[index].key.c_str() : nullptr;
}
uint64_t mevb_object_list_size(const mevb_object_list* list, size_t index) {
  return live(list) && index < list->items.size() ? list->items[index].size : 0;
}
int64_t mevb_object_list_mtime(const mevb_object_list* list, size_t index) {
  return live(list) && index < list->items.size() ? list->items[index].mtime : 0;
}
void mevb_object_list_free(mevb_object_list* list) {
  if (live(list)) delete list;
}

int mevb_artifact_opts_init(mevb_artifact_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_artifact_opts MEVB_ARTIFACT_OPTS_INIT);
}

int mevb_repo_put_artifact(mevb_repo* repo, mevb_source* source, const mevb_artifact_opts* opts,
                           const mevb_run_opts* run_opts, mevb_backup** out) {
  return guard([&] {
    if (out) *out = nullptr;
    require(repo, "repo");
    require(source, "source");
    require(opts, "opts");
    mevb_artifact_opts o = MEVB_ARTIFACT_OPTS_INIT;
    read_opts(opts, o, "mevb_artifact_opts");
    ArtifactSpec spec;
    spec.kind = str_or(o.kind);
    check_kind(spec.kind);
    spec.dir = kind_directory(spec.kind);
    spec.name_prefix = str_or(o.name_prefix);
    if (spec.name_prefix.empty()) throw invalid("mevb_artifact_opts.name_prefix must be set");
    spec.compression = compression_of(o.compression);
    spec.level = o.level;
    spec.format = str_or(o.format, "raw");
    if (spec.format.empty()) spec.format = "raw";
    spec.extension = str_or(o.extension);
    check_extension(spec.extension);
    if (source->consumed) throw invalid(source->label + " was already used by a run; create a new one");
    RunSetup run;
    setup_repo_run(run, repo, run_opts, "backup");
    take(source);
    LabelledSource src(*source->src, source->label);
    Manifest m;
    try {
      m = repo->repo.publish(src, spec, run.ctx, {});
    } catch (...) {
      fail_run(run);
    }
    if (out) *out = new_backup(std::move(m));
  });
}

int mevb_repo_get_artifact(mevb_repo* repo, const mevb_backup* backup, mevb_sink* sink, const mevb_run_opts* run_opts) {
  return guard([&] {
    require(repo, "repo");
    require(backup, "backup");
    require(sink, "sink");
    if (sink->consumed) throw invalid(sink->label + " was already used by a run; create a new one");
    RunSetup run;
    setup_repo_run(run, repo, run_opts, "restore");
    Manifest m = repo->repo.load(backup->manifest);
    take(sink);
    LabelledSink snk(*sink->sink, sink->label);
    try {
      repo->repo.restore_stream(m, snk, run.ctx);
    } catch (...) {
      snk.abort();
      fail_run(run);
    }
  });
}

}  // extern "C"
