// The kinds the library brings, each defined by its service area (kinds.hpp).
#pragma once

#include "mevbackup/kinds.hpp"

namespace mevbackup {

BackupKind postgres_kind();    // src/postgres/kinds.cpp
BackupKind basebackup_kind();  // src/postgres/kinds.cpp
BackupKind redis_kind();       // src/redis/kind.cpp
BackupKind files_kind();       // src/files/kind.cpp

}  // namespace mevbackup
