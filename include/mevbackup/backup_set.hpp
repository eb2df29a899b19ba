// Backup sets: the backups one `run` of a plan took of every source, named together in one
// set manifest ("sets/<plan>_YYYYMMDD_HHMMSS.set.json") that is written last, after every
// member's own manifest. A set is complete only while every member's manifest is there,
// still describes the same artifact (id, SHA-256) and is trusted; a set whose member was
// pruned or changed by hand is listed as incomplete, with the member named, and is never
// restored or counted as good. Set manifests are signed like backup manifests when the
// repository has a signing key.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mevbackup/repository.hpp"

namespace mevbackup {

inline constexpr const char* kSetDir = "sets/";
inline constexpr const char* kSetSuffix = ".set.json";

struct SetMember {
  std::string source;  // "postgres.main": the plan's table and name
  std::string kind;    // "postgres", "redis", "files"
  std::string id, path, sha256;
  std::string source_name;  // the manifest's source_name (the database, the Redis, "config")
};

struct BackupSet {
  std::string id;    // "<plan>_YYYYMMDD_HHMMSS"
  std::string plan;  // the plan's name
  std::string started_at, finished_at;  // RFC 3339 UTC
  std::vector<SetMember> members;
  nlohmann::json objectives = nlohmann::json::object();  // {"rpo_seconds": .., "rto_seconds": ..}
  std::string key() const { return std::string(kSetDir) + id + kSetSuffix; }
  nlohmann::json to_json() const;
  static BackupSet from_json(const nlohmann::json& j, const std::string& where);
  const SetMember* member(const std::string& source) const;
};

struct BackupSetEntry {
  BackupSet set;
  bool complete = false;
  std::string problem;  // why it is not complete: "member postgres.main (mev_..._020000) is gone"
};

// Writes `s` (signed when the repository has a signing key) under a name not yet taken
// (s.id gets a "_2", "_3" ... suffix when two runs share a second). Throws when a member's
// manifest does not match what the set names: a set is never written over a missing member.
void write_backup_set(Repository& repo, BackupSet& s, const LogFn& log = {});
// Every set of `plan` (all plans when empty), oldest first, each checked against its
// members' manifests. Unreadable set manifests are reported through `log` and skipped.
std::vector<BackupSetEntry> list_backup_sets(Repository& repo, const std::string& plan = "", const LogFn& log = {});
// "latest" (the newest complete set) or an id; throws not_found naming what was there, or
// corrupt/not_found naming the member when the set named is not complete.
BackupSetEntry find_backup_set(Repository& repo, const std::string& plan, const std::string& id_or_latest,
                               const LogFn& log = {});
// The ids of the backups that belong to a set still in the repository (complete or not):
// prune leaves them to the set's own retention.
std::vector<std::string> backups_in_sets(Repository& repo, const LogFn& log = {});
// Deletes a set: its members first (each as Repository::remove_backup), the set manifest last.
void remove_backup_set(Repository& repo, const BackupSet& s, const LogFn& log = {});

}  // namespace mevbackup
