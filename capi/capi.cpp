// The only extern "C" code: a thin shim over the C++ core. Every body runs inside
// guard(), so no exception crosses the boundary and failures set the thread's error.
// This file: errors, versions, repositories and the catalog. One file per service.
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cerrno>
#include <mutex>
#include <unordered_map>

#include "internal.hpp"

using namespace mevb_capi;

namespace mevb_capi {

// The lock's timing from mevb_repo_opts (0: the default), checked before anything opens.
LockOptions lock_options(const mevb_repo_opts& o) {
  static constexpr int64_t kMax = 10LL * 365 * 86400;
  auto check = [](const char* name, int64_t v) {
    if (v < 0 || v > kMax)
      throw invalid(fmt::format("mevb_repo_opts.{} must be 0 (the default) or 1..{} seconds, not {}", name, kMax, v));
  };
  check("lock_ttl_seconds", o.lock_ttl_seconds);
  check("lock_refresh_seconds", o.lock_refresh_seconds);
  check("lock_wait_seconds", o.lock_wait_seconds);
  LockOptions l;
  if (o.lock_ttl_seconds > 0) l.ttl = std::chrono::seconds(o.lock_ttl_seconds);
  l.refresh = o.lock_refresh_seconds > 0 ? std::chrono::seconds(o.lock_refresh_seconds)
                                         : std::max<std::chrono::seconds>(std::chrono::seconds(1), l.ttl / 6);
  l.wait = std::chrono::seconds(o.lock_wait_seconds);
  l.disabled = o.no_lock != 0;
  return l;
}

// The keys of mevb_repo_opts, read and checked before anything opens; null without any.
std::shared_ptr<const Encryption> encryption_options(const mevb_repo_opts& o) {
  EncryptionKeys k;
  k.recipients = list_field(o.recipients, o.recipients_count, "mevb_repo_opts.recipients");
  k.recipients_file = str_or(o.recipients_file);
  k.identity_files = list_field(o.identity_files, o.identity_files_count, "mevb_repo_opts.identity_files");
  k.passphrase_file = str_or(o.passphrase_file);
  return load_encryption(k, "mevb_repo_opts.recipients");
}

std::shared_ptr<const Signing> signing_options(const mevb_repo_opts& o) {
  return load_signing(str_or(o.signing_key_file), list_field(o.verify_key_files, o.verify_key_files_count, "mevb_repo_opts.verify_key_files"));
}

}  // namespace mevb_capi

namespace {
struct Registry {
  std::mutex mu;
  std::unordered_map<const void*, const void*> live;  // key -> type tag
};
// Never destroyed: handles may be freed while the process exits.
Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}
}  // namespace

void mevb_capi::registry_add(const void* key, const void* type) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  r.live[key] = type;
}

void mevb_capi::registry_remove(const void* key) noexcept {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  r.live.erase(key);
}

bool mevb_capi::registry_has(const void* key, const void* type) noexcept {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  auto it = r.live.find(key);
  return it != r.live.end() && it->second == type;
}

StorageOptions mevb_capi::storage_options(const mevb_repo_opts& o) {
  StorageOptions so;
  so.storage_class = str_or(o.storage_class);
  so.endpoint_url = str_or(o.endpoint_url);
  so.region = str_or(o.region);
  so.profile = str_or(o.profile);
  so.ca_bundle = str_or(o.ca_bundle);
  so.no_verify_tls = o.no_verify_tls != 0;
  so.path_style = o.path_style != 0;
  so.access_key_id = str_or(o.access_key_id);
  so.secret_access_key = str_or(o.secret_access_key);
  so.session_token = str_or(o.session_token);
  so.sse = str_or(o.sse);
  so.sse_kms_key_id = str_or(o.sse_kms_key_id);
  so.part_size = o.part_size;
  so.concurrency = o.concurrency;
  so.max_attempts = o.max_attempts;
  so.unsigned_payload = o.unsigned_payload != 0;
  so.stall_timeout_seconds = o.stall_timeout_seconds;
  so.retry_base_ms = o.s3_retry_base_ms;
  if (o.log) {
    auto log = o.log;
    auto lu = o.log_user;
    so.log = [log, lu](int level, const std::string& msg) { log(level, msg.c_str(), lu); };
  }
  return so;
}

extern "C" {

const char* mevb_status_str(int status) {
  if (status < 0 || status > MEVB_ERR_LOCKED) return "unknown status";
  return code_name(static_cast<Code>(status));
}

const mevb_error* mevb_error_last(void) { return &t_error.e; }

const char* mevb_version(void) { return kVersionString; }
unsigned mevb_version_number(void) {
  return static_cast<unsigned>(kVersionMajor * 10000 + kVersionMinor * 100 + kVersionPatch);
}

int mevb_protect_secrets_in_memory(void) {
  return guard([] {
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) throw sys_error(errno, "cannot make the process undumpable");
    rlimit none{0, 0};
    if (::setrlimit(RLIMIT_CORE, &none) != 0) throw sys_error(errno, "cannot disable core dumps");
  });
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
    StorageOptions so = storage_options(o);
    so.stall_timeout_seconds = o.stall_timeout_seconds > 0 ? o.stall_timeout_seconds : 0;  // S3 transfers too
    LockOptions lock = lock_options(o);
    auto r = std::make_unique<mevb_repo>(Repository::open(location, so));
    r->log = o.log;
    r->log_user = o.log_user;
    if (o.stall_timeout_seconds < 0) throw invalid("mevb_repo_opts.stall_timeout_seconds must not be negative");
    r->stall_timeout = std::chrono::seconds(o.stall_timeout_seconds);
    r->lock = lock;
    r->encryption = encryption_options(o);
    r->repo.set_signing(signing_options(o));
    r->max_rate = o.max_rate;
    *out = r.release();
  });
}

void mevb_repo_free(mevb_repo* repo) {
  if (live(repo)) delete repo;
}

void mevb_repo_cancel(mevb_repo* repo) {
  if (live(repo)) repo->cancel.cancel();
}

const char* mevb_backup_id(const mevb_backup* b) { return live(b) ? b->manifest.id.c_str() : nullptr; }
const char* mevb_backup_kind(const mevb_backup* b) { return live(b) ? b->manifest.kind.c_str() : nullptr; }
const char* mevb_backup_path(const mevb_backup* b) { return live(b) ? b->manifest.path.c_str() : nullptr; }
const char* mevb_backup_sha256(const mevb_backup* b) { return live(b) ? b->manifest.sha256.c_str() : nullptr; }
const char* mevb_backup_created_at(const mevb_backup* b) { return live(b) ? b->manifest.started_at.c_str() : nullptr; }
const char* mevb_backup_compression(const mevb_backup* b) { return live(b) ? b->manifest.compression.c_str() : nullptr; }
const char* mevb_backup_source_name(const mevb_backup* b) { return live(b) ? b->manifest.source_name.c_str() : nullptr; }
uint64_t mevb_backup_size(const mevb_backup* b) { return live(b) ? b->manifest.size : 0; }
const char* mevb_backup_manifest_json(const mevb_backup* b) { return live(b) ? b->json.c_str() : nullptr; }
int mevb_parse_rate(const char* text, uint64_t* bytes_per_second) {
  return guard([&] {
    require(text, "text");
    require(bytes_per_second, "bytes_per_second");
    *bytes_per_second = parse_rate(text);
  });
}

int mevb_backup_encrypted(const mevb_backup* b) { return live(b) && !b->manifest.encryption.empty() ? 1 : 0; }
const char* mevb_backup_signature(const mevb_backup* b) {
  return live(b) ? signature_state_name(b->manifest.signature) : nullptr;
}
// A backup borrowed from a list is the list's: freeing it alone does nothing.
void mevb_backup_free(mevb_backup* b) {
  if (live(b) && b->owned) delete b;
}

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

size_t mevb_backup_list_count(const mevb_backup_list* list) { return live(list) ? list->items.size() : 0; }
const mevb_backup* mevb_backup_list_get(const mevb_backup_list* list, size_t index) {
  return live(list) && index < list->items.size() ? &list->items[index] : nullptr;
}
void mevb_backup_list_free(mevb_backup_list* list) {
  if (live(list)) delete list;
}

int mevb_repo_find(mevb_repo* repo, const char* id_or_latest, const char* kind, const char* source_name,
                   mevb_backup** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(repo, "repo");
    require(id_or_latest, "id_or_latest");
    RunContext ctx = make_context(repo, nullptr, nullptr);
    *out = new_backup(repo->repo.find(id_or_latest, str_or(kind), str_or(source_name), ctx.log));
  });
}

}  // extern "C"
