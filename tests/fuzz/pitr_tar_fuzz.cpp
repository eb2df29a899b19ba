// libFuzzer target for the member checks of a point-in-time restore
// (src/postgres/pitr_restore.cpp): libarchive reads the input as a base backup's
// base.tar and the restore's checks judge every member, nothing extracted. Any input
// must end in the member names or Error corrupt, and no accepted name may be absolute,
// contain "..", or be a link other than pg_tblspc/<oid>.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "mevbackup/error.hpp"
#include "mevbackup/pitr.hpp"

using namespace mevbackup;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes tar(reinterpret_cast<const std::byte*>(data), size);
  for (const char* part : {"base.tar", "16389.tar"}) {
    try {
      for (const auto& name : pitr::check_basebackup_tar(tar, part)) {
        if (name.empty() || name[0] == '/') std::abort();
        if (name == ".." || name.rfind("../", 0) == 0 || name.find("/../") != std::string::npos ||
            (name.size() >= 3 && name.compare(name.size() - 3, 3, "/..") == 0))
          std::abort();
      }
    } catch (const Error& e) {
      if (e.code() != Code::corrupt) std::abort();
    }
  }
  return 0;
}
