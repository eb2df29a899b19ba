/*
 * libmevbackup: the C++ API, a header-only wrapper over the stable C API (mevbackup.h).
 *
 * Stability: this header is source-compatible within a minor version (while the major
 * version is 0: within the same 0.x); it only grows (new types, new members, new
 * overloads). It is binary-compatible with nothing, on purpose: every type and function
 * here is inline, so a program built against it depends only on the C ABI's mevb_*
 * symbols, which are the stable interface (docs/c-api.md).
 *
 * C++17 or later. Everything lives in namespace mevb. Handles are RAII and move-only; a
 * moved-from object holds nothing and is safe to destroy or assign to. `get()` gives the
 * C handle (still owned by the object), `release()` gives it away.
 *
 * Errors: every failing C call throws mevb::Error with mevb_error_last()'s code, message and
 * retriable flag. A callable the caller hands in (a callback source or sink, progress,
 * cancel) may throw: the exception is caught before it reaches the library's C frames, the
 * run fails, and the Error thrown by the call that ran it carries the exception's message.
 *
 * Threads: as in the C API, an object is used by one thread at a time; a run calls the
 * source's and sink's callables on threads of the run.
 */
#ifndef MEVBACKUP_HPP
#define MEVBACKUP_HPP

#include "mevbackup.h"

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mevb {

// ---- errors -------------------------------------------------------------------------

class Error : public std::runtime_error {
 public:
  Error(int code, const std::string& message, bool retriable = false)
      : std::runtime_error(message), code_(code), retriable_(retriable) {}
  // A mevb_status (MEVB_ERR_EXISTS, ...).
  int code() const noexcept { return code_; }
  bool retriable() const noexcept { return retriable_; }

 private:
  int code_;
  bool retriable_;
};

namespace detail {

// Throws the calling thread's last error when rc is not MEVB_OK. `extra` (a caller's
// callable's exception message), when not empty, is appended to the library's message.
inline void check(int rc, const std::string& extra = std::string()) {
  if (rc == MEVB_OK) return;
  const mevb_error* e = mevb_error_last();
  std::string message = e->message ? e->message : "";
  if (message.empty()) message = mevb_status_str(rc);
  if (!extra.empty()) message += ": " + extra;
  throw Error(e->code != MEVB_OK ? e->code : rc, message, e->retriable != 0);
}

template <class T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const noexcept { Free(p); }
};
template <class T, void (*Free)(T*)>
using Handle = std::unique_ptr<T, Deleter<T, Free>>;

// What a caller's callable threw, kept until the call that ran it reports it.
struct Failure {
  std::string message;
  void record() noexcept {
    try {
      throw;
    } catch (const std::exception& e) {
      set(e.what());
    } catch (...) {
      set("a callback threw an exception that is not a std::exception");
    }
  }
  void set(const char* what) noexcept {
    try {
      if (message.empty()) message = what;
    } catch (...) {  // no memory for the message: the status still fails the run
    }
  }
};

// The status a callback returns for the exception being handled.
inline int status_of_current_exception() noexcept {
  try {
    throw;
  } catch (const Error& e) {
    return e.code() != MEVB_OK ? e.code() : MEVB_ERR_IO;
  } catch (const std::bad_alloc&) {
    return MEVB_ERR_NOMEM;
  } catch (...) {
    return MEVB_ERR_IO;
  }
}

struct ReadState {
  std::function<std::size_t(void*, std::size_t)> read;
  Failure failure;

  static int on_read(void* user, void* buf, std::size_t cap, std::size_t* got) noexcept {
    auto* s = static_cast<ReadState*>(user);
    *got = 0;
    try {
      *got = s->read(buf, cap);
      return MEVB_OK;
    } catch (...) {
      s->failure.record();
      return status_of_current_exception();
    }
  }
  static void on_close(void* user) noexcept { delete static_cast<ReadState*>(user); }
};

struct WriteState {
  std::function<void(const void*, std::size_t)> write;
  std::function<void()> commit;
  std::function<void()> abort;
  Failure failure;

  static int on_write(void* user, const void* data, std::size_t size) noexcept {
    auto* s = static_cast<WriteState*>(user);
    try {
      if (s->write) s->write(data, size);
      return MEVB_OK;
    } catch (...) {
      s->failure.record();
      return status_of_current_exception();
    }
  }
  static int on_commit(void* user) noexcept {
    auto* s = static_cast<WriteState*>(user);
    try {
      if (s->commit) s->commit();
      return MEVB_OK;
    } catch (...) {
      s->failure.record();
      return status_of_current_exception();
    }
  }
  static void on_abort(void* user) noexcept {
    auto* s = static_cast<WriteState*>(user);
    try {
      if (s->abort) s->abort();
    } catch (...) {  // abort cannot fail; what it threw is dropped
    }
  }
};

}  // namespace detail

// ---- sources, filters, sinks ----------------------------------------------------------

class Source {
 public:
  Source() noexcept = default;
  // Takes ownership of a C source.
  explicit Source(mevb_source* handle) noexcept : handle_(handle) {}

  // Reads `fd` until end of file; close: the fd is closed when the source is freed.
  static Source from_fd(int fd, bool close) {
    mevb_source* s = nullptr;
    detail::check(mevb_source_new_fd(&s, fd, close ? 1 : 0));
    return Source(s);
  }
  // Reads a file (opened now: Error MEVB_ERR_NOT_FOUND when it does not exist).
  static Source from_path(const std::string& path) {
    mevb_source* s = nullptr;
    detail::check(mevb_source_new_path(&s, path.c_str()));
    return Source(s);
  }
  // The Dumpers: a service's backup stream. The options are the C structs, started from
  // their *_INIT macros (MEVB_PG_SOURCE_OPTS_INIT, ...); see mevbackup.h for each field.
  static Source pg_dump(const mevb_pg_source_opts& o) { return made(mevb_source_new_pg_dump, o); }
  static Source basebackup(const mevb_basebackup_source_opts& o) { return made(mevb_source_new_basebackup, o); }
  static Source redis_rdb(const mevb_redis_source_opts& o) { return made(mevb_source_new_redis_rdb, o); }
  static Source files_tar(const mevb_files_source_opts& o) { return made(mevb_source_new_files_tar, o); }
  // `read(buf, cap)` fills up to cap bytes of buf and returns how many; 0 ends the stream.
  // What it throws fails the run, with its message. Called on a thread of the run.
  template <class F>
  static Source from_callback(F read) {
    auto state = std::make_unique<detail::ReadState>();
    state->read = std::move(read);
    // From here the state belongs to the C source, whose close callback frees it (were the
    // call to fail without calling close, the state leaks rather than being freed twice).
    detail::ReadState* raw = state.release();
    mevb_source* s = nullptr;
    detail::check(mevb_source_new_callbacks(&s, &detail::ReadState::on_read, &detail::ReadState::on_close, raw));
    Source out(s);
    out.state_ = raw;
    return out;
  }

  Source(Source&& o) noexcept : handle_(std::move(o.handle_)), state_(std::exchange(o.state_, nullptr)) {}
  Source& operator=(Source&& o) noexcept {
    Source tmp(std::move(o));
    std::swap(handle_, tmp.handle_);
    std::swap(state_, tmp.state_);
    return *this;
  }

  mevb_source* get() const noexcept { return handle_.get(); }
  mevb_source* release() noexcept {
    state_ = nullptr;
    return handle_.release();
  }
  explicit operator bool() const noexcept { return static_cast<bool>(handle_); }
  // What the callable threw in the last run ("" if nothing).
  std::string callback_error() const { return state_ ? state_->failure.message : std::string(); }

 private:
  template <class O>
  static Source made(int (*make)(mevb_source**, const O*), const O& o) {
    mevb_source* s = nullptr;
    detail::check(make(&s, &o));
    return Source(s);
  }

  detail::Handle<mevb_source, mevb_source_free> handle_;
  detail::ReadState* state_ = nullptr;  // owned by the C source
};

class Sink {
 public:
  Sink() noexcept = default;
  // Takes ownership of a C sink.
  explicit Sink(mevb_sink* handle) noexcept : handle_(handle) {}

  // A file that appears under `path` only on commit; an existing file is kept (the commit
  // fails with MEVB_ERR_EXISTS) unless `replace`.
  static Sink to_path(const std::string& path, bool replace) {
    mevb_sink* s = nullptr;
    detail::check(mevb_sink_new_path(&s, path.c_str(), replace ? 1 : 0));
    return Sink(s);
  }
  // The Restorers: each commits the whole restore on commit (a pg_restore into a staging
  // database swapped in, an RDB renamed into place, a tree moved into its target) and
  // leaves the target as it was on abort. Options as for the sources.
  static Sink pg_restore(const mevb_pg_sink_opts& o) { return made(mevb_sink_new_pg_restore, o); }
  static Sink redis_live(const mevb_redis_live_sink_opts& o) { return made(mevb_sink_new_redis_live, o); }
  static Sink redis_offline(const mevb_redis_offline_sink_opts& o) { return made(mevb_sink_new_redis_offline, o); }
  static Sink extract(const mevb_extract_sink_opts& o) { return made(mevb_sink_new_extract, o); }
  // write(data, size) gets every byte in order; commit() once after the last byte when
  // everything succeeded; abort() when the run failed or the sink is destroyed uncommitted.
  // commit and abort may be empty. What write or commit throws fails the run, with its
  // message; what abort throws is dropped.
  static Sink from_callbacks(std::function<void(const void*, std::size_t)> write, std::function<void()> commit = {},
                             std::function<void()> abort = {}) {
    auto state = std::make_unique<detail::WriteState>();
    state->write = std::move(write);
    state->commit = std::move(commit);
    state->abort = std::move(abort);
    mevb_sink* s = nullptr;
    detail::check(mevb_sink_new_callbacks(&s, &detail::WriteState::on_write, &detail::WriteState::on_commit,
                                          &detail::WriteState::on_abort, state.get()));
    Sink out;
    out.state_ = std::move(state);
    out.handle_.reset(s);
    return out;
  }

  Sink(Sink&& o) noexcept = default;
  Sink& operator=(Sink&& o) noexcept {
    Sink tmp(std::move(o));
    std::swap(state_, tmp.state_);
    std::swap(handle_, tmp.handle_);
    return *this;  // tmp frees the old handle before the old callables
  }
  ~Sink() { handle_.reset(); }  // the C sink may call abort: the callables outlive it

  mevb_sink* get() const noexcept { return handle_.get(); }
  // Gives the C sink away. A callback sink cannot be given away: the C sink has no hook
  // that would free its callables (Error MEVB_ERR_INVALID_ARGUMENT).
  mevb_sink* release() {
    if (state_) throw Error(MEVB_ERR_INVALID_ARGUMENT, "a callback sink cannot release its handle: it owns the callables");
    return handle_.release();
  }
  explicit operator bool() const noexcept { return static_cast<bool>(handle_); }
  // What write or commit threw in the last run ("" if nothing).
  std::string callback_error() const { return state_ ? state_->failure.message : std::string(); }

 private:
  template <class O>
  static Sink made(int (*make)(mevb_sink**, const O*), const O& o) {
    mevb_sink* s = nullptr;
    detail::check(make(&s, &o));
    return Sink(s);
  }

  std::unique_ptr<detail::WriteState> state_;  // declared first: destroyed after handle_
  detail::Handle<mevb_sink, mevb_sink_free> handle_;
};

enum class Compression { none = MEVB_COMPRESSION_NONE, gzip = MEVB_COMPRESSION_GZIP, zstd = MEVB_COMPRESSION_ZSTD };

class Filter {
 public:
  Filter() noexcept = default;
  // Takes ownership of a C filter.
  explicit Filter(mevb_filter* handle) noexcept : handle_(handle) {}

  // level -1: the codec's default. Compression::none passes bytes through.
  static Filter compressor(Compression c, int level = -1) {
    mevb_filter* f = nullptr;
    detail::check(mevb_filter_new_compressor(&f, static_cast<int>(c), level));
    return Filter(f);
  }
  // Checks the codec's magic and checksums: a run fails with MEVB_ERR_CORRUPT naming this stage.
  static Filter decompressor(Compression c) {
    mevb_filter* f = nullptr;
    detail::check(mevb_filter_new_decompressor(&f, static_cast<int>(c)));
    return Filter(f);
  }
  // Passes bytes unchanged; bytes() and sha256() read what passed, after the run.
  static Filter observer() {
    mevb_filter* f = nullptr;
    detail::check(mevb_filter_new_observer(&f));
    return Filter(f);
  }
  // Encrypts to the age recipients ("age1..."): the output is an age file that `age -d`
  // decrypts. A bad recipient string fails naming its position.
  static Filter age_encrypt(const std::vector<std::string>& recipients) {
    std::vector<const char*> r;
    for (auto& x : recipients) r.push_back(x.c_str());
    mevb_filter* f = nullptr;
    detail::check(mevb_filter_new_age_encrypt(&f, r.data(), r.size()));
    return Filter(f);
  }
  // Decrypts an age file with the identities of an identity file's text (age-keygen's format).
  static Filter age_decrypt(const std::string& identities_text) {
    mevb_filter* f = nullptr;
    detail::check(mevb_filter_new_age_decrypt(&f, identities_text.c_str()));
    return Filter(f);
  }
  // The same with the identities read from a file that only its owner may read.
  static Filter age_decrypt_file(const std::string& path) {
    mevb_filter* f = nullptr;
    detail::check(mevb_filter_new_age_decrypt_file(&f, path.c_str()));
    return Filter(f);
  }

  Filter(Filter&&) noexcept = default;
  Filter& operator=(Filter&&) noexcept = default;

  // An observer's byte count (0 for other filters).
  std::uint64_t bytes() const noexcept { return mevb_filter_observed_bytes(handle_.get()); }
  // An observer's lowercase hex SHA-256 ("" until a run that took it succeeded, and for other filters).
  std::string sha256() const {
    const char* h = mevb_filter_observed_sha256(handle_.get());
    return h ? h : "";
  }

  mevb_filter* get() const noexcept { return handle_.get(); }
  mevb_filter* release() noexcept { return handle_.release(); }
  explicit operator bool() const noexcept { return static_cast<bool>(handle_); }

 private:
  detail::Handle<mevb_filter, mevb_filter_free> handle_;
};

// ---- a run ------------------------------------------------------------------------------

struct Progress {
  std::string stage;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  double elapsed_seconds = 0;
  bool done = false;
};

struct RunOptions {
  // About every 200 ms and at the end; return false to cancel the run (MEVB_ERR_CANCELLED).
  std::function<bool(const Progress&)> progress;
  // Asked now and then; return true to cancel the run (MEVB_ERR_CANCELLED).
  std::function<bool()> cancel;
  // Names the run in progress reports and errors; "" : "pipeline".
  std::string stage;
  // Bytes per buffer between stages; 0: the library's default (256 KiB).
  std::size_t chunk_size = 0;
};

namespace detail {

// A RunOptions as mevb_run_opts, with the trampolines' state; lives for one call.
struct RunState {
  const RunOptions& options;
  mevb_run_opts c;
  Failure failure;

  explicit RunState(const RunOptions& o) : options(o), c() {
    detail::check(mevb_run_opts_init(&c, sizeof c));
    if (o.progress) {
      c.progress = &RunState::on_progress;
      c.progress_user = this;
    }
    if (o.cancel) {
      c.cancel = &RunState::on_cancel;
      c.cancel_user = this;
    }
    if (!o.stage.empty()) c.stage = o.stage.c_str();
    c.chunk_size = o.chunk_size;
  }
  RunState(const RunState&) = delete;
  RunState& operator=(const RunState&) = delete;

  static int on_progress(const mevb_progress* p, void* user) noexcept {
    auto* s = static_cast<RunState*>(user);
    try {
      Progress pr;
      pr.stage = p->stage ? p->stage : "";
      pr.bytes_in = p->bytes_in;
      pr.bytes_out = p->bytes_out;
      pr.elapsed_seconds = p->elapsed_seconds;
      pr.done = p->done != 0;
      return s->options.progress(pr) ? 0 : 1;
    } catch (...) {
      s->failure.record();
      return 1;
    }
  }
  static int on_cancel(void* user) noexcept {
    auto* s = static_cast<RunState*>(user);
    try {
      return s->options.cancel() ? 1 : 0;
    } catch (...) {
      s->failure.record();
      return 1;
    }
  }
};

inline std::string first_of(const std::string& a, const std::string& b, const std::string& c) {
  return !a.empty() ? a : !b.empty() ? b : c;
}

}  // namespace detail

// Runs source -> filters... -> sink. The sink is committed only when every stage succeeded;
// otherwise it is aborted and Error names the failing stage ("filter 0 (zstd decompressor)").
// The source, filters and sink are consumed: they cannot take part in another run.
inline void run(Source& source, const std::vector<Filter*>& filters, Sink& sink, const RunOptions& options = {}) {
  std::vector<mevb_filter*> raw;
  raw.reserve(filters.size());
  for (Filter* f : filters) raw.push_back(f ? f->get() : nullptr);
  detail::RunState state(options);
  int rc = mevb_pipeline_run(source.get(), raw.empty() ? nullptr : raw.data(), raw.size(), sink.get(), &state.c);
  if (rc != MEVB_OK)
    detail::check(rc, detail::first_of(source.callback_error(), sink.callback_error(), state.failure.message));
}
inline void run(Source& source, std::initializer_list<Filter*> filters, Sink& sink, const RunOptions& options = {}) {
  run(source, std::vector<Filter*>(filters), sink, options);
}

// ---- options --------------------------------------------------------------------------

// The C options, initialised (MEVB_REPO_OPTS_INIT). Set its fields directly; the strings it
// points to need to live only until the open() that takes it returns (the library copies
// them). NULL or 0 leaves a setting to its default (for S3: the AWS_* environment).
struct RepoOptions {
  mevb_repo_opts c = MEVB_REPO_OPTS_INIT;
};

// ---- storage ----------------------------------------------------------------------------

struct ObjectInfo {
  std::string key;
  std::uint64_t size = 0;
  std::int64_t mtime = 0;  // seconds since the epoch: when it was stored
};

// Where artifacts live: a local directory (a path or file://path) or "s3://bucket[/prefix]".
// A storage may be destroyed before the sinks and sources it gave.
class Storage {
 public:
  Storage() noexcept = default;
  explicit Storage(mevb_storage* handle) noexcept : handle_(handle) {}

  static Storage open(const std::string& url, const RepoOptions& options = {}) {
    mevb_storage* s = nullptr;
    detail::check(mevb_storage_open(&s, url.c_str(), &options.c));
    return Storage(s);
  }

  Storage(Storage&&) noexcept = default;
  Storage& operator=(Storage&&) noexcept = default;

  // A sink publishing `key` atomically on commit; the run fails with MEVB_ERR_EXISTS when
  // the key exists, and the object stored before is left as it was.
  Sink put(const std::string& key) {
    mevb_sink* s = nullptr;
    detail::check(mevb_storage_put(handle_.get(), key.c_str(), &s));
    return Sink(s);
  }
  // A source reading `key` (MEVB_ERR_NOT_FOUND when missing).
  Source get(const std::string& key) {
    mevb_source* s = nullptr;
    detail::check(mevb_storage_get(handle_.get(), key.c_str(), &s));
    return Source(s);
  }
  // MEVB_ERR_NOT_FOUND when missing.
  ObjectInfo stat(const std::string& key) {
    mevb_object_info info = MEVB_OBJECT_INFO_INIT;
    detail::check(mevb_storage_stat(handle_.get(), key.c_str(), &info));
    ObjectInfo out;
    out.key = key;
    out.size = info.size;
    out.mtime = info.mtime;
    return out;
  }
  // Removing a missing key is not an error.
  void remove(const std::string& key) { detail::check(mevb_storage_remove(handle_.get(), key.c_str())); }
  // Every complete object whose key starts with `prefix` ("" : all), sorted by key.
  std::vector<ObjectInfo> list(const std::string& prefix = std::string()) {
    mevb_object_list* l = nullptr;
    detail::check(mevb_storage_list(handle_.get(), prefix.c_str(), &l));
    detail::Handle<mevb_object_list, mevb_object_list_free> owned(l);
    std::vector<ObjectInfo> out;
    std::size_t n = mevb_object_list_count(l);
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      ObjectInfo o;
      o.key = mevb_object_list_key(l, i);
      o.size = mevb_object_list_size(l, i);
      o.mtime = mevb_object_list_mtime(l, i);
      out.push_back(std::move(o));
    }
    return out;
  }

  mevb_storage* get() const noexcept { return handle_.get(); }
  mevb_storage* release() noexcept { return handle_.release(); }
  explicit operator bool() const noexcept { return static_cast<bool>(handle_); }

 private:
  detail::Handle<mevb_storage, mevb_storage_free> handle_;
};

// ---- repository: artifacts with manifests ---------------------------------------------

// A backup as its manifest describes it (copied out of the C handle).
struct BackupInfo {
  std::string id, kind, path, sha256, created_at, compression, source_name, manifest_json;
  std::uint64_t size = 0;  // stored bytes
};

struct ArtifactOptions {
  std::string kind;         // required: [a-z][a-z0-9_-]*, also the directory
  std::string name_prefix;  // required: ids are <name_prefix>_YYYYMMDD_HHMMSS
  Compression compression = Compression::gzip;
  int level = -1;           // the codec's default
  std::string format;       // recorded in the manifest; "" : "raw"
  std::string extension;    // before the compression suffix, e.g. ".json"
};

namespace detail {
inline std::string str(const char* s) { return s ? s : ""; }
inline BackupInfo info_of(const mevb_backup* b) {
  BackupInfo i;
  i.id = str(mevb_backup_id(b));
  i.kind = str(mevb_backup_kind(b));
  i.path = str(mevb_backup_path(b));
  i.sha256 = str(mevb_backup_sha256(b));
  i.created_at = str(mevb_backup_created_at(b));
  i.compression = str(mevb_backup_compression(b));
  i.source_name = str(mevb_backup_source_name(b));
  i.manifest_json = str(mevb_backup_manifest_json(b));
  i.size = mevb_backup_size(b);
  return i;
}
inline const char* c_or_null(const std::string& s) { return s.empty() ? nullptr : s.c_str(); }
}  // namespace detail

// A repository: a local directory or "s3://bucket/prefix", with manifests and a catalog.
class Repository {
 public:
  Repository() noexcept = default;
  explicit Repository(mevb_repo* handle) noexcept : handle_(handle) {}

  static Repository open(const std::string& location, const RepoOptions& options = {}) {
    mevb_repo* r = nullptr;
    detail::check(mevb_repo_open(&r, location.c_str(), &options.c));
    return Repository(r);
  }

  Repository(Repository&&) noexcept = default;
  Repository& operator=(Repository&&) noexcept = default;

  // Stores the bytes of `source` (consumed) as a new backup: compressed as options say,
  // hashed, published atomically, its manifest last.
  BackupInfo put_artifact(Source& source, const ArtifactOptions& options, const RunOptions& run = {}) {
    mevb_artifact_opts o = MEVB_ARTIFACT_OPTS_INIT;
    o.kind = options.kind.c_str();
    o.name_prefix = options.name_prefix.c_str();
    o.compression = static_cast<int>(options.compression);
    o.level = options.level;
    o.format = detail::c_or_null(options.format);
    o.extension = detail::c_or_null(options.extension);
    detail::RunState state(run);
    mevb_backup* b = nullptr;
    int rc = mevb_repo_put_artifact(handle_.get(), source.get(), &o, &state.c, &b);
    if (rc != MEVB_OK) detail::check(rc, detail::first_of(source.callback_error(), state.failure.message, ""));
    detail::Handle<mevb_backup, mevb_backup_free> owned(b);
    return detail::info_of(b);
  }

  // A backup by id or "latest" (of `kind`, and of `source_name` when not empty).
  BackupInfo find(const std::string& id_or_latest, const std::string& kind = std::string(),
                  const std::string& source_name = std::string()) {
    mevb_backup* b = nullptr;
    detail::check(mevb_repo_find(handle_.get(), id_or_latest.c_str(), detail::c_or_null(kind),
                                 detail::c_or_null(source_name), &b));
    detail::Handle<mevb_backup, mevb_backup_free> owned(b);
    return detail::info_of(b);
  }

  // Streams the payload (decompressed) of backup `id_or_latest` into `sink` (consumed);
  // the sink is committed only when the stored bytes match the manifest (MEVB_ERR_CORRUPT).
  void get_artifact(const std::string& id_or_latest, Sink& sink, const std::string& kind = std::string(),
                    const RunOptions& run = {}) {
    mevb_backup* b = nullptr;
    detail::check(mevb_repo_find(handle_.get(), id_or_latest.c_str(), detail::c_or_null(kind), nullptr, &b));
    detail::Handle<mevb_backup, mevb_backup_free> owned(b);
    detail::RunState state(run);
    int rc = mevb_repo_get_artifact(handle_.get(), b, sink.get(), &state.c);
    if (rc != MEVB_OK) detail::check(rc, detail::first_of(sink.callback_error(), state.failure.message, ""));
  }

  // Every backup (of `kind`; "" : all kinds), oldest first.
  std::vector<BackupInfo> list(const std::string& kind = std::string()) {
    mevb_backup_list* l = nullptr;
    detail::check(mevb_repo_list(handle_.get(), detail::c_or_null(kind), &l));
    detail::Handle<mevb_backup_list, mevb_backup_list_free> owned(l);
    std::vector<BackupInfo> out;
    std::size_t n = mevb_backup_list_count(l);
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) out.push_back(detail::info_of(mevb_backup_list_get(l, i)));
    return out;
  }

  // Asks the operation running on this repository to stop; safe from any thread.
  void cancel() noexcept { mevb_repo_cancel(handle_.get()); }

  mevb_repo* get() const noexcept { return handle_.get(); }
  mevb_repo* release() noexcept { return handle_.release(); }
  explicit operator bool() const noexcept { return static_cast<bool>(handle_); }

 private:
  detail::Handle<mevb_repo, mevb_repo_free> handle_;
};

// ---- retention: the policy as a pure function ------------------------------------------

// One backup (or, with `incomplete`, an object without a manifest). A time is RFC 3339 with
// a zone ("2026-11-27T04:27:23Z"), or, when the string is empty, the *_epoch seconds.
struct RetentionItem {
  std::string id;  // required
  std::string kind, source;
  std::string created;  // when the backup started
  std::int64_t created_epoch = 0;
  std::string finished;  // when it ended; empty and finished_epoch 0: unknown
  std::int64_t finished_epoch = 0;
  mevb_verified verified = MEVB_VERIFIED_NEVER;
  bool incomplete = false;
};

struct RetentionDecision {
  std::string id;
  bool keep = false;
  bool incomplete = false;
  std::string reason;  // why ("one of the last 3; daily 2026-11-27", "matches no keep rule", ...)
};

// The rules (keep_last, keep_days, keep_daily, ...): the C options, initialised with the
// library's defaults (MEVB_RETENTION_OPTS_INIT); set the fields directly.
class RetentionPolicy {
 public:
  mevb_retention_opts rules = MEVB_RETENTION_OPTS_INIT;

  // One decision per item, in the items' order, at time `now` (RFC 3339). Error
  // MEVB_ERR_INVALID_ARGUMENT names a bad rule, a bad time or an item without an id.
  std::vector<RetentionDecision> apply(const std::vector<RetentionItem>& items, const std::string& now) const {
    return apply_at(items, now.c_str(), 0);
  }
  // The same at `now_epoch` seconds since the epoch.
  std::vector<RetentionDecision> apply(const std::vector<RetentionItem>& items, std::int64_t now_epoch) const {
    return apply_at(items, nullptr, now_epoch);
  }

 private:
  std::vector<RetentionDecision> apply_at(const std::vector<RetentionItem>& items, const char* now,
                                          std::int64_t now_epoch) const {
    std::vector<mevb_retention_item> raw;
    raw.reserve(items.size());
    for (const RetentionItem& i : items) {
      mevb_retention_item r = MEVB_RETENTION_ITEM_INIT;
      r.id = i.id.c_str();
      r.kind = i.kind.c_str();
      r.source = i.source.c_str();
      r.created = detail::c_or_null(i.created);
      r.created_epoch = i.created_epoch;
      r.finished = detail::c_or_null(i.finished);
      r.finished_epoch = i.finished_epoch;
      r.verified = i.verified;
      r.incomplete = i.incomplete ? 1 : 0;
      raw.push_back(r);
    }
    mevb_retention_result* res = nullptr;
    detail::check(mevb_retention_apply(&rules, raw.empty() ? nullptr : raw.data(), raw.size(), now, now_epoch, &res));
    detail::Handle<mevb_retention_result, mevb_retention_result_free> owned(res);
    std::vector<RetentionDecision> out;
    std::size_t n = mevb_retention_result_count(res);
    out.reserve(n);
    for (std::size_t k = 0; k < n; ++k) {
      const mevb_retention_decision* d = mevb_retention_result_get(res, k);
      RetentionDecision r;
      r.id = detail::str(d->id);
      r.keep = d->keep != 0;
      r.incomplete = d->incomplete != 0;
      r.reason = detail::str(d->reason);
      out.push_back(std::move(r));
    }
    return out;
  }
};

// The library actually loaded ("0.1.0").
inline std::string version() { return mevb_version(); }

}  // namespace mevb

#endif  // MEVBACKUP_HPP
