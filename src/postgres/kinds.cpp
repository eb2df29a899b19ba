// The PostgreSQL kinds (kinds.hpp): "postgres" (pg_dump archives in database/, with a
// restore test) and "basebackup" (a PITR set in basebackup/<id>/, its parts and the WAL
// archive in wal/).
#include <fmt/format.h>

#include "../catalog/builtin_kinds.hpp"
#include "mevbackup/digest.hpp"
#include "mevbackup/maintenance.hpp"
#include "mevbackup/pitr.hpp"
#include "mevbackup/postgres.hpp"

namespace mevbackup {

namespace {

// Every other part re-read like the main one, then the WAL archive checked for gaps
// from the backup's start segment to the newest archived one.
void verify_basebackup(Repository& repo, const Manifest& m, const RunContext& ctx, const VerifyCheckFn& check) {
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

// The parts the manifest lists (source.files), other than the artifact.
std::vector<Manifest::Part> basebackup_extra_parts(const Manifest& m) {
  std::vector<Manifest::Part> out;
  if (!m.source.is_object() || !m.source.contains("files") || !m.source["files"].is_array()) return out;
  for (auto& f : m.source["files"]) {
    if (!f.is_object() || !f.contains("path") || !f["path"].is_string()) continue;
    Manifest::Part part;
    part.path = f["path"].get<std::string>();
    if (auto it = f.find("size"); it != f.end() && it->is_number_unsigned()) part.size = it->get<uint64_t>();
    if (auto it = f.find("sha256"); it != f.end() && it->is_string()) part.sha256 = it->get<std::string>();
    out.push_back(std::move(part));
  }
  return out;
}

// Every object of basebackup/<id>/ belongs to the set whose manifest is
// basebackup/<id>/base.tar.gz.manifest.json (or .tar.zst / .tar).
bool basebackup_owns(const std::string& key, const std::set<std::string>& keys) {
  const std::string dir = "basebackup/";
  if (key.rfind(dir, 0) != 0) return false;
  auto slash = key.find('/', dir.size());
  if (slash == std::string::npos) return false;
  std::string set = key.substr(0, slash + 1);
  for (const char* base : {"base.tar.gz", "base.tar.zst", "base.tar"})
    if (keys.count(set + base + Manifest::kManifestSuffix)) return true;
  return false;
}

}  // namespace

BackupKind postgres_kind() {
  BackupKind k;
  k.name = "postgres";
  k.directory = "database";
  k.restore_test = [](Repository& repo, const Manifest& m, const VerifyOptions& opts, const RunContext& ctx) {
    if (opts.restore_test_conninfo.empty()) return nlohmann::json::array();
    return restore_test_postgres(repo, m, opts.restore_test_conninfo, opts.queries, ctx);
  };
  return k;
}

BackupKind basebackup_kind() {
  BackupKind k;
  k.name = "basebackup";
  k.directory = "basebackup";  // one directory per base backup (pitr.hpp)
  k.extra_parts = basebackup_extra_parts;
  k.owns = basebackup_owns;
  k.private_prefixes = {"wal/"};  // the WAL archive: neither backups nor leftovers
  k.verify = verify_basebackup;
  k.after_prune = [](Storage& storage, const std::vector<Manifest>& kept, bool dry_run, const LogFn& log) {
    pitr::prune_wal(storage, kept, dry_run, log);  // WAL older than the oldest base backup kept
  };
  return k;
}

}  // namespace mevbackup
