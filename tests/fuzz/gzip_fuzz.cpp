// libFuzzer target for the gzip readers (src/compress): the ISA-L inflate that every
// restore uses (make_decompressor(gzip)) and the zlib one, each fed in one piece and in
// small odd pieces into a small output buffer. Any input must end in bytes or an
// Error(corrupt); both feeds of one reader must agree, and when both readers accept an
// input they must produce the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "decompress_common.hpp"

namespace mevbackup {
std::unique_ptr<Filter> make_gzip_decompressor();  // zlib (src/compress/gzip.cpp)
}

using namespace mevbackup;
using fuzzsupport::drive;
using fuzzsupport::Outcome;

namespace {
constexpr size_t kCap = 1 << 20;

void same(const Outcome& a, const Outcome& b) {
  if (a.capped || b.capped) return;
  if (a.ok != b.ok) std::abort();
  if (a.ok && a.out != b.out) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto isal1 = make_decompressor(Compression::gzip);
  Outcome a = drive(*isal1, data, size, size ? size : 1, 64 * 1024, kCap);
  auto isal2 = make_decompressor(Compression::gzip);
  Outcome b = drive(*isal2, data, size, 13, 61, kCap);
  same(a, b);
  auto zlib1 = make_gzip_decompressor();
  Outcome c = drive(*zlib1, data, size, size ? size : 1, 64 * 1024, kCap);
  auto zlib2 = make_gzip_decompressor();
  Outcome d = drive(*zlib2, data, size, 13, 61, kCap);
  same(c, d);
  if (a.ok && c.ok && !a.capped && !c.capped && a.out != c.out) std::abort();
  return 0;
}
