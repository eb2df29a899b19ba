// libFuzzer target for the zstd reader (src/compress/zstd.cpp), fed in one piece and
// in small odd pieces into a small output buffer. Any input must end in bytes or an
// Error(corrupt), and when both feeds accept the input they give the same bytes.
// Not required: that both feeds accept the same inputs. libzstd checks a frame's
// declared content size only when the whole frame fits the output buffer, so a frame
// that declares more bytes than it holds (its checksum matching what it holds) is
// refused in one piece and accepted in small ones (found by this target, seed
// corpus/zstd/lying_content_size.zst; upstream: "the decompressor doesn't guarantee that
// it will catch every error", facebook/zstd#3151). What it hands out is what the frame
// checksum vouches for, and a stored artifact is checked against its manifest's SHA-256.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "decompress_common.hpp"

using namespace mevbackup;
using fuzzsupport::drive;
using fuzzsupport::Outcome;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr size_t kCap = 1 << 20;
  auto z1 = make_decompressor(Compression::zstd);
  Outcome a = drive(*z1, data, size, size ? size : 1, 64 * 1024, kCap);
  auto z2 = make_decompressor(Compression::zstd);
  Outcome b = drive(*z2, data, size, 13, 61, kCap);
  if (!a.capped && !b.capped && a.ok && b.ok && a.out != b.out) std::abort();
  return 0;
}
