#include "mevbackup/retention.hpp"

#include <algorithm>
#include <ctime>
#include <map>
#include <optional>

#include <fmt/format.h>

#include "mevbackup/error.hpp"

namespace mevbackup {

void RetentionPolicy::validate() const {
  auto bad = [](const char* what, int v) {
    return Error(Code::invalid_argument, fmt::format("{} must not be negative (got {})", what, v));
  };
  if (keep_last < 1)
    throw Error(Code::invalid_argument,
                fmt::format("keep-last must be at least 1 (got {}): retention never deletes the newest backup", keep_last));
  if (keep_days < 0) throw bad("keep-days", keep_days);
  if (keep_daily < 0) throw bad("keep-daily", keep_daily);
  if (keep_weekly < 0) throw bad("keep-weekly", keep_weekly);
  if (keep_monthly < 0) throw bad("keep-monthly", keep_monthly);
  if (keep_yearly < 0) throw bad("keep-yearly", keep_yearly);
  if (incomplete_grace.count() < 0) throw Error(Code::invalid_argument, "the grace period must not be negative");
  if (future_allowance.count() < 0)
    throw Error(Code::invalid_argument, "the allowance for backups finished in the future must not be negative");
}

namespace {

std::tm utc(TimePoint t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  return tm;
}

std::string bucket(TimePoint t, char kind) {
  std::tm tm = utc(t);
  char buf[32];
  switch (kind) {
    case 'd': std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm); break;
    case 'w': std::strftime(buf, sizeof buf, "%G-W%V", &tm); break;
    case 'm': std::strftime(buf, sizeof buf, "%Y-%m", &tm); break;
    default: std::strftime(buf, sizeof buf, "%Y", &tm); break;
  }
  return buf;
}

}  // namespace

std::vector<RetentionDecision> apply_retention(const std::vector<RetentionItem>& backups,
                                               const std::vector<IncompleteItem>& incomplete,
                                               const RetentionPolicy& policy, TimePoint now) {
  policy.validate();
  std::vector<RetentionDecision> out(backups.size());
  std::map<std::pair<std::string, std::string>, std::vector<size_t>> groups;
  for (size_t i = 0; i < backups.size(); ++i) {
    out[i].id = backups[i].id;
    groups[{backups[i].kind, backups[i].source}].push_back(i);
  }
  for (auto& [key, idx] : groups) {
    // Newest first; ties broken by id so the result does not depend on input order.
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
      if (backups[a].created != backups[b].created) return backups[a].created > backups[b].created;
      return backups[a].id > backups[b].id;
    });
    std::vector<std::string> reasons(backups.size());
    auto keep = [&](size_t i, const std::string& why) {
      if (reasons[i].empty()) reasons[i] = why;
      else reasons[i] += "; " + why;
    };
    int last = 0;
    std::map<char, int> counts;
    std::map<char, std::string> last_bucket;
    const std::pair<char, int> buckets[] = {{'d', policy.keep_daily}, {'w', policy.keep_weekly},
                                            {'m', policy.keep_monthly}, {'y', policy.keep_yearly}};
    static const std::map<char, const char*> bucket_name = {{'d', "daily"}, {'w', "weekly"}, {'m', "monthly"},
                                                             {'y', "yearly"}};
    auto from_future = [&](const RetentionItem& b) {
      TimePoint end = b.finished == TimePoint{} ? b.created : b.finished;
      return end > now + policy.future_allowance;
    };
    // A later failure of the newest backup that ever verified good may be the check's
    // fault as much as the backup's: it stays until a newer one has verified good.
    std::optional<size_t> newest_ever_good;
    for (size_t i : idx)
      if (!from_future(backups[i]) && (backups[i].ever_good || backups[i].state == BackupState::good)) {
        newest_ever_good = i;
        break;
      }
    bool newest_good_seen = false;
    size_t usable_kept = 0;
    for (size_t i : idx) {
      const RetentionItem& b = backups[i];
      if (from_future(b)) continue;
      if (newest_ever_good == i && b.state != BackupState::good)
        keep(i, "newest backup that ever verified good (no newer one has)");
      if (b.state == BackupState::failed) continue;
      if (b.state == BackupState::good && !newest_good_seen) {
        newest_good_seen = true;
        keep(i, "newest verified-good backup");
      }
      if (last < policy.keep_last) {
        ++last;
        keep(i, fmt::format("one of the last {}", policy.keep_last));
      }
      if (policy.keep_days > 0 && b.created >= now - std::chrono::hours(24) * policy.keep_days)
        keep(i, fmt::format("within {} days", policy.keep_days));
      for (auto [k, n] : buckets) {
        if (n <= 0) continue;
        std::string bk = bucket(b.created, k);
        if (bk != last_bucket[k] && counts[k] < n) {
          last_bucket[k] = bk;
          ++counts[k];
          keep(i, fmt::format("{} {}", bucket_name.at(k), bk));
        }
      }
      if (!reasons[i].empty()) ++usable_kept;
    }
    for (size_t i : idx) {
      const RetentionItem& b = backups[i];
      if (from_future(b)) {
        out[i].keep = true;
        out[i].reason = fmt::format(
            "finished {} (after now + {} s: a wrong clock?); kept, and counted for no rule: its age is unknown",
            format_rfc3339(b.finished == TimePoint{} ? b.created : b.finished), policy.future_allowance.count());
      } else if (newest_ever_good == i && b.state == BackupState::failed) {
        out[i].keep = true;
        out[i].reason = reasons[i];
      } else if (b.state == BackupState::failed) {
        if (usable_kept == 0) {
          out[i].keep = true;
          out[i].reason = "failed verification, but the group has no usable backup to keep instead";
        } else {
          out[i].keep = false;
          out[i].reason = "failed verification";
        }
      } else if (reasons[i].empty()) {
        out[i].keep = false;
        out[i].reason = "matches no keep rule";
      } else {
        out[i].keep = true;
        out[i].reason = reasons[i];
      }
    }
  }
  for (auto& inc : incomplete) {
    RetentionDecision d;
    d.id = inc.key;
    d.incomplete = true;
    if (inc.stored + policy.incomplete_grace <= now) {
      d.keep = false;
      d.reason = fmt::format("incomplete (no manifest), stored {}", format_rfc3339(inc.stored));
    } else {
      d.keep = true;
      d.reason = "incomplete (no manifest), within the grace period: may still be in progress";
    }
    out.push_back(std::move(d));
  }
  return out;
}

std::chrono::seconds parse_duration(const std::string& text) {
  auto bad = [&] {
    return Error(Code::invalid_argument,
                 fmt::format("invalid duration \"{}\" (use e.g. 90s, 30m, 25h, 7d, 2w, 1d12h)", text));
  };
  if (text.empty()) throw bad();
  long long total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    long long n = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      n = n * 10 + (text[i] - '0');
      if (n > 1000000000LL) throw bad();
      ++i;
    }
    if (i == start || i == text.size()) throw bad();
    switch (text[i]) {
      case 's': total += n; break;
      case 'm': total += n * 60; break;
      case 'h': total += n * 3600; break;
      case 'd': total += n * 86400; break;
      case 'w': total += n * 7 * 86400; break;
      default: throw bad();
    }
    ++i;
  }
  if (total <= 0) throw bad();
  return std::chrono::seconds(total);
}

}  // namespace mevbackup
