// S3Storage internals shared with the unit tests.
#pragma once

#include <cstdint>
#include <string>

namespace mevbackup::s3 {

inline constexpr uint64_t kMiB = 1024 * 1024;
inline constexpr uint64_t kMinPartSize = 5 * kMiB;           // S3's minimum (but for the last part)
inline constexpr uint64_t kMaxPartSize = 5 * 1024 * kMiB;    // S3's maximum
inline constexpr uint64_t kDefaultPartSize = 8 * kMiB;
inline constexpr int kMaxParts = 10000;

// Size of part `n` (1-based) of a stream of unknown length: `base` doubling every 900
// parts, capped at 5 GiB, so that 10,000 parts hold at least 5 TiB for any base >= 5 MiB
// while a small backup still uses small parts.
uint64_t part_size_for(int n, uint64_t base);

// "s3://bucket/some/prefix/" -> bucket "bucket", prefix "some/prefix".
struct S3Url {
  std::string bucket, prefix;
};
S3Url parse_s3_url(const std::string& url);

}  // namespace mevbackup::s3
