// WAL positions, segment arithmetic, continuity of the archive, quoting for the
// recovery settings, and the parts of a base backup manifest.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "mevbackup/compress.hpp"
#include "mevbackup/error.hpp"
#include "mevbackup/pitr.hpp"

namespace mevbackup::pitr {

namespace {

bool hex_digits(const std::string& s) {
  if (s.empty() || s.size() > 8) return false;
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

void check_segment_size(uint64_t size) {
  bool pow2 = size && (size & (size - 1)) == 0;
  if (!pow2 || size < (1ull << 20) || size > (1ull << 30))
    throw Error(Code::invalid_argument,
                fmt::format("WAL segment size {} is not a power of two between 1 MiB and 1 GiB", size));
}

uint64_t segments_per_xlogid(uint64_t segment_size) { return 0x100000000ull / segment_size; }

}  // namespace

uint64_t parse_lsn(const std::string& text) {
  auto slash = text.find('/');
  if (slash == std::string::npos || !hex_digits(text.substr(0, slash)) || !hex_digits(text.substr(slash + 1)))
    throw Error(Code::invalid_argument, fmt::format("\"{}\" is not a WAL position (LSN like 0/3000060)", text));
  uint64_t hi = std::stoull(text.substr(0, slash), nullptr, 16), lo = std::stoull(text.substr(slash + 1), nullptr, 16);
  return (hi << 32) | lo;
}

std::string format_lsn(uint64_t lsn) { return fmt::format("{:X}/{:X}", lsn >> 32, lsn & 0xffffffffu); }

std::string wal_segment_name_from_number(uint32_t tli, uint64_t segno, uint64_t segment_size) {
  check_segment_size(segment_size);
  uint64_t per = segments_per_xlogid(segment_size);
  return fmt::format("{:08X}{:08X}{:08X}", tli, segno / per, segno % per);
}

std::string wal_segment_name(uint32_t tli, uint64_t lsn, uint64_t segment_size) {
  check_segment_size(segment_size);
  return wal_segment_name_from_number(tli, lsn / segment_size, segment_size);
}

uint64_t wal_segment_number(const std::string& name, uint64_t segment_size) {
  check_segment_size(segment_size);
  WalFileName n = parse_wal_file_name(name);
  if (n.kind != WalFileKind::segment)
    throw Error(Code::invalid_argument, fmt::format("\"{}\" is not a WAL segment name", name));
  uint64_t log = std::stoull(name.substr(8, 8), nullptr, 16), seg = std::stoull(name.substr(16, 8), nullptr, 16);
  uint64_t per = segments_per_xlogid(segment_size);
  if (seg >= per)
    throw Error(Code::invalid_argument,
                fmt::format("\"{}\" is not a segment name for {}-byte segments", name, segment_size));
  return log * per + seg;
}

uint64_t parse_wal_segment_size(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0) throw Error(Code::invalid_argument, fmt::format("\"{}\" is not a WAL segment size", text));
  uint64_t v = std::stoull(text.substr(0, i));
  std::string unit = text.substr(i);
  uint64_t mult = unit.empty() || unit == "B" ? 1 : unit == "kB" ? 1024 : unit == "MB" ? 1ull << 20
                  : unit == "GB"                               ? 1ull << 30
                                                               : 0;
  if (!mult) throw Error(Code::invalid_argument, fmt::format("\"{}\" is not a WAL segment size", text));
  uint64_t size = v * mult;
  check_segment_size(size);
  return size;
}

// ---- continuity --------------------------------------------------------------------

WalContinuity wal_continuity_of(const std::vector<std::string>& archived, uint32_t timeline, uint64_t start_lsn,
                                uint64_t segment_size) {
  check_segment_size(segment_size);
  std::string tli = fmt::format("{:08X}", timeline);
  uint64_t first = start_lsn / segment_size;
  std::set<uint64_t> have;
  for (auto& name : archived) {
    if (name.size() != 24 || name.compare(0, 8, tli) != 0) continue;
    try {
      uint64_t n = wal_segment_number(name, segment_size);
      if (n >= first) have.insert(n);
    } catch (const Error&) {
    }
  }
  WalContinuity c;
  c.first_segment = wal_segment_name_from_number(timeline, first, segment_size);
  if (have.empty()) return c;
  uint64_t newest = *have.rbegin();
  c.newest_segment = wal_segment_name_from_number(timeline, newest, segment_size);
  uint64_t expect = first;
  for (uint64_t n : have) {
    if (n > expect)
      c.gaps.push_back({wal_segment_name_from_number(timeline, expect, segment_size),
                        wal_segment_name_from_number(timeline, n - 1, segment_size)});
    expect = n + 1;
  }
  return c;
}

WalContinuity wal_continuity(Storage& storage, uint32_t timeline, uint64_t start_lsn, uint64_t segment_size) {
  std::string prefix = fmt::format("wal/{:08X}/", timeline);
  std::vector<std::string> names;
  for (auto& o : storage.list(prefix)) {
    // Only segments whose payload is complete: "<name>.gz".
    std::string base = o.key.substr(prefix.size());
    if (base.size() == 27 && base.compare(24, 3, ".gz") == 0) names.push_back(base.substr(0, 24));
  }
  return wal_continuity_of(names, timeline, start_lsn, segment_size);
}

// ---- quoting and times -----------------------------------------------------------

std::string conf_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "''";
    else if (c == '\n' || c == '\r')
      throw Error(Code::invalid_argument, "a configuration value cannot hold a line break");
    else out += c;
  }
  return out + "'";
}

std::string restore_command_word(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else if (c == '%') out += "%%";
    else out += c;
  }
  return out + "'";
}

TimePoint parse_target_time(const std::string& text) {
  std::string why;
  if (auto t = try_parse_time(text, &why)) return *t;
  throw Error(Code::invalid_argument,
              fmt::format("target time \"{}\" {}: use \"YYYY-MM-DD HH:MM:SS[.ffffff]+00\" (a zone is required)", text,
                          why));
}

// ---- base backup parts -------------------------------------------------------------

namespace {

bool digits(const std::string& s) {
  return !s.empty() && s.size() <= 10 && s.find_first_not_of("0123456789") == std::string::npos;
}

void check_part(const Manifest& m, const std::string& dir, const BaseBackupPart& p) {
  auto bad = [&](const std::string& why) {
    return Error(Code::corrupt, fmt::format("base backup manifest {}: part \"{}\" ({}): {}", m.key(), p.name,
                                            p.stored.path, why));
  };
  bool tablespace = !p.tablespace_oid.empty();
  if (tablespace) {
    if (!digits(p.tablespace_oid)) throw bad(fmt::format("tablespace oid \"{}\" is not a number", p.tablespace_oid));
    if (p.name != p.tablespace_oid + ".tar") throw bad("a tablespace part is named <oid>.tar");
  } else if (p.name != "base.tar" && p.name != "backup_manifest") {
    throw bad("not a part a base backup holds (base.tar, <oid>.tar, backup_manifest)");
  }
  std::string suffix(compression_suffix(parse_compression(p.stored.compression)));
  if (!m.encryption.empty()) suffix += ".age";  // every part of an encrypted base backup is
  if (p.stored.path != dir + p.name + suffix) throw bad(fmt::format("its path is not {}{}{}", dir, p.name, suffix));
}

}  // namespace

std::vector<BaseBackupPart> basebackup_parts(const Manifest& m) {
  if (m.kind != "basebackup" || !m.source.contains("files") || !m.source["files"].is_array())
    throw Error(Code::corrupt, fmt::format("{} is not a base backup manifest", m.key()));
  // Every part lives in the backup's own directory, under a name the backup writes:
  // a forged manifest cannot make a restore read anything else.
  if (!valid_backup_id(m.id))
    throw Error(Code::corrupt, fmt::format("base backup manifest {}: \"{}\" is not a backup id", m.key(), m.id));
  const std::string dir = "basebackup/" + m.id + "/";
  std::vector<BaseBackupPart> out;
  std::set<std::string> names;
  for (auto& f : m.source["files"]) {
    try {
      BaseBackupPart p;
      p.name = f.at("name").get<std::string>();
      p.tablespace_oid = f.value("tablespace_oid", "");
      p.tablespace_location = f.value("tablespace_location", "");
      p.stored = m;
      p.stored.path = f.at("path").get<std::string>();
      p.stored.size = f.at("size").get<uint64_t>();
      p.stored.sha256 = f.at("sha256").get<std::string>();
      p.stored.payload_size = f.at("payload_size").get<uint64_t>();
      p.stored.payload_sha256 = f.at("payload_sha256").get<std::string>();
      p.stored.compression = f.value("compression", m.compression);
      check_part(m, dir, p);
      if (!names.insert(p.name).second)
        throw Error(Code::corrupt, fmt::format("base backup manifest {} lists \"{}\" twice", m.key(), p.name));
      out.push_back(std::move(p));
    } catch (const nlohmann::json::exception& e) {
      throw Error(Code::corrupt, fmt::format("base backup manifest {}: bad file entry: {}", m.key(), e.what()));
    }
  }
  if (out.empty() || out[0].name != "base.tar")
    throw Error(Code::corrupt, fmt::format("base backup manifest {} lists no base.tar first", m.key()));
  return out;
}

// ---- WAL retention -------------------------------------------------------------------

std::vector<std::string> prune_wal(Storage& storage, const std::vector<Manifest>& kept, bool dry_run, const LogFn& log) {
  std::vector<std::string> removed;
  std::optional<uint64_t> oldest;
  std::string oldest_name;
  uint64_t seg_size = 0;
  for (auto& m : kept) {
    if (m.kind != "basebackup") continue;
    try {
      uint64_t size = m.source.at("wal_segment_size").get<uint64_t>();
      std::string start = m.source.at("start_segment").get<std::string>();
      uint64_t n = wal_segment_number(start, size);
      if (seg_size && size != seg_size)
        throw Error(Code::corrupt, "base backups with different WAL segment sizes in one repository");
      seg_size = size;
      if (!oldest || n < *oldest) {
        oldest = n;
        oldest_name = start;
      }
    } catch (const nlohmann::json::exception& e) {
      // A manifest we cannot read the start of: keep every WAL file, to be safe.
      if (log) log(LogLevel::warning, fmt::format("WAL retention skipped: base backup {}: {}", m.id, e.what()));
      return removed;
    }
  }
  if (!oldest) return removed;
  std::vector<std::string> keys;
  for (auto& o : storage.list("wal/")) {
    auto slash = o.key.rfind('/');
    std::string base = o.key.substr(slash + 1);
    // <24 hex>[.partial|.XXXXXXXX.backup].(gz|sha256); history files never match.
    if (base.size() < 24 || !hex_digits(base.substr(0, 8)) || base.find(".history") != std::string::npos) continue;
    std::string seg = base.substr(0, 24);
    uint64_t n;
    try {
      n = wal_segment_number(seg, seg_size);
    } catch (const Error&) {
      continue;
    }
    if (n >= *oldest) continue;
    keys.push_back(o.key);
    if (base.size() >= 27 && base.compare(base.size() - 3, 3, ".gz") == 0) removed.push_back(base.substr(0, base.size() - 3));
  }
  if (log)
    log(LogLevel::info, fmt::format("{} {} WAL file(s) older than {} (start of the oldest base backup kept)",
                                    dry_run ? "would remove" : "removing", removed.size(), oldest_name));
  if (dry_run || keys.empty()) return removed;
  // Payloads first, then their checksums: a crash in between leaves a claimed name
  // whose payload a later wal-push can still supply.
  std::vector<std::string> payloads, sums;
  for (auto& k : keys) (k.size() > 3 && k.compare(k.size() - 3, 3, ".gz") == 0 ? payloads : sums).push_back(k);
  for (auto* batch : {&payloads, &sums}) {
    auto failures = storage.remove_many(*batch);
    if (!failures.empty())
      throw Error(Code::io, fmt::format("WAL retention could not remove {} object(s) in {}; first: {}: {}",
                                        failures.size(), storage.describe(), failures[0].key, failures[0].reason));
  }
  return removed;
}

}  // namespace mevbackup::pitr
