// Verifier: re-reads each artifact (size and SHA-256 of the stored bytes, full
// decompression, size and SHA-256 of the payload), then runs the kind's deeper check
// when asked (a PostgreSQL restore test), and records the outcome beside the backup.
#include <fmt/format.h>

#include "mevbackup/digest.hpp"
#include "mevbackup/kinds.hpp"
#include "mevbackup/lock.hpp"
#include "mevbackup/maintenance.hpp"

namespace mevbackup {

namespace {

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
    if (!m.encryption.empty() && (!ctx.encryption || ctx.encryption->identities.empty())) {
      // The backup host holds no identity (only public keys): what it can prove is that
      // the stored bytes are those the manifest names (age authenticates the rest when
      // it is decrypted). Said so in the record, and with --identity the whole check runs.
      auto info = repo.storage().stat(m.path);
      if (!info) throw Error(Code::not_found, fmt::format("artifact {} is missing", m.path));
      DigestSink sink;
      auto src = repo.storage().get(m.path);
      Pipeline(*src).run(sink, ctx.cancel, ctx.progress, ctx.pipeline);  // ctx: under verify()'s lock
      check("artifact", sink.count.count() == m.size && sink.sha.hex() == m.sha256,
            fmt::format("{} bytes, sha256 {} (manifest: {} bytes, sha256 {})", sink.count.count(), sink.sha.hex(),
                        m.size, m.sha256));
      for (auto& part : m.extra_parts()) {  // a base backup's other archives, a member list
        if (!repo.storage().stat(part.path)) throw Error(Code::not_found, fmt::format("{} is missing", part.path));
        DigestSink ps;
        auto psrc = repo.storage().get(part.path);
        Pipeline(*psrc).run(ps, ctx.cancel, ctx.progress, ctx.pipeline);
        check(part.path, ps.count.count() == part.size && ps.sha.hex() == part.sha256,
              fmt::format("{} bytes, sha256 {} (manifest: {} bytes, sha256 {})", ps.count.count(), ps.sha.hex(),
                          part.size, part.sha256));
      }
      v.checks.push_back({{"check", "contents"},
                          {"ok", true},
                          {"skipped", true},
                          {"detail", fmt::format("encrypted (age) to {} recipient(s); no identity given to decrypt "
                                                 "it (--identity), so only the stored bytes were checked",
                                                 m.recipients.size())}});
      if (ctx.log)
        ctx.log(LogLevel::warning, fmt::format("{} is encrypted and no identity was given: only its stored bytes "
                                               "were checked", m.id));
      v.ok = true;
      v.message = "stored bytes checked; contents not decrypted (no identity)";
      v.verified_at = format_rfc3339(repo.clock().now());
      return v;
    }
    const BackupKind* kind = find_kind(m.kind);  // null: a user kind, checksums only
    DigestSink sink;
    std::unique_ptr<PayloadCheck> payload;
    if (kind && kind->payload_check) sink.extra = (payload = kind->payload_check(m)).get();
    repo.restore_stream(m, sink, ctx);  // checks size and SHA-256 of the stored bytes
    if (payload) payload->finish();
    check("artifact", true, fmt::format("{} bytes, sha256 {}", m.size, m.sha256));
    check("payload size", sink.count.count() == m.payload_size,
          fmt::format("{} bytes decompressed, manifest says {}", sink.count.count(), m.payload_size));
    check("payload sha256", sink.sha.hex() == m.payload_sha256,
          fmt::format("{} (manifest {})", sink.sha.hex(), m.payload_sha256));
    if (payload) check(payload->name(), true, payload->result(ctx));
    if (kind && kind->verify) kind->verify(repo, m, ctx, check);
    if (kind && kind->restore_test) {
      restore_test = true;
      nlohmann::json checks = kind->restore_test(repo, m, opts, ctx);
      restore_test = !checks.empty();
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
    if (!repo.trusted(m)) {
      // Not a fault of the backup's bytes but of its origin: reported, not recorded
      // (a record beside a planted manifest would lend it weight).
      VerifyResult r{m.id, {}};
      r.verification.ok = false;
      r.verification.verified_at = format_rfc3339(repo.clock().now());
      r.verification.message = fmt::format("manifest signature check failed: {}", m.signature_problem);
      r.verification.checks.push_back({{"check", "manifest signature"}, {"ok", false}, {"detail", m.signature_problem}});
      if (gctx.log) gctx.log(LogLevel::error, fmt::format("FAILED {}: {}", m.id, r.verification.message));
      out.push_back(std::move(r));
      continue;
    }
    // The listing holds summaries; a restore test needs the whole manifest (row counts).
    Manifest full = which == "all" ? repo.load(m) : m;
    VerifyResult r{m.id, verify_one(repo, full, opts, gctx)};
    if (repo.signing() && repo.signing()->enforced())
      r.verification.checks.push_back(
          {{"check", "manifest signature"},
           {"ok", true},
           {"detail", fmt::format("signed by key {}", full.signature_record.value("key_id", "?"))}});
    if (gctx.log)
      gctx.log(r.verification.ok ? LogLevel::info : LogLevel::error,
              fmt::format("{} {}: {}", r.verification.ok ? "ok" : "FAILED", m.id, r.verification.message));
    if (opts.record) repo.record_verification(m, r.verification);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace mevbackup
