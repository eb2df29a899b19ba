// A repository: artifacts and their manifests in one Storage, laid out as the
// runbook did (database/<db>_YYYYMMDD_HHMMSS.dump.gz, ...), plus the catalog.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mevbackup/clock.hpp"
#include "mevbackup/compress.hpp"
#include "mevbackup/encryption.hpp"
#include "mevbackup/manifest.hpp"
#include "mevbackup/storage.hpp"
#include "mevbackup/stream.hpp"

namespace mevbackup {

enum class LogLevel { debug = 0, info = 1, warning = 2, error = 3 };
using LogFn = std::function<void(LogLevel, const std::string&)>;

// What a Dumper asks the repository to store.
struct ArtifactSpec {
  std::string kind;         // "postgres"
  std::string dir;          // "database"
  std::string name_prefix;  // "mev_protection"
  std::string extension;    // ".dump" (the compression suffix is appended)
  std::string format;       // "pg_dump-custom"
  Compression compression = Compression::gzip;
  int level = -1;
};

// The repository lock's timing (lock.hpp). The library reads no environment for it: the
// CLI and the Python bindings fill it from MEVBACKUP_LOCK_TTL, _REFRESH, _WAIT and
// MEVBACKUP_NO_LOCK.
struct LockOptions {
  std::chrono::seconds ttl{1800};    // a lock not refreshed this long is abandoned
  std::chrono::seconds refresh{300};
  std::chrono::seconds wait{0};      // how long to wait for a conflicting lock; 0: fail at once
  bool disabled = false;             // no lock at all (a repository only this run uses)
};

// Everything a long operation takes besides its own options.
struct RunContext {
  CancelToken* cancel = nullptr;
  ProgressFn progress;
  LogFn log;
  PipelineOptions pipeline;
  LockOptions lock;  // for the repository lock the operation takes
  // Keys: artifacts stored are encrypted to its recipients, artifacts read are decrypted
  // with its identities (encryption.hpp). Null: plaintext, and encrypted artifacts
  // cannot be read.
  std::shared_ptr<const Encryption> encryption;
  // Bandwidth limit of what is stored and read, in bytes per second (0: none); a
  // throttle on the stored bytes (make_throttle).
  uint64_t max_rate = 0;
};

// The outcome of a verification, stored beside the backup as "<artifact>.verify.json".
struct Verification {
  static constexpr const char* kSuffix = ".verify.json";
  std::string verified_at;  // RFC 3339 UTC
  bool ok = false;
  std::string message;      // what failed, or a summary of what was checked
  nlohmann::json checks = nlohmann::json::array();
  // When a failed verification replaced a good one: when the backup last verified good
  // (kept across failures, so retention still knows it once was). Empty otherwise.
  std::string last_ok_at;
  bool ever_ok() const { return ok || !last_ok_at.empty(); }
  nlohmann::json to_json() const;
  static Verification from_json(const nlohmann::json& j, const std::string& where);
};

struct CatalogEntry {
  Manifest manifest;
  std::optional<Verification> verification;  // the latest one, if any
};

// What a repository holds: complete backups (with a manifest) and incomplete objects
// (artifacts without a manifest: failed or running backups, never counted as good).
struct Catalog {
  std::vector<CatalogEntry> backups;       // oldest first
  std::vector<ObjectInfo> incomplete;
};

// What store_compressed wrote: the stored bytes and the payload they hold.
struct StoredDigest {
  uint64_t size = 0, payload_size = 0;
  std::string sha256, payload_sha256;  // hex
};

// The one way an artifact is written: `source` -> SHA-256 and count of the payload ->
// compressor -> encryptor (when ctx.encryption has recipients) -> SHA-256 and count of
// the stored bytes -> storage.put(key), committed only
// after `before_commit` (given the digest; it may throw to reject the artifact) returned.
// `stage` names the pipeline in progress reports and errors. Nothing remains on failure.
StoredDigest store_compressed(Storage& storage, const std::string& key, Source& source, Compression compression,
                              int level, const RunContext& ctx, const char* stage,
                              const std::function<void(const StoredDigest&)>& before_commit = {});
// The same into a sink of the caller's (e.g. one of Storage::put_first_free).
StoredDigest store_compressed(Sink& sink, Source& source, Compression compression, int level, const RunContext& ctx,
                              const char* stage, const std::function<void(const StoredDigest&)>& before_commit = {});

class Repository {
 public:
  explicit Repository(std::unique_ptr<Storage> storage, Clock& clock = system_clock());
  static Repository open(const std::string& url);
  static Repository open(const std::string& url, const StorageOptions& opts);

  Storage& storage() { return *storage_; }
  Clock& clock() { return clock_; }

  // Signed manifests (signing.hpp): with a key every manifest written is signed; with
  // verify keys every manifest read is checked (Manifest::signature), and find, load and
  // everything built on them (restore, verify, PITR, prune) refuse those not good.
  void set_signing(std::shared_ptr<const Signing> s) { signing_ = std::move(s); }
  const Signing* signing() const { return signing_.get(); }
  // True when no verify key is set, or the manifest's signature checked out good.
  bool trusted(const Manifest& m) const;
  // Writes `m` as the manifest of its artifact, signed when a signing key is set (the
  // signature is then also in m.signature_record).
  void write_manifest(Manifest& m);

  // Streams `source` through compression into a new artifact, then writes its manifest.
  // `complete` fills kind-specific manifest fields once the stream succeeded; it may
  // throw to reject the artifact. `store_parts`, called once the artifact's name is
  // settled (m.path final) and before the manifest is written, stores the backup's
  // other objects (Manifest::extra_parts) and records them in `m`. On any failure
  // nothing new remains in storage.
  Manifest publish(Source& source, const ArtifactSpec& spec, const RunContext& ctx,
                   const std::function<void(Manifest&)>& complete,
                   const std::function<void(Manifest&, const RunContext&)>& store_parts = {});

  // Streams an artifact's payload (decompressed) into `sink`, checking size and SHA-256
  // of the stored bytes against the manifest before the sink may commit.
  void restore_stream(const Manifest& m, Sink& sink, const RunContext& ctx);

  // The catalog: every manifest (optionally of one kind), oldest first, as summaries
  // (Manifest::summary). Unreadable manifests are reported through `log` and skipped.
  std::vector<Manifest> list(const std::string& kind = "", const LogFn& log = {});
  // Manifests (summaries), verification records and incomplete objects, from one listing.
  Catalog catalog(const std::string& kind = "", const LogFn& log = {});
  // The whole manifest of a listed backup, read again; throws corrupt when it changed
  // into another backup's or cannot be parsed, not_found when it is gone.
  Manifest load(const Manifest& listed);
  // Stores `v` as the backup's latest verification (replacing an earlier record). A
  // failed `v` inherits the earlier record's last good time (Verification::last_ok_at).
  void record_verification(const Manifest& m, const Verification& v);
  // Deletes a backup: the artifact first, its verification record, the manifest last.
  void remove_backup(const Manifest& m);

  // "latest" or an id; `kind` and `source_name` (if not empty) narrow the search.
  // Returns the whole manifest (Repository::load).
  Manifest find(const std::string& id_or_latest, const std::string& kind, const std::string& source_name = "",
                const LogFn& log = {});

 private:
  // Parses a stored manifest and checks its signature when verify keys are set.
  Manifest parse_manifest(const std::string& text, const std::string& key) const;

  std::unique_ptr<Storage> storage_;
  Clock& clock_;
  std::shared_ptr<const Signing> signing_;
};

// Streams the stored object `m` describes (path, size, sha256, compression, encryption,
// payload_size) into `sink`, decrypted with ctx.encryption's identities and decompressed, as Repository::restore_stream does, but
// without taking the repository lock: for the parts of a backup read while its caller
// holds the lock, or with the caller's own guard.
void read_artifact(Storage& storage, const Manifest& m, Sink& sink, const RunContext& ctx);
// The same read pulled, for readers that pull (libarchive, an RDB parser): the payload of
// `m`, with every check read_artifact makes. The stored bytes' size and SHA-256 are
// checked when they end, before read() returns 0 (corrupt otherwise), so a reader that
// stops early (a tar's end blocks) reads the source to its end before trusting it.
// ctx.cancel is checked at every read; the repository lock is the caller's.
std::unique_ptr<Source> artifact_source(Storage& storage, const Manifest& m, const RunContext& ctx);

// Directory of a kind in the repository ("postgres" -> "database").
std::string kind_directory(const std::string& kind);
// A user's own kind ("export"): not a registered kind (kinds.hpp), [a-z][a-z0-9_-]*, at
// most 64 characters, and no directory the layout already uses (a registered kind's,
// "wal", "locks").
bool is_user_kind(const std::string& kind);

}  // namespace mevbackup
