// libFuzzer target for the RDB reader: any input must end in a result or an Error,
// never a crash, a hang or a large allocation. Run:
//   build/tests/mevb_fuzz_rdb -max_len=65536 -rss_limit_mb=256 WORKDIR tests/fuzz/corpus
#include <cstddef>
#include <cstdint>
#include <vector>

#include "redis/rdb_reader.hpp"

using namespace mevbackup;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::byte> v(reinterpret_cast<const std::byte*>(data), reinterpret_cast<const std::byte*>(data) + size);
  redis::RdbLimits lim;
  lim.max_string = 1 << 20;
  lim.max_value = 4 << 20;
  try {
    MemorySource src(v, 97);  // odd read sizes exercise the buffer refills
    redis::RdbReader r(src, lim);
    redis::RdbEntry e;
    while (r.next(e, true)) (void)redis::dump_payload(e.type, e.value, r.version());
  } catch (const Error&) {
  }
  return 0;
}
