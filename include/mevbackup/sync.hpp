// Copying backups between repositories (local <-> S3, S3 <-> S3, local <-> local).
#pragma once

#include <string>
#include <vector>

#include "mevbackup/repository.hpp"

namespace mevbackup {

struct SyncResult {
  std::vector<std::string> copied;  // ids of the backups copied, oldest first
  size_t present = 0;               // backups the destination already had
  uint64_t bytes = 0;               // artifact bytes copied
};

// Copies every complete backup of `from` (of `kind`, or all kinds when empty) that `to`
// lacks: the artifact is streamed (never held whole) and checked against its manifest's
// size and SHA-256 before the destination may publish it, then the manifest is copied
// byte for byte. An artifact already in `to` without its manifest (an interrupted sync)
// is checked the same way and completed. Stops at the first failure (Code::corrupt for
// a checksum mismatch) leaving nothing half-copied: the backups copied before it stay.
// The destination's storage options (storage class, encryption) apply to what it writes.
SyncResult sync_repositories(Repository& from, Repository& to, const std::string& kind, const RunContext& ctx);

}  // namespace mevbackup
