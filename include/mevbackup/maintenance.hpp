// Operations over a whole repository: prune (retention applied), verify (re-read and
// optionally restore-test backups), check (freshness against a maximum age).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "mevbackup/repository.hpp"
#include "mevbackup/retention.hpp"

namespace mevbackup {

// ---- prune
struct PruneOptions {
  RetentionPolicy policy;
  std::string kind;    // empty: every kind
  std::string source;  // empty: every source
  bool dry_run = false;
};
struct PruneResult {
  std::vector<RetentionDecision> decisions;  // every backup, leftover and foreign object looked at
  size_t deleted = 0;
  size_t foreign = 0;  // objects kept because the library did not write them
  nlohmann::json to_json() const;
};
// Applies the policy at `now`; deletes (unless dry_run) the artifact first and the
// manifest last. Reports each decision through ctx.log as it goes.
// Of the objects without a manifest only the library's own leftovers (temporary files
// of uploads that never committed, unfinished multipart uploads) are deleted once older
// than the grace period; every other one is foreign and kept, whatever its age.
PruneResult prune(Repository& repo, const PruneOptions& opts, TimePoint now, const RunContext& ctx);

// A leftover of the library's own: an unfinished multipart upload, or a temporary file
// of an upload that never committed (".<name>.tmp-<random>" beside its final name).
bool is_own_leftover(const ObjectInfo& o);

// ---- adopt: backups written by the runbook's scripts, taken over
struct AdoptOptions {
  bool dry_run = false;         // check and report; write no manifest
  std::string pg_restore_path;  // empty: the newest pg_restore installed
};
struct AdoptItem {
  std::string key;      // the object (or, for a directory named like a backup, "dir/")
  std::string outcome;  // "adopted", "damaged", "foreign" or "leftover"
  std::string kind, id; // for adopted and damaged ones
  std::string reason;   // what was checked, what is wrong, or why it is not a backup
};
struct AdoptResult {
  std::vector<AdoptItem> items;  // one per object without a manifest, sorted by key
  size_t adopted = 0, damaged = 0, foreign = 0;
  nlohmann::json to_json() const;
};
// Every object without a manifest named as the runbook names its backups
// (database/*.dump.gz, redis/*.rdb.gz, config/config_*.tar.gz) is read whole, streaming:
// gunzip, then pg_restore's table of contents, the RDB header and CRC-64, or the tar
// members. A readable one gets a manifest marked "adopted" (times from the name's
// _YYYYMMDD_HHMMSS, read as UTC, else the object's mtime; sizes and SHA-256s; no row
// counts) and is from then on a backup like any other. Nothing is deleted, renamed or
// overwritten: a damaged or foreign object is reported and left as it is. Takes the
// repository lock exclusively (shared for a dry run), so no backup is publishing meanwhile.
AdoptResult adopt(Repository& repo, const AdoptOptions& opts, const RunContext& ctx);

// ---- verify
struct VerifyOptions {
  std::string kind = "";            // empty: every kind
  std::string source;               // with "latest"
  std::string restore_test_conninfo;  // postgres: restore into a scratch database on this server
  std::vector<std::string> queries;   // postgres: SQL checks run in the scratch database
  bool record = true;                 // store the outcome beside each backup
};
struct VerifyResult {
  std::string id;
  Verification verification;
};
// which: an id, "latest" or "all". Never throws for a backup that fails verification
// (that is a result: its bytes are corrupt or missing, or its restore failed); throws,
// recording nothing for that backup, when the check itself could not run (the storage
// or the restore-test server unreachable, bad credentials, a query that fails), so an
// outage is never mistaken for bad backups. Backups verified before are recorded.
std::vector<VerifyResult> verify(Repository& repo, const std::string& which, const VerifyOptions& opts,
                                 const RunContext& ctx);

// ---- check (monitoring)
enum class CheckStatus { ok = 0, warning = 1, critical = 2, unknown = 3 };
struct CheckOptions {
  std::string kind;  // empty: every kind found
  std::chrono::seconds max_age{25 * 3600};  // the RPO
  double warning_fraction = 0.8;  // no longer used: see `warning`
  // A group's newest backup older than `warning` is WARNING, older than `critical` is
  // CRITICAL. Zero: warning = max_age, critical = 2 x max_age (two missed daily runs).
  std::chrono::seconds warning{0};
  std::chrono::seconds critical{0};
  // A backup finished later than now + this is dated in the future (a wrong clock, or a
  // repository written by another host): WARNING, and it does not count for freshness.
  std::chrono::seconds future_skew{300};
};
struct CheckResult {
  CheckStatus status = CheckStatus::unknown;
  std::string summary;     // one line, Nagios style, with perfdata after '|'
  nlohmann::json details;  // per kind/source
  std::string prometheus;  // node_exporter textfile-collector exposition
};
// Never throws for an unreadable repository: that is CheckStatus::unknown; a repository
// that does not exist is CheckStatus::critical. Both give mevbackup_repository_up 0.
// Throws invalid_argument for thresholds that make no sense (critical below warning).
CheckResult check(Repository& repo, const CheckOptions& opts, TimePoint now, const RunContext& ctx);
// Writes `text` to `path` atomically (temp file in the same directory, fsync, rename), mode 0644.
void write_file_atomically(const std::string& path, const std::string& text);


// ---- rekey (docs/encryption.md)
// Re-encrypts backup `which` ("latest" or an id, of `kind` and `source` when not empty)
// to ctx.encryption's recipients, opening it with its identities: only the age header of
// each object is rewritten (the payload is copied as it is, its file key unchanged), the
// old bytes are checked against the manifest on the way, and the manifest is written anew
// (signed when the repository has a signing key). The rekeyed backup gets a new id
// (<id>_1, ...; started_at unchanged, source.rekeyed_from names the old one) and is
// complete before the old backup is removed, so a failure leaves the old one intact.
// A base backup moves with all its parts to basebackup/<id>_N/. The WAL archive is not
// rekeyed: its segments keep their recipients (PostgreSQL fetches them by name, so they
// cannot get a new one), and old identities keep opening them.
struct RekeyResult {
  std::string old_id, new_id;
  std::vector<std::string> before, after;  // recipients
  Manifest manifest;                       // the new one
};
RekeyResult rekey(Repository& repo, const std::string& which, const std::string& kind, const std::string& source,
                  const RunContext& ctx);

}  // namespace mevbackup
