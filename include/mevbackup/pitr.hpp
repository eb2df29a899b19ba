// WAL archive primitives for point-in-time recovery: the bodies of PostgreSQL's
// archive_command (wal_push) and restore_command (wal_fetch).
// Layout: <repo>/wal/<timeline>/<name>.gz (gzip of the file) and <name>.sha256 (hex
// SHA-256 of the uncompressed file). The checksum is stored first and is the archive's
// word on a name: a second push of the same name must match it.
#pragma once

#include <string>

#include "mevbackup/repository.hpp"
#include "mevbackup/storage.hpp"

namespace mevbackup::pitr {

// What kind of file PostgreSQL archives under this name.
enum class WalFileKind { segment, history, backup_label, partial };

struct WalFileName {
  std::string name;      // "000000010000000000000003"
  std::string timeline;  // "00000001"
  WalFileKind kind = WalFileKind::segment;
};

// Parses a WAL file name (segment, TLI.history, segment.XXXXXXXX.backup, segment.partial);
// throws Error(invalid_argument) naming it otherwise (a name with '/' included).
WalFileName parse_wal_file_name(const std::string& name);

// Storage keys of a WAL file's compressed payload and checksum.
std::string wal_payload_key(const WalFileName& n);
std::string wal_checksum_key(const WalFileName& n);

enum class PushResult { stored, already_archived };

// Archives the file at `path` under its base name. Succeeds without change when the
// same content is already archived; throws Error(exists) when different content is.
PushResult wal_push(Storage& storage, const std::string& path, const RunContext& ctx = {});

// Restores WAL file `name` to `dest` (written to a temporary file beside it, then
// renamed). Returns false, writing nothing, when the archive does not hold it; throws
// Error(corrupt) when the stored bytes do not match the checksum.
bool wal_fetch(Storage& storage, const std::string& name, const std::string& dest, const RunContext& ctx = {});

}  // namespace mevbackup::pitr
