// libFuzzer target for the member checks of the files restorer (src/files): libarchive
// reads the tar, the restorer's checks judge every member (names, "..", links, kinds,
// duplicates), as a dry run that writes nothing. Any input must end in the list of
// members or an Error (corrupt for a bad archive, restore_failed for an unsafe member),
// and no accepted member may be absolute or contain "..".
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "files/files_common.hpp"
#include "mevbackup/error.hpp"

using namespace mevbackup;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Manifest m;
  m.id = "fuzz";
  m.kind = "files";
  Bytes tar(reinterpret_cast<const std::byte*>(data), size);
  try {
    // Odd chunk sizes: members straddle the reads, as they do in a real restore.
    for (const auto& name : files::check_tar_members(tar, m, std::nullopt, 509)) {
      if (name.empty() || name[0] == '/') std::abort();
      for (const auto& part : files::split_name(name))
        if (part == "..") std::abort();
    }
  } catch (const Error& e) {
    if (e.code() != Code::corrupt && e.code() != Code::restore_failed) std::abort();
  }
  return 0;
}
