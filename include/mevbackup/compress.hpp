// Compressors: Filter pairs chosen by name, detected by magic on read.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mevbackup/stream.hpp"

namespace mevbackup {

enum class Compression { none, gzip, zstd };

std::string_view compression_name(Compression c);
// "gzip" / "zstd" / "none"; throws invalid_argument naming the value otherwise.
Compression parse_compression(std::string_view name);
// File-name suffix of a stored artifact: ".gz" for gzip, "" for none.
std::string_view compression_suffix(Compression c);
// Looks at the first bytes (4 suffice) of a stored object; nullopt when too few to tell.
std::optional<Compression> detect_compression(Bytes head);

// level -1 is the codec's default. gzip 1..3: ISA-L (default 1); gzip 4..12: libdeflate,
// parallel members; zstd 1..19 (default 3), multi-threaded. Returns nullptr for none.
std::unique_ptr<Filter> make_compressor(Compression c, int level = -1);
// gzip: ISA-L inflate; accepts concatenated members (as `gunzip` does) and checks every
// CRC and length. zstd: checks the frame checksum.
std::unique_ptr<Filter> make_decompressor(Compression c);

}  // namespace mevbackup
