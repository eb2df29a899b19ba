// Redis Restorer, live: the RDB is verified in a first pass (nothing touches the
// target), then read again and each key sent as RESTORE key ttl payload [REPLACE]
// ABSTTL, its DUMP payload built from the RDB value bytes, many commands in flight.
#include <chrono>
#include <deque>
#include <optional>

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
  void write(Bytes data) override {
    try {
      check_.update(data);
    } catch (const Error&) {
      verify_rdb(m_, check_, ctx_);  // the parse failed: throws corrupt, naming the backup
      throw;
    }
  }
  void commit() override { verify_rdb(m_, check_, ctx_); }
  void abort() noexcept override {}

 private:
  const Manifest& m_;
  const RunContext& ctx_;
  RdbSummaryObserver check_;
};

// An RDB length prefix (6, 14, 32 or 64 bits), as rdbSaveLen writes it.
std::string rdb_length(uint64_t n) {
  std::string out;
  if (n < 64) {
    out += static_cast<char>(n);
  } else if (n < 16384) {
    out += static_cast<char>(0x40 | (n >> 8));
    out += static_cast<char>(n & 0xff);
  } else {
    int bytes = n <= 0xffffffffull ? 4 : 8;
    out += static_cast<char>(bytes == 4 ? 0x80 : 0x81);
    for (int i = bytes - 1; i >= 0; --i) out += static_cast<char>((n >> (8 * i)) & 0xff);
  }
  return out;
}

// Restore pass: the reader runs on its own thread and sends the RESTOREs (and one
// FUNCTION RESTORE for the function libraries, before the first key).
class RestoreSink final : public Sink {
 public:
  // rdb_version 0: the stream's own, refused when above can_load (0: not checked).
  RestoreSink(Conn& conn, const RedisRestoreOptions& o, int rdb_version, int can_load = 0)
      : conn_(conn), o_(o), rdb_version_(rdb_version), can_load_(can_load), parse_([this](Source& s) { run(s); }) {}
  void write(Bytes data) override { parse_.update(data); }
  void commit() override { parse_.result(); }
  void abort() noexcept override {}
  uint64_t restored() const { return restored_; }
  uint64_t skipped() const { return skipped_; }
  uint64_t functions() const { return functions_; }

 private:
  void run(Source& src) {
    try {
      restore_all(src);
    } catch (const Error& e) {
      if (e.code() == Code::cancelled) throw;
      throw Error(e.code(), fmt::format("{}; {}", e.what(), state()), e.retriable());
    }
  }

  void restore_all(Source& src) {
    RdbReader r(src);
    r.keep_functions(true);
    if (rdb_version_ <= 0) {
      rdb_version_ = r.version();
      if (can_load_ && rdb_version_ > can_load_)
        throw Error(Code::version_mismatch,
                    fmt::format("the stream holds an RDB of version {} but Redis at {} loads at most version {}; "
                                "restore it into a newer Redis",
                                rdb_version_, conn_.name(), can_load_));
    }
    RdbEntry e;
    int current_db = -1;
    while (r.next(e, true)) {
      send_functions(r);
      auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch()).count();
      if (e.expire_ms >= 0 && e.expire_ms <= now_ms) {
        ++skipped_;
        continue;
      }
      if (e.db != current_db) {
        send({"SELECT", std::to_string(e.db)}, fmt::format("selecting database {}", e.db), false);
        current_db = e.db;
      }
      std::vector<std::string> cmd = {"RESTORE", e.key, e.expire_ms >= 0 ? std::to_string(e.expire_ms) : "0",
                                      dump_payload(e.type, e.value, rdb_version_)};
      if (o_.replace || o_.flush) cmd.push_back("REPLACE");
      if (e.expire_ms >= 0) cmd.push_back("ABSTTL");
      send(cmd, fmt::format("restoring key \"{}\" of database {}", printable(e.key), e.db), true);
    }
    send_functions(r);
    drain(0);
  }

  // All libraries in one payload, as FUNCTION DUMP makes it: per library the
  // FUNCTION2 opcode and its code as an RDB string, then the RDB version and CRC-64.
  void send_functions(RdbReader& r) {
    std::vector<std::string> libs = r.take_functions();
    if (libs.empty()) return;
    std::string p;
    for (auto& code : libs) p += '\xf5' + rdb_length(code.size()) + code;
    p += static_cast<char>(rdb_version_ & 0xff);
    p += static_cast<char>((rdb_version_ >> 8) & 0xff);
    uint64_t crc = crc64(0, p.data(), p.size());
    for (int i = 0; i < 8; ++i) p += static_cast<char>((crc >> (8 * i)) & 0xff);
    // --flush emptied the target's libraries first (FUNCTION FLUSH); --replace
    // overwrites libraries of the same name; else one already there is an error.
    send({"FUNCTION", "RESTORE", p, o_.replace ? "REPLACE" : "APPEND"},
         fmt::format("restoring {} function librar{}", libs.size(), libs.size() == 1 ? "y" : "ies"), false);
    drain(0);
    functions_ += libs.size();
  }

  void send(const std::vector<std::string>& cmd, std::string what, bool key) {
    size_t bytes = 0;
    for (auto& a : cmd) bytes += a.size();
    conn_.append(cmd);
    pending_.push_back({std::move(what), bytes, key});
    pending_bytes_ += bytes;
    if (pending_.size() >= 512 || pending_bytes_ >= (8u << 20)) drain(pending_.size() / 2);
  }

  // Reads replies until at most `keep` commands are still in flight. On an error
  // reply the remaining replies are read too: the server ran those commands, and the
  // count of keys that went in must be exact.
  void drain(size_t keep) {
    std::string failure;
    while (pending_.size() > (failure.empty() ? keep : 0)) {
      Reply r;
      try {
        r = conn_.get_reply();
      } catch (...) {
        conn_ok_ = false;
        throw;
      }
      Pending p = std::move(pending_.front());
      pending_.pop_front();
      pending_bytes_ -= p.bytes;
      if (r->type == REDIS_REPLY_ERROR) {
        if (failure.empty()) failure = fmt::format("Redis at {} failed {}: {}", conn_.name(), p.what, to_string(r.get()));
      } else if (p.key) {
        ++restored_;
      }
    }
    if (!failure.empty()) throw Error(Code::restore_failed, failure);
  }

  // What the target holds now, for the message of a restore that failed midway.
  std::string state() const {
    std::string went_in =
        conn_ok_ ? fmt::format("{} of the backup's keys went in", restored_)
                 : fmt::format("at least {} of the backup's keys went in ({} more were sent, unconfirmed)", restored_,
                               pending_.size());
    if (functions_) went_in += fmt::format(", and its {} function libraries", functions_);
    if (o_.flush)
      return went_in + "; the target was emptied first (--flush), so it holds only those now: restore again with --flush";
    if (o_.replace)
      return went_in + "; they replaced keys of the same name (--replace), the target's other keys are as they were";
    return went_in + "; the target held no keys before, so it holds only those now";
  }

  struct Pending {
    std::string what;
    size_t bytes;
    bool key;
  };
  Conn& conn_;
  const RedisRestoreOptions& o_;
  int rdb_version_;
  int can_load_;
  std::deque<Pending> pending_;
  size_t pending_bytes_ = 0;
  uint64_t restored_ = 0, skipped_ = 0, functions_ = 0;
  bool conn_ok_ = true;
  RdbSummaryObserver parse_;  // last: its thread must stop before the members above go
};

size_t library_count(Conn& conn) {
  Reply r = conn.command_raw({"FUNCTION", "LIST"});
  return r->type == REDIS_REPLY_ARRAY ? r->elements : 0;  // no FUNCTION command (Redis < 7): none
}

uint64_t total_keys(Conn& conn) {
  uint64_t n = 0;
  for (auto& [k, v] : conn.info("keyspace"))
    if (k.rfind("db", 0) == 0 && v.rfind("keys=", 0) == 0) n += std::strtoull(v.c_str() + 5, nullptr, 10);
  return n;
}

// The sink with its own session to the target, checked before the first byte.
class LiveSink final : public Sink {
 public:
  LiveSink(const RedisLiveSinkOptions& o, const RunContext& ctx, RedisLiveResult* result)
      : o_(o), log_(ctx.log), result_(result) {
    Url url = parse_url(o_.redis_url, o_.password, o_.default_password);
    conn_.emplace(Conn::connect(url, o_.connect_timeout_s));
    Conn& conn = *conn_;
    std::string version = conn.info("server")["redis_version"];
    int can_load = rdb_version_for_redis(version);
    int rdb_version = 0;
    const nlohmann::json rdb = o_.backup ? o_.backup->source.value("rdb", nlohmann::json::object()) : nlohmann::json::object();
    if (o_.backup) {
      const Manifest& backup = *o_.backup;
      rdb_version = backup.source.value("rdb_version", 0);
      if (rdb_version <= 0) throw Error(Code::corrupt, fmt::format("backup {}: its manifest has no RDB version", backup.id));
      if (can_load && rdb_version > can_load)
        throw Error(Code::version_mismatch,
                    fmt::format("backup {} holds an RDB of version {} but Redis {} at {} loads at most version {}; "
                                "restore it into a newer Redis",
                                backup.id, rdb_version, version, conn.name(), can_load));
    }
    if (!o_.replace && !o_.flush) {
      if (uint64_t existing = total_keys(conn))
        throw Error(Code::not_empty, fmt::format("Redis at {} already holds {} keys; use --replace (overwrite keys of "
                                                 "the same name) or --flush (empty it first)",
                                                 conn.name(), existing));
      size_t libraries = library_count(conn);
      if (libraries && (!o_.backup || rdb.value("functions", uint64_t(0))))
        throw Error(Code::not_empty, fmt::format("Redis at {} already holds {} function libraries{}; use --replace "
                                                 "(overwrite libraries of the same name) or --flush (empty it first)",
                                                 conn.name(), libraries,
                                                 o_.backup ? fmt::format(" and backup {} has some", o_.backup->id) : ""));
    }
    inner_.emplace(conn, o_, rdb_version, can_load);
  }
  void write(Bytes data) override { inner_->write(data); }
  void commit() override {
    inner_->commit();
    if (result_) *result_ = {inner_->restored(), inner_->skipped(), inner_->functions()};
    if (log_)
      log_(LogLevel::info, fmt::format("restored {} keys and {} function libraries into {} ({} already expired, skipped)",
                                       inner_->restored(), inner_->functions(), conn_->name(), inner_->skipped()));
  }
  void abort() noexcept override { inner_->abort(); }

 private:
  RedisLiveSinkOptions o_;
  LogFn log_;
  RedisLiveResult* result_;
  std::optional<Conn> conn_;
  std::optional<RestoreSink> inner_;  // last: uses conn_ and o_
};

}  // namespace

void restore_live(Repository& repo, const Manifest& backup, const RedisRestoreOptions& opts, const RunContext& ctx) {
  Url url = parse_url(opts.redis_url, opts.password, opts.default_password);
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
  const auto& rdb = backup.source.value("rdb", nlohmann::json::object());
  size_t libraries = library_count(conn);
  if (libraries && rdb.value("functions", uint64_t(0)) && !opts.replace && !opts.flush)
    throw Error(Code::not_empty, fmt::format("Redis at {} already holds {} function libraries and backup {} has some; use "
                                             "--replace (overwrite libraries of the same name) or --flush (empty it first)",
                                             conn.name(), libraries, backup.id));
  if (rdb.contains("module_aux") && !rdb["module_aux"].empty())
    throw Error(Code::unsupported,
                fmt::format("backup {} holds aux data of the module(s) {}, which a live restore (RESTORE) cannot carry; "
                            "restore it into a stopped server (--data-dir) that loads the module",
                            backup.id, rdb["module_aux"].dump()));

  if (ctx.log) ctx.log(LogLevel::info, fmt::format("verifying {} before restoring it into {}", backup.id, conn.name()));
  {
    CheckSink check(backup, ctx);
    repo.restore_stream(backup, check, ctx);
  }
  if (opts.flush && existing) {
    if (ctx.log) ctx.log(LogLevel::info, fmt::format("emptying Redis at {} (FLUSHALL)", conn.name()));
    conn.command({"FLUSHALL"}, Code::restore_failed);
  }
  if (opts.flush && libraries) {
    if (ctx.log) ctx.log(LogLevel::info, fmt::format("removing the function libraries of Redis at {} (FUNCTION FLUSH)", conn.name()));
    conn.command({"FUNCTION", "FLUSH"}, Code::restore_failed);
  }
  // The restore pass through the live sink (its own session; the checks above hold).
  RedisLiveSinkOptions so;
  static_cast<RedisRestoreOptions&>(so) = opts;
  so.backup = backup;
  std::unique_ptr<Sink> sink = redis_live_sink(so, ctx);
  repo.restore_stream(backup, *sink, ctx);
}

}  // namespace mevbackup::redis

namespace mevbackup {

std::unique_ptr<Sink> redis_live_sink(const RedisLiveSinkOptions& opts, const RunContext& ctx, RedisLiveResult* result) {
  if (opts.redis_url.empty()) throw Error(Code::invalid_argument, "no Redis URL to restore into");
  return std::make_unique<redis::LiveSink>(opts, ctx, result);
}

}  // namespace mevbackup
