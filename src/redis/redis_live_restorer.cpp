// Redis Restorer, live: the RDB is verified in a first pass (nothing touches the
// target), then read again and each key sent as RESTORE key ttl payload [REPLACE]
// ABSTTL, its DUMP payload built from the RDB value bytes, many commands in flight.
#include <chrono>
#include <deque>

#include <fmt/format.h>

#include "rdb_reader.hpp"
#include "redis_conn.hpp"
#include "redis_internal.hpp"

namespace mevbackup::redis {

namespace {

std::string printable(const std::string& key) {
  std::string out;
  for (unsigned char c : key.substr(0, 80)) {
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') out += static_cast<char>(c);
    else out += fmt::format("\\x{:02x}", c);
  }
  return key.size() > 80 ? out + "..." : out;
}

// Verification pass: the bytes only go through the reader.
class CheckSink final : public Sink {
 public:
  CheckSink(const Manifest& m, const RunContext& ctx) : m_(m), ctx_(ctx) {}
  void write(Bytes data) override { check_.update(data); }
  void commit() override { verify_rdb(m_, check_, ctx_); }
  void abort() noexcept override {}

 private:
  const Manifest& m_;
  const RunContext& ctx_;
  RdbSummaryObserver check_;
};

// Restore pass: the reader runs on its own thread and sends the RESTOREs.
class RestoreSink final : public Sink {
 public:
  RestoreSink(Conn& conn, const RedisRestoreOptions& o, int rdb_version)
      : conn_(conn), o_(o), rdb_version_(rdb_version), parse_([this](Source& s) { run(s); }) {}
  void write(Bytes data) override { parse_.update(data); }
  void commit() override { parse_.result(); }
  void abort() noexcept override {}
  uint64_t restored() const { return restored_; }
  uint64_t skipped() const { return skipped_; }

 private:
  void run(Source& src) {
    RdbReader r(src);
    RdbEntry e;
    int current_db = -1;
    while (r.next(e, true)) {
      auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch()).count();
      if (e.expire_ms >= 0 && e.expire_ms <= now_ms) {
        ++skipped_;
        continue;
      }
      if (e.db != current_db) {
        send({"SELECT", std::to_string(e.db)}, fmt::format("selecting database {}", e.db));
        current_db = e.db;
      }
      std::vector<std::string> cmd = {"RESTORE", e.key, e.expire_ms >= 0 ? std::to_string(e.expire_ms) : "0",
                                      dump_payload(e.type, e.value, rdb_version_)};
      if (o_.replace || o_.flush) cmd.push_back("REPLACE");
      if (e.expire_ms >= 0) cmd.push_back("ABSTTL");
      send(cmd, fmt::format("restoring key \"{}\" of database {}", printable(e.key), e.db));
      ++restored_;
    }
    drain(0);
  }

  void send(const std::vector<std::string>& cmd, std::string what) {
    size_t bytes = 0;
    for (auto& a : cmd) bytes += a.size();
    conn_.append(cmd);
    pending_.emplace_back(std::move(what), bytes);
    pending_bytes_ += bytes;
    if (pending_.size() >= 512 || pending_bytes_ >= (8u << 20)) drain(pending_.size() / 2);
  }

  // Reads replies until at most `keep` commands are still in flight.
  void drain(size_t keep) {
    while (pending_.size() > keep) {
      Reply r = conn_.get_reply();
      auto [what, bytes] = pending_.front();
      pending_.pop_front();
      pending_bytes_ -= bytes;
      if (r->type == REDIS_REPLY_ERROR)
        throw Error(Code::restore_failed,
                    fmt::format("Redis at {} failed {}: {}", conn_.name(), what, to_string(r.get())));
    }
  }

  Conn& conn_;
  const RedisRestoreOptions& o_;
  int rdb_version_;
  std::deque<std::pair<std::string, size_t>> pending_;
  size_t pending_bytes_ = 0;
  uint64_t restored_ = 0, skipped_ = 0;
  RdbSummaryObserver parse_;  // last: its thread must stop before the members above go
};

uint64_t total_keys(Conn& conn) {
  uint64_t n = 0;
  for (auto& [k, v] : conn.info("keyspace"))
    if (k.rfind("db", 0) == 0 && v.rfind("keys=", 0) == 0) n += std::strtoull(v.c_str() + 5, nullptr, 10);
  return n;
}

}  // namespace

void restore_live(Repository& repo, const Manifest& backup, const RedisRestoreOptions& opts, const RunContext& ctx) {
  Url url = parse_url(opts.redis_url, opts.password);
  Conn conn = Conn::connect(url, opts.connect_timeout_s);
  std::string version = conn.info("server")["redis_version"];
  int can_load = rdb_version_for_redis(version);
  int rdb_version = backup.source.value("rdb_version", 0);
  if (rdb_version <= 0) throw Error(Code::corrupt, fmt::format("backup {}: its manifest has no RDB version", backup.id));
  if (can_load && rdb_version > can_load)
    throw Error(Code::version_mismatch,
                fmt::format("backup {} holds an RDB of version {} but Redis {} at {} loads at most version {}; restore "
                            "it into a newer Redis",
                            backup.id, rdb_version, version, conn.name(), can_load));
  uint64_t existing = total_keys(conn);
  if (existing && !opts.replace && !opts.flush)
    throw Error(Code::not_empty, fmt::format("Redis at {} already holds {} keys; use --replace (overwrite keys of the "
                                             "same name) or --flush (empty it first)",
                                             conn.name(), existing));

  if (ctx.log) ctx.log(LogLevel::info, fmt::format("verifying {} before restoring it into {}", backup.id, conn.name()));
  {
    CheckSink check(backup, ctx);
    repo.restore_stream(backup, check, ctx);
  }
  if (opts.flush && existing) {
    if (ctx.log) ctx.log(LogLevel::info, fmt::format("emptying Redis at {} (FLUSHALL)", conn.name()));
    conn.command({"FLUSHALL"}, Code::restore_failed);
  }
  RestoreSink sink(conn, opts, rdb_version);
  repo.restore_stream(backup, sink, ctx);
  if (ctx.log)
    ctx.log(LogLevel::info, fmt::format("restored {} keys into {} ({} already expired, skipped)", sink.restored(),
                                        conn.name(), sink.skipped()));
}

}  // namespace mevbackup::redis
