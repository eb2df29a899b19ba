// Shared machinery of the C API shim: the handles' definitions, the guard that turns
// exceptions into statuses, options-struct copying. Included only by capi/*.cpp.
#pragma once

#define MEVB_BUILDING_LIBRARY 1
#include "mevbackup.h"

#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "mevbackup/mevbackup.hpp"

using namespace mevbackup;  // internal to the shim

namespace mevb_capi {

// Live handles. A C caller can pass a handle it has already freed, or a pointer of another
// handle type; every entry point asks this registry before it touches a handle, so such a
// call gets MEVB_ERR_INVALID_ARGUMENT (or NULL / 0 from a getter, nothing from a free)
// instead of a use after free. Each handle struct ends with a `Live<Self> live_` member
// whose own address is the key, so asking never reads the handle's memory. An address can
// be reused by a later allocation: a stale pointer equal to a new live handle of the same
// type is taken for that handle, as with any allocator.
void registry_add(const void* key, const void* type);  // capi.cpp; throws std::bad_alloc
void registry_remove(const void* key) noexcept;
bool registry_has(const void* key, const void* type) noexcept;

template <class T>
struct Live {
  static inline const char tag = 0;  // one address per handle type
  Live() { registry_add(this, &tag); }
  Live(const Live&) : Live() {}  // a handle moved into a vector is a new handle there
  Live& operator=(const Live&) noexcept { return *this; }
  ~Live() { registry_remove(this); }
};

template <class T>
concept Handle = requires(const T* p) { p->live_; };

// A live handle of type T (NULL is not).
template <Handle T>
inline bool live(const T* p) noexcept {
  return p && registry_has(&p->live_, &decltype(p->live_)::tag);
}

}  // namespace mevb_capi

struct mevb_repo {
  explicit mevb_repo(Repository r) : repo(std::move(r)) {}
  Repository repo;
  CancelToken cancel;
  mevb_log_cb log = nullptr;
  void* log_user = nullptr;
  std::chrono::seconds stall_timeout{0};
  LockOptions lock;
  std::shared_ptr<const Encryption> encryption;  // null: plaintext
  uint64_t max_rate = 0;                          // bytes/s; 0: none
  mevb_capi::Live<mevb_repo> live_;
};

struct mevb_backup {
  explicit mevb_backup(Manifest m) : manifest(std::move(m)), json(manifest.to_string()) {}
  Manifest manifest;
  std::string json;
  bool owned = false;  // allocated alone (mevb_repo_find), not an item of a list
  mevb_capi::Live<mevb_backup> live_;
};

namespace mevb_capi {
// A backup handle the caller owns and frees with mevb_backup_free.
inline mevb_backup* new_backup(Manifest m) {
  auto b = std::make_unique<mevb_backup>(std::move(m));
  b->owned = true;
  return b.release();
}
}  // namespace mevb_capi

struct mevb_report {
  std::string json;
  std::string text;
  int status = 0;
  std::vector<PlanStep> steps;  // plan reports (run, restore, drill)
  mevb_capi::Live<mevb_report> live_;
};

struct mevb_backup_list {
  std::vector<mevb_backup> items;
  mevb_capi::Live<mevb_backup_list> live_;
};

namespace mevb_capi {

// The storage fields of mevb_repo_opts (capi.cpp), for mevb_repo_open and mevb_storage_open.
StorageOptions storage_options(const mevb_repo_opts& o);
// The lock's timing, the keys and the signing of mevb_repo_opts, read and checked.
LockOptions lock_options(const mevb_repo_opts& o);
std::shared_ptr<const Encryption> encryption_options(const mevb_repo_opts& o);
std::shared_ptr<const Signing> signing_options(const mevb_repo_opts& o);

struct LastError {
  mevb_error e{0, "", 0};
  std::string message;
};
inline thread_local LastError t_error;

inline void set_error(int code, std::string msg, bool retriable = false) {
  t_error.message = std::move(msg);
  t_error.e.code = code;
  t_error.e.message = t_error.message.c_str();
  t_error.e.retriable = retriable ? 1 : 0;
}

inline std::string json_error_message(const nlohmann::json::exception& e) {
  if (e.id == 316) return "internal error: text that is not valid UTF-8 cannot be written into a JSON document";
  if (dynamic_cast<const nlohmann::json::parse_error*>(&e)) return "internal error: a JSON document is malformed";
  return "internal error: a JSON document does not have the expected shape";
}

template <class F>
inline int guard(F&& f) noexcept {
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
  } catch (const nlohmann::json::exception& e) {
    // The JSON library's own text ("[json.exception.type_error.316] ...") tells a user nothing.
    set_error(MEVB_ERR_INTERNAL, json_error_message(e));
    return MEVB_ERR_INTERNAL;
  } catch (const std::exception& e) {
    set_error(MEVB_ERR_INTERNAL, std::string("internal error: ") + e.what());
    return MEVB_ERR_INTERNAL;
  } catch (...) {
    set_error(MEVB_ERR_INTERNAL, "internal error: unknown exception");
    return MEVB_ERR_INTERNAL;
  }
}

inline Error invalid(const std::string& what) { return Error(Code::invalid_argument, what); }

// NULL is refused; so is a handle that is not live (freed already, or of another type).
template <class T>
inline void require(const T* p, const char* name) {
  if (!p) throw invalid(std::string(name) + " must not be NULL");
  if constexpr (Handle<T>) {
    if (!live(p)) throw invalid(std::string(name) + " is not a live handle: it was freed already, or is of another type");
  }
}

// Copies a caller's options struct over `out` (already holding the defaults),
// honouring struct_size: smaller (older) structs keep the defaults of the fields they
// lack; larger (newer) ones are accepted only if every unknown byte is zero.
template <class T>
inline void read_opts(const T* in, T& out, const char* name) {
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
inline int opts_init(T* opts, size_t size, const T& defaults) {
  return guard([&] {
    require(opts, "opts");
    if (size < sizeof(uint32_t)) throw invalid("opts size is too small");
    std::memset(opts, 0, size);
    std::memcpy(opts, &defaults, std::min(size, sizeof(T)));
    opts->struct_size = static_cast<uint32_t>(std::min(size, sizeof(T)));
  });
}

inline std::string str_or(const char* s, const char* dflt = "") { return s ? s : dflt; }

// What a repository handle's options give every run on it: the stall timeout, the lock's
// timing, the keys and the bandwidth limit (one place, for the canned operations'
// make_context and the stream layer's runs alike).
inline void apply_repo_settings(RunContext& ctx, const mevb_repo* r) {
  ctx.pipeline.stall_timeout = r->stall_timeout;
  ctx.lock = r->lock;
  ctx.encryption = r->encryption;
  ctx.max_rate = r->max_rate;
}

inline RunContext make_context(mevb_repo* r, mevb_progress_cb cb, void* user) {
  RunContext ctx;
  r->cancel.reset();
  ctx.cancel = &r->cancel;
  apply_repo_settings(ctx, r);
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

inline std::vector<std::string> args_or(const char* const* args, size_t n, std::vector<std::string> dflt) {
  if (!args) return dflt;
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    if (!args[i]) throw invalid("NULL entry in an argument list");
    out.emplace_back(args[i]);
  }
  return out;
}

// A list of strings of an options struct: NULL with a count, or a NULL entry, is refused
// naming the field ("mevb_repo_opts.recipients", "...[2]").
inline std::vector<std::string> list_field(const char* const* v, size_t n, const std::string& what) {
  if (n && !v) throw invalid(what + " is NULL but its count is " + std::to_string(n));
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    if (!v[i]) throw invalid(fmt::format("{}[{}] is NULL", what, i));
    out.emplace_back(v[i]);
  }
  return out;
}

}  // namespace mevb_capi
