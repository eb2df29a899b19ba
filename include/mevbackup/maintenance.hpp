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
  std::vector<RetentionDecision> decisions;  // every backup and incomplete object looked at
  size_t deleted = 0;
  nlohmann::json to_json() const;
};
// Applies the policy at `now`; deletes (unless dry_run) the artifact first and the
// manifest last. Reports each decision through ctx.log as it goes.
PruneResult prune(Repository& repo, const PruneOptions& opts, TimePoint now, const RunContext& ctx);

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
  std::chrono::seconds max_age{25 * 3600};
  double warning_fraction = 0.8;
};
struct CheckResult {
  CheckStatus status = CheckStatus::unknown;
  std::string summary;     // one line, Nagios style
  nlohmann::json details;  // per kind/source
  std::string prometheus;  // node_exporter textfile-collector exposition
};
// Never throws for an unreadable repository: that is CheckStatus::unknown.
CheckResult check(Repository& repo, const CheckOptions& opts, TimePoint now, const RunContext& ctx);
// Writes `text` to `path` atomically (temp file in the same directory, fsync, rename), mode 0644.
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace mevbackup
