// Name <-> codec, magic detection. One place that knows every codec.
#include <fmt/format.h>

#include "mevbackup/compress.hpp"

namespace mevbackup {

std::unique_ptr<Filter> make_gzip_compressor(int level);
std::unique_ptr<Filter> make_gzip_decompressor();

std::string_view compression_name(Compression c) {
  return c == Compression::gzip ? "gzip" : "none";
}

Compression parse_compression(std::string_view name) {
  if (name == "gzip" || name == "gz") return Compression::gzip;
  if (name == "none") return Compression::none;
  throw Error(Code::invalid_argument, fmt::format("unknown compression \"{}\" (expected gzip or none)", name));
}

std::string_view compression_suffix(Compression c) { return c == Compression::gzip ? ".gz" : ""; }

std::optional<Compression> detect_compression(Bytes head) {
  if (head.size() < 2) return std::nullopt;
  if (head[0] == std::byte{0x1f} && head[1] == std::byte{0x8b}) return Compression::gzip;
  return Compression::none;
}

std::unique_ptr<Filter> make_compressor(Compression c, int level) {
  if (c == Compression::gzip) return make_gzip_compressor(level);
  return nullptr;
}

std::unique_ptr<Filter> make_decompressor(Compression c) {
  if (c == Compression::gzip) return make_gzip_decompressor();
  return nullptr;
}

}  // namespace mevbackup
