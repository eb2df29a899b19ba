// Name <-> codec, levels -> engines, magic detection: the one place that knows every codec.
//
// gzip levels (documented in docs/performance.md):
//   1..3   ISA-L igzip levels 1..3 (default 1: about gzip -6's size at several times its speed)
//   4..12  libdeflate at that level, independent 1 MiB members compressed on every core
// zstd levels: 1..19 (default 3), libzstd with one worker per core.
#include <thread>

#include <fmt/format.h>

#include "mevbackup/compress.hpp"

namespace mevbackup {

std::unique_ptr<Filter> make_gzip_compressor(int level);  // zlib, the reference
std::unique_ptr<Filter> make_gzip_decompressor();        // zlib, the reference
std::unique_ptr<Filter> make_isal_gzip_compressor(int level);
std::unique_ptr<Filter> make_isal_gzip_decompressor();
std::unique_ptr<Filter> make_parallel_gzip_compressor(int level, size_t chunk, unsigned threads);
std::unique_ptr<Filter> make_zstd_compressor(int level, unsigned threads);
std::unique_ptr<Filter> make_zstd_decompressor();

namespace {
unsigned cores() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? n : 1;
}
}  // namespace

std::string_view compression_name(Compression c) {
  switch (c) {
    case Compression::gzip: return "gzip";
    case Compression::zstd: return "zstd";
    default: return "none";
  }
}

Compression parse_compression(std::string_view name) {
  if (name == "gzip" || name == "gz") return Compression::gzip;
  if (name == "zstd" || name == "zst") return Compression::zstd;
  if (name == "none") return Compression::none;
  throw Error(Code::invalid_argument, fmt::format("unknown compression \"{}\" (expected gzip, zstd or none)", name));
}

std::string_view compression_suffix(Compression c) {
  switch (c) {
    case Compression::gzip: return ".gz";
    case Compression::zstd: return ".zst";
    default: return "";
  }
}

std::optional<Compression> detect_compression(Bytes head) {
  if (head.size() < 4) {
    if (head.size() >= 2 && head[0] == std::byte{0x1f} && head[1] == std::byte{0x8b}) return Compression::gzip;
    return std::nullopt;
  }
  if (head[0] == std::byte{0x1f} && head[1] == std::byte{0x8b}) return Compression::gzip;
  if (head[0] == std::byte{0x28} && head[1] == std::byte{0xb5} && head[2] == std::byte{0x2f} &&
      head[3] == std::byte{0xfd})
    return Compression::zstd;
  return Compression::none;
}

std::unique_ptr<Filter> make_compressor(Compression c, int level) {
  switch (c) {
    case Compression::gzip:
      if (level == -1) level = 1;
      if (level >= 1 && level <= 3) return make_isal_gzip_compressor(level);
      if (level >= 4 && level <= 12) return make_parallel_gzip_compressor(level, 1 << 20, cores());
      throw Error(Code::invalid_argument, fmt::format("gzip level {} is out of range 1..12", level));
    case Compression::zstd:
      return make_zstd_compressor(level == -1 ? 3 : level, cores());
    default:
      return nullptr;
  }
}

std::unique_ptr<Filter> make_decompressor(Compression c) {
  switch (c) {
    case Compression::gzip: return make_isal_gzip_decompressor();
    case Compression::zstd: return make_zstd_decompressor();
    default: return nullptr;
  }
}

}  // namespace mevbackup
