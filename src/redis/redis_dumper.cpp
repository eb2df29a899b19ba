// Redis Dumper: an RDB snapshot streamed into the repository, without a fixed delay.
//
// bgsave: BGSAVE (waiting first for a save already running), then INFO persistence is
//   polled until rdb_bgsave_in_progress drops to 0 and rdb_last_bgsave_status is
//   checked; the file <dir>/<dbfilename> is opened once and streamed, so a later save
//   renaming a new file over it does not disturb the read.
// replication: the connection declares itself a replica (REPLCONF capa eof,
//   REPLCONF rdb-only 1, SYNC) as redis-cli --rdb does, and the RDB payload is read
//   straight off the socket, in either framing: "$<length>\r\n" + length bytes, or the
//   diskless "$EOF:<40-byte mark>\r\n" + bytes + the mark again.
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <thread>

#include <fmt/format.h>

#include "mevbackup/file_stream.hpp"
#include "mevbackup/redis.hpp"
#include "redis_conn.hpp"
#include "rdb_reader.hpp"
#include "redis_internal.hpp"
#include "replication_source.hpp"

namespace mevbackup {

using redis::Conn;

RedisBackupMode parse_redis_mode(const std::string& s) {
  if (s.empty() || s == "auto") return RedisBackupMode::auto_select;
  if (s == "bgsave") return RedisBackupMode::bgsave;
  if (s == "replication") return RedisBackupMode::replication;
  throw Error(Code::invalid_argument, fmt::format("unknown Redis backup mode \"{}\" (auto, bgsave or replication)", s));
}

const char* redis_mode_name(RedisBackupMode m) {
  switch (m) {
    case RedisBackupMode::bgsave: return "bgsave";
    case RedisBackupMode::replication: return "replication";
    default: return "auto";
  }
}

int rdb_version_for_redis(const std::string& version) {
  int major = 0, minor = 0;
  if (std::sscanf(version.c_str(), "%d.%d", &major, &minor) < 1) return 0;
  if (major >= 8 || (major == 7 && minor >= 4)) return 12;
  if (major == 7 && minor >= 2) return 11;
  if (major == 7) return 10;
  if (major >= 5) return 9;
  if (major == 4) return 8;
  if (major == 3 && minor >= 2) return 7;
  if (major >= 2) return 6;
  return 0;
}

namespace redis {

void RdbHeader::update(Bytes data) {
  size_t n = std::min(data.size(), sizeof(head) - have);
  std::memcpy(head + have, data.data(), n);
  have += n;
}

int RdbHeader::version(const std::string& what) const {
  if (have < sizeof(head) || std::memcmp(head, "REDIS", 5) != 0)
    throw Error(Code::corrupt, fmt::format("{} is not an RDB file (no REDIS header)", what));
  int v = 0;
  for (int i = 5; i < 9; ++i) {
    if (head[i] < '0' || head[i] > '9')
      throw Error(Code::corrupt, fmt::format("{} has a bad RDB version field", what));
    v = v * 10 + (head[i] - '0');
  }
  return v;
}

}  // namespace redis

namespace {

bool is_loopback(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr a{};
  return inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

int64_t info_int(const std::map<std::string, std::string>& m, const std::string& k, int64_t dflt = 0) {
  auto it = m.find(k);
  if (it == m.end()) return dflt;
  return std::strtoll(it->second.c_str(), nullptr, 10);
}

// Polls INFO persistence until `busy` says nothing runs any more.
void wait_until(Conn& conn, const RunContext& ctx, int timeout_s, const char* what,
                const std::function<bool(const std::map<std::string, std::string>&)>& busy) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  auto delay = std::chrono::milliseconds(10);
  for (;;) {
    if (!busy(conn.info("persistence"))) return;
    if (ctx.cancel) ctx.cancel->check();
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(Code::dump_failed, fmt::format("Redis at {}: {} did not finish within {} s", conn.name(), what, timeout_s),
                  true);
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(250));
  }
}

// Runs a BGSAVE of our own to completion and checks that it succeeded.
void run_bgsave(Conn& conn, const RunContext& ctx, int timeout_s) {
  auto in_progress = [](const std::map<std::string, std::string>& p) { return info_int(p, "rdb_bgsave_in_progress") != 0; };
  for (int attempt = 0;; ++attempt) {
    redis::Reply r = conn.command_raw({"BGSAVE"});
    std::string msg = redis::to_string(r.get());
    if (r->type != REDIS_REPLY_ERROR) break;  // "Background saving started"
    if (attempt > 20)
      throw Error(Code::dump_failed, fmt::format("Redis at {}: BGSAVE kept failing: {}", conn.name(), msg));
    if (msg.find("already in progress") != std::string::npos) {
      if (ctx.log) ctx.log(LogLevel::info, "a save is already running; waiting for it before starting ours");
      wait_until(conn, ctx, timeout_s, "the running BGSAVE", in_progress);
    } else if (msg.find("AOF") != std::string::npos || msg.find("append only") != std::string::npos) {
      if (ctx.log) ctx.log(LogLevel::info, "an AOF rewrite is running; waiting for it before BGSAVE");
      wait_until(conn, ctx, timeout_s, "the AOF rewrite",
                 [](const std::map<std::string, std::string>& p) { return info_int(p, "aof_rewrite_in_progress") != 0; });
    } else {
      throw Error(msg.rfind("NOPERM", 0) == 0 ? Code::permission : Code::dump_failed,
                  fmt::format("Redis at {}: BGSAVE failed: {}", conn.name(), msg));
    }
  }
  wait_until(conn, ctx, timeout_s, "BGSAVE", in_progress);
  auto p = conn.info("persistence");
  if (p["rdb_last_bgsave_status"] != "ok")
    throw Error(Code::dump_failed,
                fmt::format("Redis at {}: BGSAVE failed (rdb_last_bgsave_status:{}); the server's log says why (is its "
                            "dir writable, is the disk full?)",
                            conn.name(), p["rdb_last_bgsave_status"]));
}

nlohmann::json keyspace(Conn& conn) {
  nlohmann::json out = nlohmann::json::object();
  for (auto& [k, v] : conn.info("keyspace")) {
    if (k.rfind("db", 0) != 0) continue;
    nlohmann::json d = nlohmann::json::object();
    size_t pos = 0;
    while (pos < v.size()) {
      size_t comma = v.find(',', pos);
      if (comma == std::string::npos) comma = v.size();
      std::string kv = v.substr(pos, comma - pos);
      if (auto eq = kv.find('='); eq != std::string::npos && (kv.compare(0, eq, "keys") == 0 || kv.compare(0, eq, "expires") == 0))
        d[kv.substr(0, eq)] = std::strtoull(kv.c_str() + eq + 1, nullptr, 10);
      pos = comma + 1;
    }
    out[k.substr(2)] = d;
  }
  return out;
}

// What the RDB reader found in the stream: exact key counts and the key-sample digest
// that verification compares later. A corrupt RDB rejects the backup, and so does one
// holding module data unless the options allow it; one using a type this reader does
// not know is kept, marked unverified.
nlohmann::json rdb_facts(redis::RdbSummaryObserver& check, const std::string& described, bool allow_modules,
                         const RunContext& ctx) {
  redis::RdbSummary s;
  try {
    s = check.result();
  } catch (const Error& e) {
    if (e.code() != Code::unsupported)
      throw Error(Code::dump_failed, fmt::format("{} is not a valid RDB: {}", described, e.what()));
    if (ctx.log) ctx.log(LogLevel::warning, fmt::format("cannot verify {}: {}", described, e.what()));
    return {{"verified", false}, {"reason", e.what()}};
  }
  if (uint64_t extra = check.trailing_bytes())
    throw Error(Code::dump_failed, fmt::format("{} is not a valid RDB: {} bytes follow its end", described, extra));
  if ((!s.module_values.empty() || !s.module_aux.empty()) && !allow_modules) {
    std::string names;
    for (auto* m : {&s.module_values, &s.module_aux})
      for (auto& [name, n] : *m)
        if (names.find(name) == std::string::npos) names += (names.empty() ? "" : ", ") + name;
    throw Error(Code::dump_failed,
                fmt::format("{} holds data of the Redis module(s) {} ({} keys, {} aux records): only a server that loads "
                            "the same modules can restore it; allow module data (--allow-modules) to keep such a backup",
                            described, names, [&] { uint64_t n = 0; for (auto& [k, v] : s.module_values) n += v; return n; }(),
                            [&] { uint64_t n = 0; for (auto& [k, v] : s.module_aux) n += v; return n; }()));
  }
  nlohmann::json keys = nlohmann::json::object(), expires = nlohmann::json::object();
  for (auto& [db, n] : s.keys) keys[std::to_string(db)] = n;
  for (auto& [db, n] : s.expires) expires[std::to_string(db)] = n;
  nlohmann::json out = {{"verified", true},
                        {"keys", keys},
                        {"expires", expires},
                        {"types", s.types},
                        {"checksum_verified", s.checksum_verified},
                        {"key_sample", {{"size", s.sample}, {"sha256", s.sample_sha256}}},
                        {"functions", s.functions},
                        {"empty_keys_skipped", s.empty_keys_skipped}};
  if (!s.module_values.empty()) out["module_values"] = s.module_values;
  if (!s.module_aux.empty()) out["module_aux"] = s.module_aux;
  return out;
}

// The RDB check as the stream's observer: the first parse failure (or a byte past the
// RDB's end) stops the stream, so nothing more of a bad one is taken in.
class RdbStreamCheck final : public Observer {
 public:
  RdbStreamCheck(redis::RdbSummaryObserver& check, const std::string& described, bool allow_modules,
                 const RunContext& ctx)
      : check_(check), described_(described), allow_modules_(allow_modules), ctx_(ctx) {}
  void update(Bytes data) override {
    try {
      check_.update(data);
    } catch (const Error&) {
      rdb_facts(check_, described_, allow_modules_, ctx_);  // throws dump_failed, saying why
      throw;
    }
    if (uint64_t extra = check_.trailing_bytes())
      throw Error(Code::dump_failed, fmt::format("{} is not a valid RDB: {} bytes follow its end", described_, extra));
  }
  void finish() override { check_.finish(); }

 private:
  redis::RdbSummaryObserver& check_;
  const std::string& described_;
  bool allow_modules_;
  const RunContext& ctx_;
};

}  // namespace

namespace {

// The RDB stream with the session it comes from (the replication link is the session's
// socket; a BGSAVE's file is read after the session's work is done).
class RedisRdbSource final : public Source {
 public:
  RedisRdbSource(Conn conn, std::unique_ptr<Source> inner) : conn_(std::move(conn)), inner_(std::move(inner)) {}
  size_t read(MutBytes buf) override { return inner_->read(buf); }
  void abort() noexcept override { inner_->abort(); }

 private:
  Conn conn_;
  std::unique_ptr<Source> inner_;  // after conn_: goes first
};

// A server with repl-diskless-sync waits repl-diskless-sync-delay seconds before it starts
// a diskless transfer, so that more replicas can share it: the backup waits as long, and
// says so (it is the server's setting, not ours). Users without CONFIG rights get no note.
void warn_of_sync_delay(Conn& conn, const RunContext& ctx) {
  if (!ctx.log) return;
  try {
    if (conn.config_get("repl-diskless-sync") != "yes") return;
    std::string delay = conn.config_get("repl-diskless-sync-delay");
    if (delay.empty() || delay == "0") return;
    ctx.log(LogLevel::warning,
            fmt::format("Redis at {} waits repl-diskless-sync-delay ({} s) before it starts a diskless transfer, so "
                        "that other replicas can join it: this backup waits as long (set it to 0 on the server, or "
                        "use the bgsave mode where the server's RDB is readable here)",
                        conn.name(), delay));
  } catch (const Error&) {
  }
}

}  // namespace

std::unique_ptr<Source> redis_rdb_source(const RedisRdbSourceOptions& opts, const RunContext& ctx, RedisRdbInfo* info) {
  redis::Url url = redis::parse_url(opts.url, opts.password, opts.default_password);
  Conn conn = Conn::connect(url, opts.connect_timeout_s);
  auto server = conn.info("server");
  std::string version = server["redis_version"];

  RedisBackupMode mode = opts.mode;
  const bool chosen = mode == RedisBackupMode::auto_select;
  std::string dir, file;
  if (mode != RedisBackupMode::replication) {
    try {
      dir = conn.config_get("dir");
      file = conn.config_get("dbfilename");
    } catch (const Error& e) {
      if (mode == RedisBackupMode::bgsave) throw;
      if (ctx.log) ctx.log(LogLevel::info, fmt::format("cannot ask for the RDB's location ({}); using replication", e.what()));
    }
    if (mode == RedisBackupMode::auto_select) {
      bool here = !dir.empty() && is_loopback(url.host) && ::access(dir.c_str(), R_OK | X_OK) == 0;
      mode = here ? RedisBackupMode::bgsave : RedisBackupMode::replication;
      if (ctx.log)
        ctx.log(LogLevel::info, here ? fmt::format("Redis at {} keeps its RDB in {}, readable here: using BGSAVE", conn.name(), dir)
                                     : fmt::format("the RDB of Redis at {} is not readable here: using replication", conn.name()));
    }
  }
  nlohmann::json counts = keyspace(conn);

  std::unique_ptr<Source> source;
  std::string rdb_path;
  std::string described;
  if (mode == RedisBackupMode::bgsave) {
    if (file.find('/') != std::string::npos || file.empty())
      throw Error(Code::dump_failed, fmt::format("Redis at {} has an unusable dbfilename \"{}\"", conn.name(), file));
    rdb_path = dir + "/" + file;
    if (ctx.log) ctx.log(LogLevel::info, fmt::format("BGSAVE on Redis {} at {}", version, conn.name()));
    const std::time_t asked = std::time(nullptr);
    run_bgsave(conn, ctx, opts.save_timeout_s);
    int fd = ::open(rdb_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      throw sys_error(errno, fmt::format("opening {} saved by Redis at {} (use --mode replication when the server's "
                                         "files are not readable here)",
                                         rdb_path, conn.name()));
    // The file must be the one this save wrote: a server in a container shows its own dir,
    // and a path of that name here may hold something else (an old RDB, another server's).
    // Written after the save was asked for, then (2 s for coarse file times); however long
    // the save's own writes and fsync took.
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      int e = errno;
      ::close(fd);
      throw sys_error(e, fmt::format("reading {} saved by Redis at {}", rdb_path, conn.name()));
    }
    if (st.st_mtime + 2 < asked) {
      ::close(fd);
      std::string why = fmt::format("{} here was last written before Redis at {} was asked to save: it is not that "
                                    "server's RDB (a server in a container or on another host?)",
                                    rdb_path, conn.name());
      if (!chosen) throw Error(Code::dump_failed, why + "; use --mode replication");
      if (ctx.log) ctx.log(LogLevel::info, why + ": using replication");
      mode = RedisBackupMode::replication;
      rdb_path.clear();
    } else {
      source = make_fd_source(fd, true, rdb_path);
      described = rdb_path;
    }
  }
  if (mode == RedisBackupMode::replication) {
    redis::Reply capa = conn.command_raw({"REPLCONF", "capa", "eof"});
    if (capa->type == REDIS_REPLY_ERROR) {
      std::string msg = redis::to_string(capa.get());
      throw Error(msg.rfind("NOPERM", 0) == 0 ? Code::permission : Code::dump_failed,
                  fmt::format("Redis at {} refused REPLCONF (the user needs the right to replicate): {}", conn.name(), msg));
    }
    conn.command_raw({"REPLCONF", "rdb-only", "1"});  // Redis 7+: no command stream after the RDB; older ignore it
    warn_of_sync_delay(conn, ctx);
    if (ctx.log) ctx.log(LogLevel::info, fmt::format("syncing as a replica of Redis {} at {}", version, conn.name()));
    auto rs = std::make_unique<redis::ReplicationSource>(conn.fd(), conn.name(), opts.save_timeout_s, std::max(60, opts.connect_timeout_s), ctx.cancel);
    rs->start();
    if (ctx.log)
      ctx.log(LogLevel::info, rs->diskless() ? std::string("receiving a diskless RDB stream (ended by an EOF mark)")
                                             : fmt::format("receiving an RDB of {} bytes", rs->announced()));
    described = fmt::format("the replication stream of {}", conn.name());
    source = std::move(rs);
  }
  if (info) {
    info->server = conn.name();
    info->redis_version = version;
    info->mode = mode;
    info->keyspace = counts;
    info->rdb_path = rdb_path;
    info->described = described;
  }
  return std::make_unique<RedisRdbSource>(std::move(conn), std::move(source));
}

Manifest backup_redis(Repository& repo, const RedisBackupOptions& opts, const RunContext& ctx) {
  RedisRdbSourceOptions so;
  so.url = opts.url;
  so.password = opts.password;
  so.default_password = opts.default_password;
  so.mode = opts.mode;
  so.connect_timeout_s = opts.connect_timeout_s;
  so.save_timeout_s = opts.save_timeout_s;
  RedisRdbInfo info;
  std::unique_ptr<Source> source = redis_rdb_source(so, ctx, &info);
  const std::string& described = info.described;

  redis::RdbHeader header;
  ArtifactSpec spec;
  spec.kind = "redis";
  spec.dir = kind_directory("redis");
  spec.name_prefix = opts.name_prefix.empty() ? "redis" : opts.name_prefix;
  spec.extension = ".rdb";
  spec.format = "rdb";
  spec.compression = opts.compression;
  spec.level = opts.level;
  redis::RdbSummaryObserver check;
  RdbStreamCheck stream_check(check, described, opts.allow_modules, ctx);
  redis::TapSource observed(*source);
  observed.tap(header).tap(stream_check);
  return repo.publish(observed, spec, ctx, [&](Manifest& out) {
    int rdb_version = header.version(described);
    out.source_name = spec.name_prefix;
    out.source = {
        {"server", info.server},
        {"redis_version", info.redis_version},
        {"mode", redis_mode_name(info.mode)},
        {"rdb_version", rdb_version},
        {"keyspace", info.keyspace},
    };
    if (!info.rdb_path.empty()) out.source["rdb_path"] = info.rdb_path;
    out.source["rdb"] = rdb_facts(check, described, opts.allow_modules, ctx);
  });
}

}  // namespace mevbackup
