// Compressors: Filter pairs chosen by name, detected by magic on read.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mevbackup/stream.hpp"

namespace mevbackup {

enum class Compression { none, gzip };

std::string_view compression_name(Compression c);
// "gzip" / "none"; throws invalid_argument naming the value otherwise.
Compression parse_compression(std::string_view name);
// File-name suffix of a stored artifact: ".gz" for gzip, "" for none.
std::string_view compression_suffix(Compression c);
// Looks at the first bytes of a stored object; nullopt when they are too few to tell.
std::optional<Compression> detect_compression(Bytes head);

// level: 1..9 for gzip (-1 = library default, 6). Returns nullptr for none.
std::unique_ptr<Filter> make_compressor(Compression c, int level = -1);
// Accepts concatenated gzip members (as `gunzip` does) and checks every CRC and length.
std::unique_ptr<Filter> make_decompressor(Compression c);

}  // namespace mevbackup
