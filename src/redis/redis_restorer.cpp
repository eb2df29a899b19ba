// Redis Restorer, offline: the RDB is streamed out of the repository into a temporary
// file inside the stopped server's data directory, checked (size and SHA-256 against
// the manifest, RDB header and version), fsynced, and only then renamed over the
// server's dbfilename, between the optional `before` and `after` hooks.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>

#include <fmt/format.h>

#include "mevbackup/file_stream.hpp"
#include "mevbackup/redis.hpp"
#include "rdb_reader.hpp"
#include "redis_internal.hpp"
#include "../io/subprocess.hpp"

namespace mevbackup {

namespace redis {

// The RDB must parse (CRC-64 included) and hold the keys its manifest counted.
void verify_rdb(const Manifest& m, RdbSummaryObserver& check, const RunContext& ctx) {
  RdbSummary s;
  try {
    s = check.result();
  } catch (const Error& e) {
    if (e.code() == Code::unsupported) {
      if (ctx.log) ctx.log(LogLevel::warning, fmt::format("cannot verify backup {}: {}", m.id, e.what()));
      return;
    }
    throw Error(Code::corrupt, fmt::format("backup {} is not a valid RDB: {}; the target is untouched", m.id, e.what()));
  }
  const auto& rdb = m.source.value("rdb", nlohmann::json::object());
  if (!rdb.value("verified", false)) return;
  const nlohmann::json keys = rdb.value("keys", nlohmann::json::object());
  const nlohmann::json sample = rdb.value("key_sample", nlohmann::json::object());
  // Manifests written before empty collections were left out counted them as keys.
  const uint64_t old_empty = rdb.contains("empty_keys_skipped") ? 0 : s.empty_keys_skipped;
  uint64_t total_have = 0, total_said = 0;
  for (auto& [db, n] : keys.items()) {
    uint64_t have = s.keys.count(std::stoi(db)) ? s.keys.at(std::stoi(db)) : 0;
    uint64_t said = n.get<uint64_t>();
    total_have += have;
    total_said += said;
    if (have != said && !(old_empty && have < said))
      throw Error(Code::corrupt, fmt::format("backup {}: database {} holds {} keys, its manifest says {}", m.id, db, have,
                                             said));
  }
  if (old_empty && total_have + old_empty != total_said)
    throw Error(Code::corrupt, fmt::format("backup {}: it holds {} keys (and {} empty ones), its manifest says {}", m.id,
                                           total_have, old_empty, total_said));
  if (s.keys.size() > keys.size() || (!old_empty && s.keys.size() != keys.size()) ||
      (!old_empty && s.sample_sha256 != sample.value("sha256", "")))
    throw Error(Code::corrupt, fmt::format("backup {}: its keys do not match the manifest's sample", m.id));
  if (rdb.contains("functions") && rdb["functions"].get<uint64_t>() != s.functions)
    throw Error(Code::corrupt, fmt::format("backup {} holds {} function libraries, its manifest says {}", m.id, s.functions,
                                           rdb["functions"].get<uint64_t>()));
  if (old_empty && ctx.log)
    ctx.log(LogLevel::warning, fmt::format("backup {} counted {} empty collections as keys (Redis does not load them); "
                                           "its key sample was not compared", m.id, old_empty));
}

}  // namespace redis

namespace {

std::string join_argv(const std::vector<std::string>& argv) {
  std::string s;
  for (auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

void run_hook(const char* which, const std::vector<std::string>& argv, const RunContext& ctx) {
  if (argv.empty()) return;
  if (ctx.log) ctx.log(LogLevel::info, fmt::format("running the {} hook: {}", which, join_argv(argv)));
  SpawnOptions so;
  so.argv = argv;
  int rc;
  std::string err;
  try {
    Subprocess p(so);
    rc = p.wait();
    err = p.stderr_text();
  } catch (const Error& e) {
    throw Error(Code::restore_failed, fmt::format("the {} hook \"{}\" could not run: {}", which, argv[0], e.what()));
  }
  if (rc != 0)
    throw Error(Code::restore_failed, fmt::format("the {} hook \"{}\" {}{}{}", which, join_argv(argv), describe_exit(rc),
                                                  err.empty() ? "" : ": ", err));
}

// The RDB version the local redis-server can load, or 0 when there is none.
int local_redis_rdb_version() {
  auto path = find_in_path("redis-server");
  if (!path) return 0;
  ProgramOutput r = run_for_output({*path, "--version"});
  if (r.status != 0) return 0;
  auto v = r.out.find("v=");
  return v == std::string::npos ? 0 : rdb_version_for_redis(r.out.substr(v + 2));
}

// The RDB checked as it arrives, then published into the data directory by the library's
// one file sink (temporary file beside it, fsync, the `before` hook, rename, fsync of the
// directory).
class RdbFileSink final : public Sink {
 public:
  RdbFileSink(const RedisRestoreOptions& o, const Manifest& m, int max_version, const RunContext& ctx)
      : o_(o), m_(m), max_version_(max_version), ctx_(ctx) {
    target_ = o_.data_dir + "/" + o_.rdb_name;
    struct stat dst{};
    if (::stat(o_.data_dir.c_str(), &dst) != 0) throw sys_error(errno, "Redis data directory " + o_.data_dir);
    if (!S_ISDIR(dst.st_mode)) throw Error(Code::invalid_argument, fmt::format("{} is not a directory", o_.data_dir));
    // The server must be able to read what we leave: take the old file's owner and
    // mode, or the directory's owner and 0640.
    struct stat old{};
    bool have_old = ::stat(target_.c_str(), &old) == 0;
    uid_t uid = have_old ? old.st_uid : dst.st_uid;
    gid_t gid = have_old ? old.st_gid : dst.st_gid;
    mode_t mode = have_old ? (old.st_mode & 07777) : 0640;
    FileSinkOptions fo;
    fo.replace = true;
    fo.on_open = [this, uid, gid, mode](int fd, const std::string& tmp) {
      if (geteuid() == 0 && ::fchown(fd, uid, gid) != 0 && ctx_.log)
        ctx_.log(LogLevel::warning, fmt::format("cannot give {} to uid {}", tmp, uid));
      ::fchmod(fd, mode);
    };
    fo.before_publish = [this] { run_hook("before", o_.before, ctx_); };
    file_ = make_file_sink(target_, fo);
  }

  void write(Bytes data) override {
    header_.update(data);
    try {
      check_.update(data);
    } catch (const Error&) {
      verify();  // the parse failed: throws corrupt, naming the backup
      throw;
    }
    file_->write(data);
  }

  void commit() override {
    int v = header_.version("the restored RDB");
    if (max_version_ && v > max_version_)
      throw Error(Code::version_mismatch,
                  fmt::format("the backup holds an RDB of version {} but the target Redis loads at most version {}; "
                              "restore it into a newer Redis",
                              v, max_version_));
    verify();
    file_->commit();
    if (ctx_.log) ctx_.log(LogLevel::info, fmt::format("wrote {} (RDB version {})", target_, v));
    try {
      run_hook("after", o_.after, ctx_);
    } catch (const Error& e) {
      throw Error(e.code(), fmt::format("{} is in place, but {}", target_, e.what()));
    }
  }

  void abort() noexcept override { file_->abort(); }

 private:
  void verify() { redis::verify_rdb(m_, check_, ctx_); }

  RedisRestoreOptions o_;
  Manifest m_;
  int max_version_;
  RunContext ctx_;
  std::string target_;
  std::unique_ptr<Sink> file_;
  redis::RdbHeader header_;
  redis::RdbSummaryObserver check_;
};

}  // namespace

std::unique_ptr<Sink> redis_offline_sink(const RedisOfflineSinkOptions& opts, const RunContext& ctx) {
  if (opts.data_dir.empty()) throw Error(Code::invalid_argument, "no restore target: give the Redis data directory");
  if (opts.rdb_name.empty() || opts.rdb_name.find('/') != std::string::npos)
    throw Error(Code::invalid_argument, fmt::format("bad RDB file name \"{}\"", opts.rdb_name));
  int max_version = opts.target_rdb_version ? opts.target_rdb_version : local_redis_rdb_version();
  Manifest m;
  if (opts.backup) {
    m = *opts.backup;
  } else {
    m.kind = "redis";
    m.id = "(RDB stream)";
  }
  int manifest_version = m.source.value("rdb_version", 0);
  if (max_version && manifest_version > max_version)
    throw Error(Code::version_mismatch,
                fmt::format("backup {} holds an RDB of version {} but the target Redis loads at most version {}; restore "
                            "it into a newer Redis",
                            m.id, manifest_version, max_version));
  if (ctx.log) ctx.log(LogLevel::info, fmt::format("restoring {} into {}/{}", m.id, opts.data_dir, opts.rdb_name));
  return std::make_unique<RdbFileSink>(opts, m, max_version, ctx);
}

void restore_redis(Repository& repo, const Manifest& backup, const RedisRestoreOptions& opts, const RunContext& ctx) {
  if (backup.kind != "redis")
    throw Error(Code::invalid_argument, fmt::format("backup {} is a {} backup, not a redis one", backup.id, backup.kind));
  if (!opts.redis_url.empty()) {
    if (!opts.data_dir.empty()) throw Error(Code::invalid_argument, "give either a data directory or a Redis URL, not both");
    redis::restore_live(repo, backup, opts, ctx);
    return;
  }
  RedisOfflineSinkOptions so;
  static_cast<RedisRestoreOptions&>(so) = opts;
  so.backup = backup;
  std::unique_ptr<Sink> sink = redis_offline_sink(so, ctx);
  repo.restore_stream(backup, *sink, ctx);
}

}  // namespace mevbackup

namespace mevbackup {

struct RdbPayloadCheck::Impl {
  explicit Impl(Manifest mm) : m(std::move(mm)) {}
  Manifest m;
  redis::RdbSummaryObserver obs;
};

RdbPayloadCheck::RdbPayloadCheck(Manifest m) : impl_(std::make_unique<Impl>(std::move(m))) {}
RdbPayloadCheck::~RdbPayloadCheck() = default;
void RdbPayloadCheck::update(Bytes data) {
  try {
    impl_->obs.update(data);
  } catch (const Error&) {
    redis::verify_rdb(impl_->m, impl_->obs, RunContext{});  // throws corrupt, naming the backup
    throw;
  }
}
void RdbPayloadCheck::finish() { impl_->obs.finish(); }

std::string RdbPayloadCheck::verify(const RunContext& ctx) {
  redis::verify_rdb(impl_->m, impl_->obs, ctx);
  const auto& keys = impl_->m.source.value("rdb", nlohmann::json::object()).value("keys", nlohmann::json::object());
  uint64_t total = 0;
  for (auto& [db, n] : keys.items()) total += n.get<uint64_t>();
  return fmt::format("RDB parses, CRC-64 checked, {} keys in {} databases as the manifest says", total, keys.size());
}

}  // namespace mevbackup
