// libFuzzer target for the manifest parser (src/catalog/manifest.cpp): any text must
// end in a Manifest or an Error (corrupt / unsupported), never in a crash or another
// exception; an accepted manifest must survive to_string() -> parse() unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "mevbackup/error.hpp"
#include "mevbackup/manifest.hpp"

using namespace mevbackup;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  Manifest m;
  try {
    m = Manifest::parse(text, "fuzz.manifest.json");
  } catch (const Error& e) {
    if (e.code() != Code::corrupt && e.code() != Code::unsupported) std::abort();
    return 0;
  }
  Manifest again = Manifest::parse(m.to_string(), "round trip");
  if (again.to_json() != m.to_json()) std::abort();
  return 0;
}
