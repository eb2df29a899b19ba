// Storage: where artifacts live. put() is a Sink that publishes atomically and never
// replaces an existing object; get() is a Source; list/stat/remove act on keys.
// Keys are relative, '/'-separated, without empty, "." or ".." components.
// Thread safety: distinct calls may run concurrently; one Sink/Source is one thread's.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mevbackup/fs.hpp"
#include "mevbackup/stream.hpp"

namespace mevbackup {

struct ObjectInfo {
  std::string key;
  uint64_t size = 0;
  int64_t mtime = 0;  // seconds since the epoch: when the object was stored
  // list_unfinished on S3: the multipart upload this leftover is (its key is the key the
  // upload was for; size is 0, unknown). Empty for objects and local temporary files.
  std::string upload_id;
};

// A Sink of Storage::put_first_free: its key is settled when it commits.
class NamedSink : public Sink {
 public:
  // The key the object was published under; valid once commit() succeeded.
  virtual std::string key() const = 0;
};

class Storage {
 public:
  virtual ~Storage() = default;
  // The object appears under `key` only when the sink's commit() succeeds; commit
  // fails with Code::exists when `key` already exists (nothing is overwritten).
  virtual std::unique_ptr<Sink> put(const std::string& key) = 0;
  // As put(), under the first of key_for(0), key_for(1), ... key_for(tries - 1) that no
  // other writer has or takes: two writers racing for one name both succeed, under
  // distinct keys. All candidates lie in one directory. Local storage settles the key at
  // commit (a rename that never replaces, retried with the next candidate); S3 before
  // the upload (a claim object beside the name, see s3_storage.cpp); this default takes
  // the first candidate stat() finds free. Code::exists when every candidate is taken.
  virtual std::unique_ptr<NamedSink> put_first_free(const std::function<std::string(int)>& key_for, int tries);
  virtual std::unique_ptr<Source> get(const std::string& key) = 0;
  // Every complete object whose key starts with `prefix`, sorted by key.
  virtual std::vector<ObjectInfo> list(const std::string& prefix) = 0;
  virtual std::optional<ObjectInfo> stat(const std::string& key) = 0;
  // Leftovers of uploads that never committed (a killed process's temporary files, an
  // S3 multipart upload never completed or aborted), for retention to clean up.
  virtual std::vector<ObjectInfo> list_unfinished(const std::string& prefix) {
    (void)prefix;
    return {};
  }
  // Removes one leftover of list_unfinished (S3: aborts the multipart upload, which
  // frees its parts). Removing what is already gone is not an error.
  virtual void remove_unfinished(const ObjectInfo& leftover) { remove(leftover.key); }
  // Removing a missing key is not an error.
  virtual void remove(const std::string& key) = 0;
  // Removes many keys (S3: DeleteObjects batches of 1000). Tries every key and returns
  // the ones that could not be removed, each with the reason; never throws for those.
  struct RemoveFailure {
    std::string key, reason;
  };
  virtual std::vector<RemoveFailure> remove_many(const std::vector<std::string>& keys);
  // Where this storage is, for messages (never contains credentials).
  virtual std::string describe() const = 0;
  // True when reading an object again costs no download (a local directory): a restore
  // may then read an artifact once per session (PgRestoreOptions::jobs).
  virtual bool local() const { return false; }

  // Small objects (manifests): whole reads and writes. read_small refuses objects
  // larger than max_size.
  std::string read_small(const std::string& key, size_t max_size = 16 << 20);
  void write_small(const std::string& key, const std::string& data);

  // False when the storage itself is not there (a local root directory that does not
  // exist), so that a mistyped repository is not taken for an empty one. Storages that
  // cannot tell answer true (an S3 listing of a missing bucket throws instead).
  virtual bool exists() { return true; }

 protected:
  // The sink of write_small: manifests, verification records and locks, which must stay
  // instantly readable (S3: the storage class is for artifacts only). Default: put().
  virtual std::unique_ptr<Sink> put_small(const std::string& key) { return put(key); }
};

// Throws invalid_argument naming the key when it is not a valid relative key.
void validate_key(const std::string& key);

// A directory on a local filesystem. Creates `root` (0700) on first write.
std::unique_ptr<Storage> make_local_storage(const std::string& root, Fs& fs = posix_fs());

// "PATH" or "file://PATH" -> local storage. Other schemes -> unsupported.
std::unique_ptr<Storage> open_storage(const std::string& url);

// ---- S3-compatible object storage ------------------------------------------------
// What a storage needs beyond its URL. Local storage ignores it. Empty strings and
// zeros mean "the default" (for S3: the AWS_* environment variables, then AWS's).
struct StorageOptions {
  std::string storage_class;      // STANDARD, STANDARD_IA, GLACIER, DEEP_ARCHIVE, ...
  std::string sse;                // server-side encryption: "AES256" or "aws:kms"
  std::string sse_kms_key_id;     // with sse "aws:kms"
  std::string endpoint_url;       // AWS_ENDPOINT_URL
  std::string region;             // AWS_REGION / AWS_DEFAULT_REGION
  std::string ca_bundle;          // PEM file of trusted CAs
  bool no_verify_tls = false;     // turns certificate verification off (logs a warning)
  bool path_style = false;        // force path-style addressing
  bool unsigned_payload = false;  // UNSIGNED-PAYLOAD over https instead of SHA-256 bodies
  std::string access_key_id;      // AWS_ACCESS_KEY_ID
  std::string secret_access_key;  // AWS_SECRET_ACCESS_KEY; never logged
  std::string session_token;      // AWS_SESSION_TOKEN
  std::string profile;            // of ~/.aws/credentials and ~/.aws/config; empty: AWS_PROFILE or "default"
  uint64_t part_size = 0;         // first multipart part size; 0: 8 MiB (min 5 MiB)
  int concurrency = 0;            // parts in flight; 0: 4
  int max_attempts = 0;           // per request; 0: AWS_MAX_ATTEMPTS or 3 (AWS standard mode)
  std::function<void(int level, const std::string& message)> log;  // level 2 = warning
  // > 0: an S3 request whose data stops moving for half this long fails (and is
  // retried); 0: 60 s. The repository's stall timeout (MEVBACKUP_STALL_TIMEOUT) sets it.
  int64_t stall_timeout_seconds = 0;
  // Base of the S3 retry backoff in ms (1..60000); 0: 1000. The CLI and the Python
  // bindings take it from MEVBACKUP_S3_RETRY_BASE_MS (for tests).
  int64_t retry_base_ms = 0;
};

// As open_storage(url), plus "s3://bucket[/prefix]" -> S3-compatible object storage.
std::unique_ptr<Storage> open_storage(const std::string& url, const StorageOptions& opts);

// "s3://bucket[/prefix]". Throws invalid_argument on a malformed URL and auth when no
// credentials are configured.
std::unique_ptr<Storage> make_s3_storage(const std::string& url, const StorageOptions& opts);

}  // namespace mevbackup
