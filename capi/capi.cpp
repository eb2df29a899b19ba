// The only extern "C" code: a thin shim over the C++ core. Every body runs inside
// guard(), so no exception crosses the boundary and failures set the thread's error.
#define MEVB_BUILDING_LIBRARY 1
#include "mevbackup.h"

#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "mevbackup/mevbackup.hpp"

using namespace mevbackup;

struct mevb_repo {
  explicit mevb_repo(Repository r) : repo(std::move(r)) {}
  Repository repo;
  CancelToken cancel;
  mevb_log_cb log = nullptr;
  void* log_user = nullptr;
};

struct mevb_backup {
  explicit mevb_backup(Manifest m) : manifest(std::move(m)), json(manifest.to_string()) {}
  Manifest manifest;
  std::string json;
};

struct mevb_backup_list {
  std::vector<mevb_backup> items;
};

namespace {

struct LastError {
  mevb_error e{0, "", 0};
  std::string message;
};
thread_local LastError t_error;

void set_error(int code, std::string msg, bool retriable = false) {
  t_error.message = std::move(msg);
  t_error.e.code = code;
  t_error.e.message = t_error.message.c_str();
  t_error.e.retriable = retriable ? 1 : 0;
}

template <class F>
int guard(F&& f) noexcept {
  try {
    set_error(MEVB_OK, "");
    f();
    return MEVB_OK;
  } catch (const Error& e) {
    set_error(static_cast<int>(e.code()), e.what(), e.retriable());
    return static_cast<int>(e.code());
  } catch (const std::bad_alloc&) {
    set_error(MEVB_ERR_NOMEM, "out of memory");
    return MEVB_ERR_NOMEM;
  } catch (const std::exception& e) {
    set_error(MEVB_ERR_INTERNAL, std::string("internal error: ") + e.what());
    return MEVB_ERR_INTERNAL;
  } catch (...) {
    set_error(MEVB_ERR_INTERNAL, "internal error: unknown exception");
    return MEVB_ERR_INTERNAL;
  }
}

Error invalid(const std::string& what) { return Error(Code::invalid_argument, what); }

void require(const void* p, const char* name) {
  if (!p) throw invalid(std::string(name) + " must not be NULL");
}

// Copies a caller's options struct over `out` (already holding the defaults),
// honouring struct_size: smaller (older) structs keep the defaults of the fields they
// lack; larger (newer) ones are accepted only if every unknown byte is zero.
template <class T>
void read_opts(const T* in, T& out, const char* name) {
  if (!in) return;
  size_t size = in->struct_size;
  if (size < sizeof(uint32_t)) throw invalid(std::string(name) + ".struct_size is too small");
  if (size > sizeof(T)) {
    auto* extra = reinterpret_cast<const unsigned char*>(in) + sizeof(T);
    for (size_t i = 0; i < size - sizeof(T); ++i)
      if (extra[i]) throw invalid(std::string(name) + " has fields this library version does not know");
    size = sizeof(T);
  }
  std::memcpy(&out, in, size);
  out.struct_size = sizeof(T);
}

template <class T>
int opts_init(T* opts, size_t size, const T& defaults) {
  return guard([&] {
    require(opts, "opts");
    if (size < sizeof(uint32_t)) throw invalid("opts size is too small");
    std::memset(opts, 0, size);
    std::memcpy(opts, &defaults, std::min(size, sizeof(T)));
    opts->struct_size = static_cast<uint32_t>(std::min(size, sizeof(T)));
  });
}

std::string str_or(const char* s, const char* dflt = "") { return s ? s : dflt; }

RunContext make_context(mevb_repo* r, mevb_progress_cb cb, void* user) {
  RunContext ctx;
  r->cancel.reset();
  ctx.cancel = &r->cancel;
  if (r->log) {
    auto log = r->log;
    auto lu = r->log_user;
    ctx.log = [log, lu](LogLevel lvl, const std::string& msg) { log(static_cast<int>(lvl), msg.c_str(), lu); };
  }
  if (cb) {
    ctx.progress = [cb, user](const Progress& p) {
      mevb_progress cp{sizeof(mevb_progress), p.stage, p.bytes_in, p.bytes_out, p.elapsed_s, p.done ? 1 : 0};
      return cb(&cp, user) == 0;
    };
  }
  return ctx;
}

std::vector<std::string> args_or(const char* const* args, size_t n, std::vector<std::string> dflt) {
  if (!args) return dflt;
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    if (!args[i]) throw invalid("NULL entry in an argument list");
    out.emplace_back(args[i]);
  }
  return out;
}

}  // namespace

extern "C" {

const char* mevb_status_str(int status) {
  if (status < 0 || status > MEVB_ERR_UNSUPPORTED) return "unknown status";
  return code_name(static_cast<Code>(status));
}

const mevb_error* mevb_error_last(void) { return &t_error.e; }

const char* mevb_version(void) { return kVersionString; }
unsigned mevb_version_number(void) {
  return static_cast<unsigned>(kVersionMajor * 10000 + kVersionMinor * 100 + kVersionPatch);
}

int mevb_repo_opts_init(mevb_repo_opts* opts, size_t size) {
  return opts_init(opts, size, mevb_repo_opts MEVB_REPO_OPTS_INIT);
}

int mevb_repo_open(mevb_repo** out, const char* location, const mevb_repo_opts* opts) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(location, "location");
    mevb_repo_opts o = MEVB_REPO_OPTS_INIT;
    read_opts(opts, o, "mevb_repo_opts");
    auto r = std::make_unique<mevb_repo>(Repository::open(location));
    r->log = o.log;
    r->log_user = o.log_user;
    *out = r.release();
  });
}

void mevb_repo_free(mevb_repo* repo) { delete repo; }

void mevb_repo_cancel(mevb_repo* repo) {
  if (repo) repo->cancel.cancel();
}

const char* mevb_backup_id(const mevb_backup* b) { return b ? b->manifest.id.c_str() : nullptr; }
const char* mevb_backup_kind(const mevb_backup* b) { return b ? b->manifest.kind.c_str() : nullptr; }
const char* mevb_backup_path(const mevb_backup* b) { return b ? b->manifest.path.c_str() : nullptr; }
const char* mevb_backup_sha256(const mevb_backup* b) { return b ? b->manifest.sha256.c_str() : nullptr; }
const char* mevb_backup_created_at(const mevb_backup* b) { return b ? b->manifest.started_at.c_str() : nullptr; }
const char* mevb_backup_compression(const mevb_backup* b) { return b ? b->manifest.compression.c_str() : nullptr; }
const char* mevb_backup_source_name(const mevb_backup* b) { return b ? b->manifest.source_name.c_str() : nullptr; }
uint64_t mevb_backup_size(const mevb_backup* b) { return b ? b->manifest.size : 0; }
const char* mevb_backup_manifest_json(const mevb_backup* b) { return b ? b->json.c_str() : nullptr; }
void mevb_backup_free(mevb_backup* b) { delete b; }

int mevb_repo_list(mevb_repo* repo, const char* kind, mevb_backup_list** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(repo, "repo");
    auto list = std::make_unique<mevb_backup_list>();
    RunContext ctx = make_context(repo, nullptr, nullptr);
    for (auto& m : repo->repo.list(str_or(kind), ctx.log)) list->items.emplace_back(std::move(m));
    *out = list.release();
  });
}

size_t mevb_backup_list_count(const mevb_backup_list* list) { return list ? list->items.size() : 0; }
const mevb_backup* mevb_backup_list_get(const mevb_backup_list* list, size_t index) {
  return list && index < list->items.size() ? &list->items[index] : nullptr;
}
void mevb_backup_list_free(mevb_backup_list* list) { delete list; }

int mevb_repo_find(mevb_repo* repo, const char* id_or_latest, const char* kind, const char* source_name,
                   mevb_backup** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(repo, "repo");
    require(id_or_latest, "id_or_latest");
    RunContext ctx = make_context(repo, nullptr, nullptr);
    *out = new mevb_backup(repo->repo.find(id_or_latest, str_or(kind), str_or(source_name), ctx.log));
  });
}

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
    if (out) *out = new mevb_backup(std::move(m));
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
    RunContext ctx = make_context(repo, o.progress, o.progress_user);
    Manifest m = repo->repo.find(id_or_latest, "postgres", str_or(o.source_name), ctx.log);
    restore_postgres(repo->repo, m, ro, ctx);
  });
}

}  // extern "C"
