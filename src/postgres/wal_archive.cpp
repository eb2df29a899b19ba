#include "mevbackup/pitr.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "mevbackup/compress.hpp"
#include "mevbackup/digest.hpp"
#include "mevbackup/error.hpp"
#include "mevbackup/file_stream.hpp"
#include "../io/byte_limit.hpp"

namespace mevbackup::pitr {
namespace {

bool all_hex(const std::string& s, size_t from, size_t len) {
  if (s.size() < from + len) return false;
  for (size_t i = from; i < from + len; ++i) {
    char c = s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'))) return false;
  }
  return true;
}

std::string base_name(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

WalFileName parse_wal_file_name(const std::string& name) {
  WalFileName n;
  n.name = name;
  if (name.size() == 24 && all_hex(name, 0, 24)) {
    n.kind = WalFileKind::segment;
  } else if (name.size() == 16 && all_hex(name, 0, 8) && name.compare(8, 8, ".history") == 0) {
    n.kind = WalFileKind::history;
  } else if (name.size() == 40 && all_hex(name, 0, 24) && name[24] == '.' && all_hex(name, 25, 8) &&
             name.compare(33, 7, ".backup") == 0) {
    n.kind = WalFileKind::backup_label;
  } else if (name.size() == 32 && all_hex(name, 0, 24) && name.compare(24, 8, ".partial") == 0) {
    n.kind = WalFileKind::partial;
  } else {
    throw Error(Code::invalid_argument,
                fmt::format("\"{}\" is not a WAL file name (segment, TLI.history, .backup or .partial)", name));
  }
  n.timeline = name.substr(0, 8);
  return n;
}

std::string wal_payload_key(const WalFileName& n) { return fmt::format("wal/{}/{}.gz", n.timeline, n.name); }
std::string wal_checksum_key(const WalFileName& n) { return fmt::format("wal/{}/{}.sha256", n.timeline, n.name); }

PushResult wal_push(Storage& storage, const std::string& path, const RunContext& ctx) {
  WalFileName n = parse_wal_file_name(base_name(path));
  // 1. The checksum of the local file, by streaming it once.
  std::string sha;
  {
    auto src = make_file_source(path);
    Sha256 h;
    auto null = make_null_sink();
    Pipeline(*src).observe(h).run(*null, ctx.cancel, {}, ctx.pipeline);
    sha = h.hex();
  }
  // 2. The checksum object claims the name: whoever stores it first decides the content.
  std::string ckey = wal_checksum_key(n), pkey = wal_payload_key(n);
  bool claimed = false;
  try {
    storage.write_small(ckey, sha + "\n");
    claimed = true;
  } catch (const Error& e) {
    if (e.code() != Code::exists) throw;
  }
  if (!claimed) {
    std::string stored = trim(storage.read_small(ckey, 1024));
    if (stored != sha)
      throw Error(Code::exists, fmt::format("WAL file {} is already archived in {} with different content "
                                            "(archived SHA-256 {}, this file {}): refusing to replace it",
                                            n.name, storage.describe(), stored, sha));
    if (storage.stat(pkey)) {
      if (ctx.log) ctx.log(LogLevel::info, fmt::format("{} is already archived with the same content", n.name));
      return PushResult::already_archived;
    }
    // Same content claimed but the payload is missing (an earlier push died): store it.
  }
  // 3. The compressed payload, checked against the claimed checksum before commit.
  auto src = make_file_source(path);
  auto gz = make_compressor(Compression::gzip, -1);
  // Encrypted after compression when recipients are given: `age -d | gunzip` reads it.
  // The checksum object keeps the SHA-256 of the WAL file itself (it says nothing the
  // WAL file name does not), so a fetch checks what it decrypted.
  auto enc = artifact_encryptor(ctx.encryption.get());
  Sha256 h;
  auto sink = storage.put(pkey);
  try {
    Pipeline p(*src);
    p.observe(h).then(*gz);
    if (enc) p.then(*enc);
    auto throttle = ctx.max_rate ? make_throttle(ctx.max_rate, ctx.cancel) : nullptr;
    if (throttle) p.then(*throttle);
    p.before_commit([&] {
       if (h.hex() != sha)
         throw Error(Code::io, fmt::format("WAL file {} changed while it was being archived", path));
     }).run(*sink, ctx.cancel, ctx.progress, ctx.pipeline);
  } catch (const Error& e) {
    // A concurrent push of the same content won the race: that is success.
    if (e.code() == Code::exists && storage.stat(pkey)) return PushResult::already_archived;
    throw;
  }
  return PushResult::stored;
}

namespace {

// Bounds what wal_fetch writes into pg_wal: 16 MiB (the default wal_segment_size) for
// any WAL file, raised for a segment to the size its own long page header declares (a
// server initialised with --wal-segsize), which PostgreSQL itself checks on reading.
class WalFileLimit final : public Observer {
 public:
  explicit WalFileLimit(const WalFileName& n)
      : limit_(kDefault, fmt::format("archived WAL file {}", n.name), "allowed (16 MiB)"),
        segment_(n.kind == WalFileKind::segment || n.kind == WalFileKind::partial) {}
  void update(Bytes data) override {
    if (segment_ && head_.size() < kHeader) {
      head_.insert(head_.end(), data.begin(), data.begin() + std::min(data.size(), kHeader - head_.size()));
      if (head_.size() == kHeader) read_header();
    }
    limit_.update(data);
  }

 private:
  static constexpr uint64_t kDefault = 16 << 20;
  static constexpr size_t kHeader = 40;  // XLogLongPageHeaderData up to xlp_xlog_blcksz
  static bool power_of_two(uint64_t v) { return v && !(v & (v - 1)); }
  void read_header() {
    uint16_t info;
    uint32_t seg_size, block_size;
    std::memcpy(&info, head_.data() + 2, 2);
    std::memcpy(&seg_size, head_.data() + 32, 4);
    std::memcpy(&block_size, head_.data() + 36, 4);
    bool valid = (info & 0x0002) && power_of_two(seg_size) && seg_size >= (1u << 20) && seg_size <= (1u << 30) &&
                 power_of_two(block_size) && block_size >= 1024 && block_size <= 65536;
    if (valid) limit_.set_limit(seg_size, "its segment header declares");
  }
  ByteLimit limit_;
  bool segment_;
  std::vector<std::byte> head_;
};

}  // namespace

bool wal_fetch(Storage& storage, const std::string& name, const std::string& dest, const RunContext& ctx) {
  WalFileName n = parse_wal_file_name(name);
  std::string pkey = wal_payload_key(n), ckey = wal_checksum_key(n);
  if (!storage.stat(pkey)) return false;
  std::string expected = trim(storage.read_small(ckey, 1024));
  // %p is relative to the data directory (pg_wal/RECOVERYXLOG): write beside it.
  std::string dir = ".", file = dest;
  if (auto slash = dest.rfind('/'); slash != std::string::npos) {
    dir = slash == 0 ? "/" : dest.substr(0, slash);
    file = dest.substr(slash + 1);
  }
  auto target = make_local_storage(dir);
  if (target->stat(file)) target->remove(file);  // PostgreSQL lets restore_command replace %p
  // An archived WAL file is gzip, or gzip in age (pushed with recipients): told apart by
  // its first bytes, as `age -d` and gunzip would. Either way its SHA-256 is checked.
  PeekSource src(storage.get(pkey), 64);
  std::unique_ptr<Filter> decrypt;
  if (src.head().rfind("age-encryption.org/v1\n", 0) == 0) {
    Manifest as_artifact;
    as_artifact.id = n.name;
    as_artifact.path = pkey;
    as_artifact.encryption = "age";
    decrypt = artifact_decryptor(as_artifact, ctx.encryption.get());  // throws auth without an identity
  }
  auto gunzip = make_decompressor(Compression::gzip);
  Sha256 h;
  WalFileLimit limit(n);
  auto sink = target->put(file);
  Pipeline p(src);
  if (decrypt) p.then(*decrypt);
  p.then(*gunzip)
      .observe(limit)
      .observe(h)
      .before_commit([&] {
        if (h.hex() != expected)
          throw Error(Code::corrupt, fmt::format("archived WAL file {} in {} does not match its checksum "
                                                 "(expected {}, got {})",
                                                 n.name, storage.describe(), expected, h.hex()));
      })
      .run(*sink, ctx.cancel, ctx.progress, ctx.pipeline);
  return true;
}

}  // namespace mevbackup::pitr
