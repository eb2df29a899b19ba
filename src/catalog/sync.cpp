#include "mevbackup/sync.hpp"

#include <fmt/format.h>

#include "mevbackup/digest.hpp"
#include "mevbackup/file_stream.hpp"
#include "mevbackup/lock.hpp"

namespace mevbackup {

namespace {

// Reads `m`'s artifact from `src` into `sink`, refusing to commit unless the bytes match
// the manifest.
void copy_checked(Storage& src, const Manifest& m, Sink& sink, const RunContext& ctx) {
  auto in = src.get(m.path);
  Sha256 sha;
  ByteCounter n;
  Pipeline p(*in);
  p.observe(sha).observe(n);
  p.before_commit([&] {
    if (n.count() != m.size || sha.hex() != m.sha256)
      throw Error(Code::corrupt,
                  fmt::format("{} in {}: {} bytes with SHA-256 {}, but its manifest says {} bytes with SHA-256 {}; "
                              "not copied",
                              m.path, src.describe(), n.count(), sha.hex(), m.size, m.sha256));
  });
  PipelineOptions po = ctx.pipeline;
  if (!*po.stage_name) po.stage_name = "sync";
  p.run(sink, ctx.cancel, ctx.progress, po);
}

// The other stored objects of a backup (Manifest::extra_parts), each described as a
// Manifest for copy_checked.
std::vector<Manifest> extra_parts(const Manifest& m) {
  std::vector<Manifest> out;
  for (auto& part : m.extra_parts()) {
    Manifest p = m;
    p.path = part.path;
    p.size = part.size;
    p.sha256 = part.sha256;
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

SyncResult sync_repositories(Repository& from, Repository& to, const std::string& kind, const RunContext& ctx) {
  SyncResult r;
  Storage& src = from.storage();
  Storage& dst = to.storage();
  // Shared on both sides: a prune of either waits (what is read must stay, what is being
  // copied must not be taken for an abandoned upload); both guard the run.
  RepositoryLock from_lock(src, LockKind::shared, ctx);
  RepositoryLock to_lock(dst, LockKind::shared, ctx);
  const RunContext gctx = to_lock.guard(from_lock.guard(ctx));
  for (const Manifest& m : from.list(kind, gctx.log)) {
    if (gctx.cancel) gctx.cancel->check();
    if (dst.stat(m.key())) {
      ++r.present;
      continue;
    }
    std::string manifest_text = src.read_small(m.key(), 64 << 20);
    // Parts first: the manifest, written last, must find every one of them in place.
    for (const Manifest& part : extra_parts(m)) {
      if (dst.stat(part.path)) {
        copy_checked(dst, part, *make_null_sink(), gctx);
      } else {
        auto sink = dst.put(part.path);
        copy_checked(src, part, *sink, gctx);
        r.bytes += part.size;
      }
    }
    if (auto existing = dst.stat(m.path)) {
      // Left by an interrupted sync: keep it only if it is exactly the backup's bytes.
      copy_checked(dst, m, *make_null_sink(), gctx);
      if (gctx.log) gctx.log(LogLevel::info, fmt::format("{} was already in {} and matches its manifest", m.path, dst.describe()));
    } else {
      auto sink = dst.put(m.path);
      copy_checked(src, m, *sink, gctx);
      r.bytes += m.size;
    }
    try {
      dst.write_small(m.key(), manifest_text);
    } catch (...) {
      try {
        dst.remove(m.path);
      } catch (...) {
      }
      throw;
    }
    if (gctx.log) gctx.log(LogLevel::info, fmt::format("copied {} ({} bytes) to {}", m.id, m.size, dst.describe()));
    r.copied.push_back(m.id);
  }
  return r;
}

}  // namespace mevbackup
