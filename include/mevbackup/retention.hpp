// RetentionPolicy: a pure function from the catalog and "now" to what to delete, and why.
//
// Rules (per kind and source, as restic's `forget`): a backup is kept when any rule
// keeps it. Invariants, whatever the policy:
//  - the keep_last (>= 1) newest usable backups are kept, so retention can never empty
//    a group, however old its backups are (the runbook's `find -mtime +30 -delete` did);
//  - the newest verified-good backup is kept, and so is the newest backup that ever
//    verified good (its latest record may say failed) until a newer one verifies good;
//  - a backup finished after now + future_allowance (a host with a wrong clock) counts
//    for no rule and is kept: its age is unknown, so no rule can say it is old, and
//    it must not take the newest slot of keep_last from the real newest backup;
//  - a backup whose verification failed counts for no rule; it is deleted only when the
//    group keeps at least one usable backup;
//  - an incomplete artifact (no manifest) is never counted, and is deleted only when
//    older than the grace period.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "mevbackup/clock.hpp"

namespace mevbackup {

struct RetentionPolicy {
  int keep_last = 1;    // >= 1
  int keep_days = 0;    // 0: no age rule
  int keep_daily = 0;
  int keep_weekly = 0;  // ISO weeks
  int keep_monthly = 0;
  int keep_yearly = 0;
  std::chrono::seconds incomplete_grace{24 * 3600};
  // How far in the future a backup may have finished (clocks of two hosts differ a
  // little) and still count for keep_last and the other rules.
  std::chrono::seconds future_allowance{15 * 60};
  // Throws invalid_argument naming the bad field.
  void validate() const;
};

enum class BackupState { unverified, good, failed };

struct RetentionItem {
  std::string id;
  std::string kind;
  std::string source;
  TimePoint created;
  BackupState state = BackupState::unverified;
  TimePoint finished{};    // when the backup ended; the epoch: unknown (`created` is used)
  bool ever_good = false;  // some verification of it succeeded, whatever the latest says
};

struct IncompleteItem {
  std::string key;
  TimePoint stored;  // the object's mtime
};

struct RetentionDecision {
  std::string id;     // backup id, or the key of an incomplete object
  bool incomplete = false;
  bool keep = true;
  std::string reason;
  bool foreign = false;  // an object the library did not write (prune): always kept
};

// One decision per item and per incomplete object, in input order (backups first).
std::vector<RetentionDecision> apply_retention(const std::vector<RetentionItem>& backups,
                                               const std::vector<IncompleteItem>& incomplete,
                                               const RetentionPolicy& policy, TimePoint now);

// "90s", "30m", "25h", "7d", "2w", or combinations like "1d12h"; throws invalid_argument.
std::chrono::seconds parse_duration(const std::string& text);

}  // namespace mevbackup
