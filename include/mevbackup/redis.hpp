// Redis backup (an RDB snapshot streamed into the repository, taken by BGSAVE or over
// the replication protocol) and restore (the RDB written atomically into a stopped
// server's data directory).
//
// Credentials: the password comes from RedisBackupOptions::password, else from the
// URL (redis://user:password@host:port), else from default_password (which the CLI and
// the Python bindings fill from MEVBACKUP_REDIS_PASSWORD; the library reads no
// environment for it). It is sent only in AUTH and never appears in messages or
// logs (URLs are redacted). TLS is not supported (plain TCP, as redis-cli without --tls).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mevbackup/repository.hpp"

namespace mevbackup {

enum class RedisBackupMode {
  auto_select,  // bgsave when the server is on this host and its dir is readable, else replication
  bgsave,       // BGSAVE, wait for it, stream <dir>/<dbfilename>
  replication,  // SYNC as a replica would, stream the RDB payload off the socket
};

// "auto" | "bgsave" | "replication"; throws invalid_argument otherwise.
RedisBackupMode parse_redis_mode(const std::string& s);
const char* redis_mode_name(RedisBackupMode m);

struct RedisBackupOptions {
  std::string url;                  // redis://[user[:password]@]host[:port] (default port 6379)
  std::string password;             // overrides the URL's and default_password
  std::string default_password;     // when neither password nor the URL gives one
  RedisBackupMode mode = RedisBackupMode::auto_select;
  std::string name_prefix = "redis";
  Compression compression = Compression::gzip;
  int level = -1;
  int connect_timeout_s = 10;
  int save_timeout_s = 3600;        // how long BGSAVE (or the replica sync's first byte) may take
  // An RDB holding module data (module-typed keys, module aux records) is refused,
  // since only a server loading the same modules can restore it; true keeps it (the
  // manifest counts the module data per module name).
  bool allow_modules = false;
};

// Backs the server up into `repo` (redis/<prefix>_YYYYMMDD_HHMMSS.rdb.gz). Throws Error:
// connection when the server cannot be reached, auth when it refuses the credentials,
// dump_failed when BGSAVE fails, the replication stream is cut, the RDB does not parse
// as Redis would load it or holds module data not allowed (no artifact remains).
Manifest backup_redis(Repository& repo, const RedisBackupOptions& opts, const RunContext& ctx);

// The endpoints backup_redis and restore_redis are built from, for pipelines of one's own.
struct RedisRdbSourceOptions {      // as RedisBackupOptions
  std::string url;
  std::string password;
  std::string default_password;
  RedisBackupMode mode = RedisBackupMode::auto_select;
  int connect_timeout_s = 10;
  int save_timeout_s = 3600;
};

// What a redis backup's manifest records of the server.
struct RedisRdbInfo {
  std::string server;         // host:port (no credentials)
  std::string redis_version;
  RedisBackupMode mode = RedisBackupMode::auto_select;  // the one used (never auto_select)
  nlohmann::json keyspace;    // INFO keyspace, per database
  std::string rdb_path;       // bgsave: the file streamed
  std::string described;      // names the stream in messages
};

// The server's RDB as a Source, by BGSAVE (the file it saved) or replication (the RDB
// payload off the socket). Connects, authenticates and starts the snapshot before it
// returns (throwing as backup_redis does). The bytes are not checked: backup_redis
// parses them on the way.
std::unique_ptr<Source> redis_rdb_source(const RedisRdbSourceOptions& opts, const RunContext& ctx,
                                         RedisRdbInfo* info = nullptr);

struct RedisRestoreOptions {
  // Offline restore: the stopped server's data directory and its dbfilename.
  std::string data_dir;
  std::string rdb_name = "dump.rdb";
  // Hook commands run before the RDB is moved into place (e.g. stop the server) and
  // after (e.g. start it). Each is an argv run directly, without a shell; empty: none.
  std::vector<std::string> before;
  std::vector<std::string> after;
  // The newest RDB version the target can load; 0: ask the local redis-server binary
  // (redis-server --version) when there is one, else do not check.
  int target_rdb_version = 0;
  // Live restore into a running server instead (data_dir must then be empty): every key
  // goes in with RESTORE key ttl payload [REPLACE] ABSTTL, pipelined; keys already
  // expired are skipped. The artifact is read twice: once to verify it completely
  // (SHA-256, RDB CRC-64, key counts) before the target is touched, once to restore.
  // Unlike the offline restore this is not atomic: a failure midway (the server going
  // away, a key refused) leaves the keys restored so far.
  std::string redis_url;    // redis://[user[:password]@]host[:port]
  std::string password;     // as in RedisBackupOptions
  std::string default_password;
  bool replace = false;     // a non-empty target is allowed; existing keys are replaced
  bool flush = false;       // a non-empty target is emptied (FLUSHALL) after verification
  int connect_timeout_s = 10;
};

// Restores `backup` (a redis backup) live when opts.redis_url is set (see above), else
// offline into opts.data_dir. Offline, the artifact is streamed, checked against its
// manifest and fsynced into a temporary file in data_dir first; only then does the
// `before` hook run, the file is renamed over <data_dir>/<rdb_name> and the `after`
// hook runs. A failure before the rename leaves the data directory as it was.
// Throws not_empty (live, target has keys, neither replace nor flush), version_mismatch
// (the target cannot load the RDB's version), corrupt (artifact damaged; target untouched).
void restore_redis(Repository& repo, const Manifest& backup, const RedisRestoreOptions& opts, const RunContext& ctx);

struct RedisOfflineSinkOptions : RedisRestoreOptions {  // data_dir, rdb_name, before, after, target_rdb_version
  // The backup whose payload the sink receives, when there is one: the RDB must parse and
  // hold the keys it counted. None: it must parse (CRC-64 included).
  std::optional<Manifest> backup;
};

// The offline half of restore_redis as a Sink of an RDB stream: written and checked into
// a temporary file in data_dir; commit() checks the RDB version against the target's,
// runs `before`, renames it over <data_dir>/<rdb_name> and runs `after`. abort() (or
// destroying an uncommitted sink) removes the temporary file: the directory is as it was.
std::unique_ptr<Sink> redis_offline_sink(const RedisOfflineSinkOptions& opts, const RunContext& ctx);

struct RedisLiveSinkOptions : RedisRestoreOptions {  // redis_url, password, default_password, replace, flush
  // The backup whose payload the sink receives, when there is one: its RDB version is
  // checked against the target's before any key goes in. None: the stream's own version,
  // checked when its header arrives.
  std::optional<Manifest> backup;
};

struct RedisLiveResult {
  uint64_t restored = 0, skipped = 0, functions = 0;  // keys in, keys already expired, libraries
};

// The live half of restore_redis as a Sink of an RDB stream: every key goes into the
// running server at redis_url as it arrives (RESTORE ... ABSTTL, REPLACE when replace or
// flush). Created only when the target is empty (not_empty otherwise) unless replace, or
// flush (which says the caller emptied it: restore_redis does, after verifying the
// backup). Not atomic: a failure midway leaves the keys restored so far, and the message
// says how many. `result` (if given) gets the counts on commit.
std::unique_ptr<Sink> redis_live_sink(const RedisLiveSinkOptions& opts, const RunContext& ctx,
                                      RedisLiveResult* result = nullptr);

// The RDB version that a Redis server version ("7.0.15") writes and can load; 0 if unknown.
int rdb_version_for_redis(const std::string& version);

// For the Verifier: watches a Redis backup's payload (the RDB) stream by, parsing it on
// a thread of its own; verify() then throws Code::corrupt unless it parsed (CRC-64
// included) and holds the keys its manifest counted, and returns a one-line summary.
class RdbPayloadCheck final : public Observer {
 public:
  explicit RdbPayloadCheck(Manifest m);
  ~RdbPayloadCheck() override;
  void update(Bytes data) override;
  void finish() override;
  std::string verify(const RunContext& ctx);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mevbackup
