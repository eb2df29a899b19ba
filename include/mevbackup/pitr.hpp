// WAL archive primitives for point-in-time recovery: the bodies of PostgreSQL's
// archive_command (wal_push) and restore_command (wal_fetch).
// Layout: <repo>/wal/<timeline>/<name>.gz (gzip of the file) and <name>.sha256 (hex
// SHA-256 of the uncompressed file). The checksum is stored first and is the archive's
// word on a name: a second push of the same name must match it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mevbackup/repository.hpp"
#include "mevbackup/storage.hpp"

struct archive_entry;  // libarchive's, for check_basebackup_member

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

// ---- WAL positions and segment arithmetic ---------------------------------------

// "16/B374D848" -> 0x16B374D848; throws Error(invalid_argument) naming the text.
uint64_t parse_lsn(const std::string& text);
std::string format_lsn(uint64_t lsn);
// The segment holding `lsn` on timeline `tli`: "000000010000000000000003".
// `segment_size` is a power of two between 1 MiB and 1 GiB (the server's wal_segment_size).
std::string wal_segment_name(uint32_t tli, uint64_t lsn, uint64_t segment_size);
// The segment number of a segment name (timeline ignored) and back.
uint64_t wal_segment_number(const std::string& segment_name, uint64_t segment_size);
std::string wal_segment_name_from_number(uint32_t tli, uint64_t segno, uint64_t segment_size);
// "16MB", "1GB", "16777216" (SHOW wal_segment_size) -> bytes.
uint64_t parse_wal_segment_size(const std::string& text);

// ---- base backups (the physical copy PITR starts from) --------------------------
// Layout: <repo>/basebackup/<id>/base.tar.gz, <tablespace oid>.tar.gz, backup_manifest.gz
// and, written last, basebackup/<id>/base.tar.gz.manifest.json: the set's manifest
// (kind "basebackup"; its path/size/sha256 describe base.tar.gz, source.files every
// part). A set without that manifest is not a backup (an interrupted run).

struct BaseBackupOptions {
  std::string conninfo;          // libpq conninfo; the role needs REPLICATION
  std::string name_prefix = "basebackup";
  Compression compression = Compression::gzip;
  int level = -1;
  bool fast_checkpoint = true;   // CHECKPOINT 'fast' (else 'spread')
  uint32_t max_rate_kbps = 0;    // MAX_RATE; 0: unlimited, else 32..1048576
  // A base backup without archived WAL cannot be recovered: refuse one from a server
  // whose archive_mode is off, unless this is false.
  bool require_archiving = true;
};

// Streams a base backup over the replication protocol (replication=database,
// BASE_BACKUP with LABEL, CHECKPOINT, MANIFEST 'yes', WAIT) into the repository; no
// pg_basebackup process, no local copy. Throws connection/auth when the server cannot
// be reached, unsupported for servers older than PostgreSQL 15 or without WAL
// archiving, dump_failed when the server ends the backup with an error or the
// connection drops. On failure every part already stored is removed again.
Manifest backup_base(Repository& repo, const BaseBackupOptions& opts, const RunContext& ctx);

// The base backup Dumper as one Source: the data directory as a single tar, as
// `pg_basebackup -D - -Ft -X fetch` writes it to standard output. The server's own
// backup_manifest is the tar's last member, so `pg_verifybackup` checks the extracted
// directory; with include_wal the WAL from the backup's start to its end is in pg_wal/,
// and the tar alone starts a consistent server (no archive needed).
struct BaseBackupSourceOptions {
  std::string conninfo;          // libpq conninfo; the role needs REPLICATION
  bool fast_checkpoint = true;   // CHECKPOINT 'fast' (else 'spread')
  uint32_t max_rate_kbps = 0;    // MAX_RATE; 0: unlimited, else 32..1048576
  bool include_wal = true;       // BASE_BACKUP WAL (the segments in the tar), WAIT false
};
// What the server said; the stop fields are set once the stream has ended.
struct BaseBackupSourceInfo {
  std::string server;            // host:port, never a password
  std::string server_version, system_identifier, start_lsn, stop_lsn;
  long long start_timeline = 0, stop_timeline = 0;
  uint64_t wal_segment_size = 0;
};
// Connects and starts the backup now (the checkpoint is taken before this returns).
// Throws connection/auth as backup_base, unsupported for a server older than 15, for one
// with tablespaces beyond the main one (one tar cannot hold them: backup_base stores one
// archive per tablespace), or without include_wal for one whose archive_mode is off.
// The stream fails with dump_failed when the server ends the backup with an error, and
// ends only after the server confirmed the backup's end. `info` (optional) must outlive
// the source.
std::unique_ptr<Source> basebackup_source(const BaseBackupSourceOptions& opts, BaseBackupSourceInfo* info = nullptr);

// One stored part of a base backup, described as a Manifest (path, size, sha256,
// payload...), so it can be re-read with Repository::restore_stream.
struct BaseBackupPart {
  std::string name;               // "base.tar", "16385.tar", "backup_manifest"
  std::string tablespace_oid;     // tablespaces only
  std::string tablespace_location;
  Manifest stored;
};
// Throws corrupt when `m` is not a base backup manifest, or when a part is not one a
// base backup writes (base.tar, <oid>.tar, backup_manifest) at its own path in
// basebackup/<id>/, or the id is not a valid_backup_id().
std::vector<BaseBackupPart> basebackup_parts(const Manifest& m);

// The member checks of a restore on one base backup tar (`part_name` "base.tar" or
// "<oid>.tar"): relative names without "..", only files and directories (symbolic links
// only as pg_tblspc/<oid> of base.tar), no hard links, no sparse members. Returns the
// cleaned name ("" for the archive's root, which is skipped) and, for a pg_tblspc link,
// its target in *link_target; throws corrupt naming `where` and the member.
std::string check_basebackup_member(archive_entry* e, const std::string& part_name, const std::string& where,
                                    std::string* link_target);
// The same checks over a tar held in memory, nothing extracted: the member names in
// order. For the fuzzer (tests/fuzz/basebackup_tar_fuzz.cpp) and tests.
std::vector<std::string> check_basebackup_tar(Bytes tar, const std::string& part_name);

// ---- restore to a point ----------------------------------------------------------

// The tablespace_map value that restores a tablespace at its recorded location.
inline constexpr const char* kTablespaceOriginal = "original";

struct PitrRestoreOptions {
  std::string data_dir;            // absent or empty directory
  // At most one target; none: recover to the end of the archived WAL.
  std::string target_time;         // "2026-11-27 07:50:00+00", RFC 3339 too; needs a zone
  std::string target_lsn;          // "0/3000060"
  std::string target_name;         // a pg_create_restore_point() name
  std::string backup_id;           // empty: the newest base backup that ended before the target
  // restore_command: empty builds "<mevbackup_path> wal-fetch --repo <repo_url> [args] %f %p"
  std::string restore_command;
  std::string repo_url;
  std::string mevbackup_path = "mevbackup";
  std::vector<std::string> wal_fetch_args;  // e.g. --endpoint-url URL (never credentials)
  std::string owner;               // user owning the files; empty: owner of data_dir, else of its parent
  std::vector<std::pair<std::string, std::string>> settings;  // more postgresql.auto.conf lines
  // oid -> location, required for every tablespace of the backup (invalid_argument
  // naming the unmapped ones otherwise); kTablespaceOriginal confirms the location the
  // manifest records.
  std::map<std::string, std::string> tablespace_map;
  bool start = false;              // run pg_ctl start (as the owner) and wait for recovery
  int timeout_seconds = 3600;
  std::string log_file;            // the server's log with start; empty: <data_dir>/pitr_recovery.log
  std::string pg_ctl_path;         // empty: /usr/lib/postgresql/<major>/bin/pg_ctl
};

struct PitrRestoreResult {
  Manifest backup;                  // the base backup used
  std::string start_command;        // how to start the server (when not started)
  bool started = false;             // start succeeded and recovery finished (promoted)
  std::string summary;              // human-readable lines
  nlohmann::json to_json() const;
};

// Unpacks the chosen base backup into data_dir and writes recovery.signal and the
// recovery settings. Throws not_empty for a non-empty data_dir, not_found when no base
// backup precedes the target, restore_failed (naming the missing WAL segment when it
// can tell) when a started recovery fails.
PitrRestoreResult restore_pitr(Repository& repo, const PitrRestoreOptions& opts, const RunContext& ctx);

// Parses a recovery target time ("YYYY-MM-DD HH:MM:SS[.frac](Z|+HH[:MM]|-HH[:MM])",
// 'T' allowed); throws invalid_argument without a zone.
TimePoint parse_target_time(const std::string& text);
// Quotes `s` for a postgresql.conf value ('...' with '' for ').
std::string conf_quote(const std::string& s);
// Quotes one word for /bin/sh and escapes '%' for restore_command ('%%').
std::string restore_command_word(const std::string& s);

// ---- WAL continuity --------------------------------------------------------------

// The gaps in the archive of `timeline` between the segment holding `start_lsn` and the
// newest archived segment of that timeline: each gap is [first missing, last missing].
struct WalGap {
  std::string first, last;
};
struct WalContinuity {
  std::string first_segment, newest_segment;  // newest empty: nothing archived
  std::vector<WalGap> gaps;
};
WalContinuity wal_continuity(Storage& storage, uint32_t timeline, uint64_t start_lsn, uint64_t segment_size);
// Pure form for tests: `archived` holds segment names (any order).
WalContinuity wal_continuity_of(const std::vector<std::string>& archived, uint32_t timeline, uint64_t start_lsn,
                                uint64_t segment_size);

// ---- WAL retention ---------------------------------------------------------------

// Removes archived WAL segments (and .partial / .backup files) older than the start
// segment of the oldest base backup in `kept`; history files always stay. With no kept
// base backup nothing is removed. Returns the WAL files removed (or, dry_run, that
// would be); throws io naming the first key that could not be removed.
std::vector<std::string> prune_wal(Storage& storage, const std::vector<Manifest>& kept, bool dry_run,
                                   const LogFn& log = {});

}  // namespace mevbackup::pitr
