// The manifest: the facts about one artifact, written beside it, last.
// An artifact without a manifest is not a backup.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mevbackup/signing.hpp"

namespace mevbackup {

// A backup id is used as a path component (basebackup/<id>/) and written into server
// configuration (postgresql.auto.conf), so whatever its source (a manifest, the user) it
// is only [A-Za-z0-9_.-], 1..255 characters, not beginning with '.' (as the name
// prefixes a backup is given, check_name_prefix).
bool valid_backup_id(const std::string& id);

struct Manifest {
  static constexpr int kFormatVersion = 1;
  std::string id;           // e.g. "mev_protection_20261127_020000"
  std::string kind;         // "postgres"
  std::string path;         // artifact key, relative to the repository
  std::string format;       // payload format, e.g. "pg_dump-custom"
  std::string compression;  // "gzip" | "none"
  // "age" when the stored bytes are encrypted (after compression; encryption.hpp), "" when
  // not; and the recipients they are encrypted to ("age1...", or "scrypt"), never keys.
  std::string encryption;
  std::vector<std::string> recipients;
  // The manifest's "signature" member as stored (signing.hpp; null: unsigned), and what
  // the repository found when it checked it against its verify keys (not written).
  nlohmann::json signature_record;
  SignatureState signature = SignatureState::unchecked;
  std::string signature_problem;  // why it is not good, when checked
  uint64_t size = 0;        // stored bytes
  std::string sha256;       // of the stored bytes
  uint64_t payload_size = 0;
  std::string payload_sha256;
  std::string started_at;   // RFC 3339 UTC
  std::string finished_at;
  std::string source_name;  // the database (or service) backed up
  nlohmann::json source = nlohmann::json::object();  // kind-specific facts: versions, row counts...
  nlohmann::json tool = nlohmann::json::object();    // {"name","version"}
  // Written by another tool (the runbook's scripts) and taken over by `adopt`: no
  // kind-specific facts (row counts, key counts), times from the file's name.
  bool adopted = false;

  // The key of this manifest in storage: "<path>.manifest.json".
  std::string key() const { return path + kManifestSuffix; }
  static constexpr const char* kManifestSuffix = ".manifest.json";

  // Another stored object of a backup besides its artifact, with the manifest's
  // record of it: copied, verified and deleted with the backup.
  struct Part {
    std::string path;
    uint64_t size = 0;
    std::string sha256;
  };
  // The other stored objects of a backup: a PITR base backup's tablespace tars and
  // backup_manifest (source.files), a files backup's member list (source.member_list,
  // always "<path>.members.json.gz"). Only keys beside the artifact: a manifest never
  // names another backup's objects. Empty for other kinds.
  std::vector<Part> extra_parts() const;
  std::vector<std::string> extra_paths() const;  // the paths of extra_parts()
  // A summary's extra_parts(), taken from the whole manifest (summary() drops the
  // bulky facts a kind may read them from). Not written to JSON.
  std::optional<std::vector<Part>> listed_parts;
  static constexpr const char* kMemberListSuffix = ".members.json.gz";

  // What a listing keeps of a manifest: every field, but of `source` only its scalar
  // facts (versions, LSNs, times) and its parts ("files", "member_list");
  // bulky facts (row counts per table, archive members, RDB key counts) are dropped, so
  // a catalog of many large manifests stays small. Restores and verify read the whole
  // manifest again (Repository::find, Repository::load).
  Manifest summary() const;

  nlohmann::json to_json() const;
  std::string to_string() const;  // pretty JSON, newline-terminated
  // Throws corrupt naming `where` and the missing/invalid field.
  // Also throws corrupt when the id is not a valid_backup_id().
  static Manifest from_json(const nlohmann::json& j, const std::string& where);
  static Manifest parse(const std::string& text, const std::string& where);
};

}  // namespace mevbackup
