// Verifier: re-reads each artifact (size and SHA-256 of the stored bytes, full
// decompression, size and SHA-256 of the payload), then runs the kind's deeper check
// when asked (a PostgreSQL restore test), and records the outcome beside the backup.
#include <fmt/format.h>

#include "mevbackup/digest.hpp"
#include "mevbackup/lock.hpp"
#include "mevbackup/maintenance.hpp"
#include "mevbackup/pitr.hpp"
#include "mevbackup/postgres.hpp"
#include "mevbackup/redis.hpp"

namespace mevbackup {

namespace {

// Hashes the decompressed payload and throws it away.
class DigestSink final : public Sink {
 public:
  void write(Bytes data) override {
    sha.update(data);
    count.update(data);
    if (extra) extra->update(data);
  }
  void commit() override { sha.finish(); }
  void abort() noexcept override {}
  Sha256 sha;
  ByteCounter count;
  Observer* extra = nullptr;  // a kind's own check of the payload
};

// PITR base backups: every other part re-read like the main one, then the WAL archive
// checked for gaps from the backup's start segment to the newest archived one.
template <class Check>
void verify_basebackup(Repository& repo, const Manifest& m, const RunContext& ctx, Check& check) {
  for (auto& p : pitr::basebackup_parts(m)) {
    if (p.stored.path == m.path) continue;
    DigestSink sink;
    repo.restore_stream(p.stored, sink, ctx);
    check(p.name, sink.count.count() == p.stored.payload_size && sink.sha.hex() == p.stored.payload_sha256,
          fmt::format("{}: {} bytes, sha256 {}", p.stored.path, p.stored.size, p.stored.sha256));
  }
  uint64_t seg = m.source.at("wal_segment_size").get<uint64_t>();
  auto tli = static_cast<uint32_t>(m.source.at("start_timeline").get<long long>());
  uint64_t start = pitr::parse_lsn(m.source.at("start_lsn").get<std::string>());
  std::string stop_seg = m.source.at("stop_segment").get<std::string>();
  pitr::WalContinuity c = pitr::wal_continuity(repo.storage(), tli, start, seg);
  std::string gaps;
  for (auto& g : c.gaps) gaps += fmt::format("{}{}", gaps.empty() ? "" : ", ", g.first == g.last ? g.first : g.first + ".." + g.last);
  bool reaches_stop = !c.newest_segment.empty() &&
                      pitr::wal_segment_number(c.newest_segment, seg) >= pitr::wal_segment_number(stop_seg, seg);
  if (!gaps.empty())
    check("wal continuity", false, fmt::format("archived WAL from {} to {} has gaps: {} missing", c.first_segment,
                                                c.newest_segment, gaps));
  check("wal continuity", reaches_stop,
        reaches_stop ? fmt::format("WAL archived without gaps from {} to {}", c.first_segment, c.newest_segment)
                     : fmt::format("the WAL archive does not reach the backup's end segment {} (newest archived: {})",
                                   stop_seg, c.newest_segment.empty() ? "none" : c.newest_segment));
}

// Faults of the backup itself: its bytes are wrong or missing, or the restore of them
// failed. Anything else (a refused connection, bad credentials, a storage timeout, a
// mistyped query, a full disk) says nothing about the backup: recording it as a failed
// verification would let retention delete good backups (retention.hpp).
bool backup_fault(Code c, bool restore_test) {
  if (c == Code::corrupt || c == Code::restore_failed) return true;
  return c == Code::not_found && !restore_test;  // the artifact is missing from storage
}

Verification verify_one(Repository& repo, const Manifest& m, const VerifyOptions& opts, const RunContext& ctx) {
  Verification v;
  bool restore_test = false;
  auto check = [&](const std::string& name, bool ok, const std::string& detail) {
    v.checks.push_back({{"check", name}, {"ok", ok}, {"detail", detail}});
    if (!ok) throw Error(Code::corrupt, fmt::format("{}: {}", name, detail));
  };
  try {
    DigestSink sink;
    std::unique_ptr<RdbPayloadCheck> rdb;
    if (m.kind == "redis") sink.extra = (rdb = std::make_unique<RdbPayloadCheck>(m)).get();
    repo.restore_stream(m, sink, ctx);  // checks size and SHA-256 of the stored bytes
    if (rdb) rdb->finish();
    check("artifact", true, fmt::format("{} bytes, sha256 {}", m.size, m.sha256));
    check("payload size", sink.count.count() == m.payload_size,
          fmt::format("{} bytes decompressed, manifest says {}", sink.count.count(), m.payload_size));
    check("payload sha256", sink.sha.hex() == m.payload_sha256,
          fmt::format("{} (manifest {})", sink.sha.hex(), m.payload_sha256));
    if (rdb) check("rdb", true, rdb->verify(ctx));
    if (m.kind == "basebackup") verify_basebackup(repo, m, ctx, check);
    if (m.kind == "postgres" && !opts.restore_test_conninfo.empty()) {
      restore_test = true;
      nlohmann::json checks = restore_test_postgres(repo, m, opts.restore_test_conninfo, opts.queries, ctx);
      for (auto& c : checks) v.checks.push_back(c);
      for (auto& c : checks) {
        if (c.value("ok", false)) continue;
        std::string what = fmt::format("{}: {}", c.value("check", "restore test"), c.value("detail", ""));
        // A query that fails to run is the caller's (a typo, a missing extension); a
        // wrong row count is the backup's.
        if (c.value("check", "") == "query")
          throw Error(Code::invalid_argument, fmt::format("query \"{}\" failed: {}", c.value("query", ""),
                                                          c.value("detail", "")));
        throw Error(Code::corrupt, what);
      }
    }
    v.ok = true;
    v.message = fmt::format("{} checks passed", v.checks.size());
  } catch (const Error& e) {
    if (e.code() == Code::cancelled || e.code() == Code::locked) throw;
    if (!backup_fault(e.code(), restore_test))
      throw Error(e.code(),
                  fmt::format("could not verify {}: {} (not a fault of the backup: nothing recorded)", m.id, e.what()),
                  e.retriable());
    v.ok = false;
    v.message = e.what();
  }
  v.verified_at = format_rfc3339(repo.clock().now());
  return v;
}

}  // namespace

std::vector<VerifyResult> verify(Repository& repo, const std::string& which, const VerifyOptions& opts,
                                 const RunContext& ctx) {
  RepositoryLock lock(repo.storage(), LockKind::shared, ctx);
  const RunContext gctx = lock.guard(ctx);  // cancelled if the lock is lost
  std::vector<Manifest> targets;
  if (which == "all") targets = repo.list(opts.kind, gctx.log);
  else targets.push_back(repo.find(which, opts.kind, opts.source, gctx.log));
  std::vector<VerifyResult> out;
  for (auto& m : targets) {
    if (gctx.cancel) gctx.cancel->check();
    // The listing holds summaries; a restore test needs the whole manifest (row counts).
    Manifest full = which == "all" ? repo.load(m) : m;
    VerifyResult r{m.id, verify_one(repo, full, opts, gctx)};
    if (gctx.log)
      gctx.log(r.verification.ok ? LogLevel::info : LogLevel::error,
              fmt::format("{} {}: {}", r.verification.ok ? "ok" : "FAILED", m.id, r.verification.message));
    if (opts.record) repo.record_verification(m, r.verification);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace mevbackup
