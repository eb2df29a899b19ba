// Configuration files: a set of files, directories and globs backed up as a tar
// (pax, uncompressed; the repository's gzip makes it .tar.gz) that stock tar reads,
// with secrets kept out by default; and a restore that cannot escape its target.
//
// Thread safety: the functions may run concurrently on distinct repositories/targets.
// Errors: every function throws mevbackup::Error (see each function).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mevbackup/repository.hpp"

namespace mevbackup {

// The built-in secret excludes: ".env", ".env.*", "*.pem", "*.key", "id_rsa*", ...
// A pattern ending in '/' matches a directory of that name (and so all below it);
// patterns without '/' match a member's last name component, the others its whole
// relative name (fnmatch).
const std::vector<std::string>& default_secret_excludes();

struct FilesBackupOptions {
  std::string base_dir;                 // empty: the current directory
  // Files, directories (recursively) and globs, relative to base_dir (absolute ones
  // must lie inside it). Symlinks are stored as links, never followed.
  std::vector<std::string> paths;
  std::vector<std::string> excludes;    // more patterns, as default_secret_excludes()
  bool include_secrets = false;         // drop the built-in secret excludes
  bool ignore_missing = false;          // a named path that does not exist is a warning, not an error
  std::string name_prefix = "config";   // config/config_YYYYMMDD_HHMMSS.tar.gz
  Compression compression = Compression::gzip;
  int level = -1;
};

// Streams the files into `repo` as a tar (no temporary copy). The manifest's `source`
// lists every member (name, type, size, mode, SHA-256 of the content, symlink target),
// the excluded names and the base directory. Throws not_found naming a path that does
// not exist (unless ignore_missing), invalid_argument for a path outside base_dir,
// io/permission naming the file that cannot be read, dump_failed when a file changes
// size while it is read.
Manifest backup_files(Repository& repo, const FilesBackupOptions& opts, const RunContext& ctx);

// The endpoints backup_files and restore_files are built from, for pipelines of one's own.
struct FilesTarSourceOptions {          // as FilesBackupOptions
  std::string base_dir;
  std::vector<std::string> paths;
  std::vector<std::string> excludes;
  bool include_secrets = false;
  bool ignore_missing = false;
};

// What a files backup's manifest records besides the options.
struct FilesTarInfo {
  std::string base_dir;                 // resolved, absolute
  std::vector<std::string> excluded;    // names left out by a pattern
  std::vector<std::string> missing;     // named paths that did not exist (ignore_missing)
  // The member list (name, type, size, mode, SHA-256, ...), set when the source reached
  // the archive's end. The source writes it there: `info` must outlive the source.
  nlohmann::json members;
};

// The files as a pax tar Source (as backup_files stores it). The paths are collected and
// checked (throwing as backup_files does) before this returns.
std::unique_ptr<Source> files_tar_source(const FilesTarSourceOptions& opts, const RunContext& ctx,
                                         FilesTarInfo* info = nullptr);

struct FilesRestoreOptions {
  std::string target;                   // the directory to restore into (its parent must exist)
  std::vector<std::string> only;        // restore only members matching one of these globs
                                        // (a match on a directory takes everything below it)
  bool dry_run = false;                 // check and list, write nothing
  bool overwrite = false;               // replace existing files whose content or mode differ
  bool keep_special_modes = false;      // keep setuid/setgid and world-write bits (dropped by default)
};

// What a restore did (or, with dry_run, would do) to one member.
struct FileAction {
  std::string name;    // relative to the target
  std::string action;  // "create", "replace", "unchanged", "conflict" (dry run only)
};

struct FilesExtractSinkOptions : FilesRestoreOptions {
  // The backup whose payload the sink receives, when there is one: named in messages.
  std::optional<Manifest> backup;
  // Its member list (FilesTarInfo::members): every member must match it (type, size,
  // mode, owner, content). None: the tar's own members, checked only for safety.
  std::optional<nlohmann::json> members;
};

// The whole of restore_files as a Sink of a tar stream: every member checked and
// extracted into a fresh staging directory beside the target as it arrives, moved into
// place only on commit (with the checks and refusals restore_files makes). abort(), or
// destroying an uncommitted sink, removes the staging directory: the target is as it
// was. `actions` (if given; must outlive the sink) gets what the commit did.
std::unique_ptr<Sink> files_extract_sink(const FilesExtractSinkOptions& opts, const RunContext& ctx,
                                         std::vector<FileAction>* actions = nullptr);

// Restores the backup into opts.target. The archive is extracted into a fresh
// directory beside the target (same filesystem), every member checked on the way
// (no absolute names, no "..", no links leading outside, nothing written through a
// link, only files, directories, symlinks and hard links); only when the whole archive
// extracted and its checksum matched the manifest are the members moved into place.
// Existing files with other content or mode are refused (Code::exists, naming them)
// unless overwrite; identical ones are left alone; directories are merged. A failure
// leaves the target as it was. Members are restored without setuid/setgid and
// world-write bits unless keep_special_modes; sparse members are refused (backup_files
// never writes them). Throws restore_failed naming an unsafe member, corrupt when the
// artifact or a member (type, content, size, mode, owner) does not match the manifest,
// not_found when an `only` glob matches nothing. dry_run makes the same checks.
std::vector<FileAction> restore_files(Repository& repo, const Manifest& backup, const FilesRestoreOptions& opts,
                                      const RunContext& ctx);

}  // namespace mevbackup
