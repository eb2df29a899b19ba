// Monitor: how old is the newest complete backup of each kind and source, against a
// maximum age (the RPO); Nagios statuses and a Prometheus textfile.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <map>
#include <optional>
#include <random>

#include <set>

#include <fmt/format.h>

#include "mevbackup/maintenance.hpp"
#include "report_format.hpp"

namespace mevbackup {

using report_format::prometheus_label;

namespace {

const char* status_name(CheckStatus s) {
  switch (s) {
    case CheckStatus::ok: return "OK";
    case CheckStatus::warning: return "WARNING";
    case CheckStatus::critical: return "CRITICAL";
    default: return "UNKNOWN";
  }
}

std::string human(std::chrono::seconds s) {
  long long t = s.count();
  if (t < 0) return "in the future";
  if (t < 60) return fmt::format("{}s", t);
  if (t < 3600) return fmt::format("{}m", t / 60);
  if (t < 86400) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  return fmt::format("{}d{:02}h", t / 86400, (t % 86400) / 3600);
}

long long epoch(const std::string& rfc3339) {
  return std::chrono::duration_cast<std::chrono::seconds>(parse_rfc3339(rfc3339).time_since_epoch()).count();
}

}  // namespace

namespace {

// The repository is down: no listing, so no series but mevbackup_repository_up 0 (which
// the alert rules fire on).
CheckResult repository_down(CheckStatus status, const std::string& why) {
  CheckResult r;
  r.status = status;
  r.summary = fmt::format("MEVBACKUP {} - {}", status_name(status), why);
  r.details = {{"status", status_name(status)}, {"error", why}, {"summary", r.summary},
               {"groups", nlohmann::json::array()}};
  r.prometheus = "# HELP mevbackup_repository_up Whether the repository could be read.\n"
                 "# TYPE mevbackup_repository_up gauge\nmevbackup_repository_up 0\n";
  return r;
}

// Nagios perfdata label: quoted when it holds anything but letters, digits and '_'.
std::string perf_label(const std::string& l) {
  if (l.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == std::string::npos)
    return l;
  std::string q = "'";
  for (char c : l) q += c == '\'' ? std::string("''") : std::string(1, c);
  return q + "'";
}

}  // namespace

CheckResult check(Repository& repo, const CheckOptions& opts, TimePoint now, const RunContext& ctx) {
  if (opts.max_age.count() <= 0) throw Error(Code::invalid_argument, "max-age must be positive");
  if (opts.warning.count() < 0 || opts.critical.count() < 0 || opts.future_skew.count() < 0)
    throw Error(Code::invalid_argument, "warning, critical and the clock skew allowance must not be negative");
  const std::chrono::seconds warn = opts.warning.count() ? opts.warning : opts.max_age;
  const std::chrono::seconds crit = opts.critical.count() ? opts.critical : 2 * opts.max_age;
  if (crit < warn)
    throw Error(Code::invalid_argument,
                fmt::format("critical ({}) must not be shorter than warning ({})", human(crit), human(warn)));
  Catalog cat;
  std::optional<int64_t> wal_newest;  // mtime of the newest object in the WAL archive
  try {
    if (!repo.storage().exists())
      return repository_down(CheckStatus::critical,
                             fmt::format("repository {} does not exist", repo.storage().describe()));
    cat = repo.catalog(opts.kind, ctx.log);
    if (opts.kind.empty() || opts.kind == "basebackup")
      for (auto& o : repo.storage().list("wal/"))
        if (!wal_newest || o.mtime > *wal_newest) wal_newest = o.mtime;
  } catch (const Error& e) {
    return repository_down(CheckStatus::unknown, fmt::format("cannot read {}: {}", repo.storage().describe(), e.what()));
  }
  CheckResult r;
  struct Group {
    const CatalogEntry* newest = nullptr;  // the newest not dated in the future
    const CatalogEntry* newest_verified = nullptr;
    std::vector<const CatalogEntry*> future;
    std::vector<const CatalogEntry*> stale_keys;  // encrypted to a recipient not in the current set
    size_t count = 0;
  };
  // The current recipients (--recipient): backups encrypted to others need an identity
  // that may no longer be kept, and a plaintext newest backup means encryption was lost.
  std::set<std::string> current;
  if (ctx.encryption)
    for (auto& rec : ctx.encryption->recipient_names) current.insert(rec);
  const TimePoint horizon = now + opts.future_skew;
  std::map<std::pair<std::string, std::string>, Group> groups;
  for (auto& e : cat.backups) {
    Group& g = groups[{e.manifest.kind, e.manifest.source_name}];
    ++g.count;
    if (!current.empty() && !e.manifest.encryption.empty())
      for (auto& rec : e.manifest.recipients)
        if (!current.count(rec)) {
          g.stale_keys.push_back(&e);
          break;
        }
    if (parse_rfc3339(e.manifest.finished_at) > horizon) {
      g.future.push_back(&e);
      continue;
    }
    g.newest = &e;  // the catalog is oldest first
    if (e.verification && e.verification->ok) g.newest_verified = &e;
  }
  r.status = CheckStatus::ok;
  std::vector<std::string> parts;
  nlohmann::json jgroups = nlohmann::json::array();
  std::string metrics;
  auto metric_header = [&](const char* name, const char* help) {
    metrics += fmt::format("# HELP {} {}\n# TYPE {} gauge\n", name, help, name);
  };
  auto worst = [&](CheckStatus s) {
    if (static_cast<int>(s) > static_cast<int>(r.status)) r.status = s;
  };
  if (groups.empty()) {
    worst(CheckStatus::critical);
    parts.push_back(fmt::format("no {}backups in {}", opts.kind.empty() ? "" : opts.kind + " ",
                                repo.storage().describe()));
  }
  std::string last_success, sizes, verified, totals, statuses, futures;
  std::vector<std::string> perf;  // per group: label, age, size
  long long oldest_age = -1;
  uint64_t oldest_size = 0;
  for (auto& [key, g] : groups) {
    std::string lbl =
        fmt::format("{{kind=\"{}\",source=\"{}\"}}", prometheus_label(key.first), prometheus_label(key.second));
    std::string name = key.first + "/" + key.second;
    nlohmann::json jg = {{"kind", key.first}, {"source", key.second}, {"backups", g.count},
                         {"max_age_seconds", opts.max_age.count()}, {"warning_seconds", warn.count()},
                         {"critical_seconds", crit.count()}, {"future", g.future.size()}};
    totals += fmt::format("mevbackup_backups{} {}\n", lbl, g.count);
    futures += fmt::format("mevbackup_future_dated_backups{} {}\n", lbl, g.future.size());
    CheckStatus s = CheckStatus::ok;
    std::string part;
    if (!g.newest) {
      s = CheckStatus::critical;
      part = fmt::format("{}: CRITICAL no backup dated before now", name);
    } else {
      const Manifest& m = g.newest->manifest;
      auto age = std::chrono::duration_cast<std::chrono::seconds>(now - parse_rfc3339(m.finished_at));
      if (age > crit) s = CheckStatus::critical;
      else if (age > warn) s = CheckStatus::warning;
      part = fmt::format("{}: {} newest {} ago (warning {}, critical {})", name, status_name(s), human(age),
                         human(warn), human(crit));
      jg.update({{"newest_id", m.id}, {"newest_finished_at", m.finished_at}, {"age_seconds", age.count()},
                 {"size", m.size}});
      last_success += fmt::format("mevbackup_last_success_timestamp_seconds{} {}\n", lbl, epoch(m.finished_at));
      sizes += fmt::format("mevbackup_last_backup_size_bytes{} {}\n", lbl, m.size);
      long long a = std::max<long long>(age.count(), 0);
      perf.push_back(fmt::format("{}={}s;{};{};0 {}={}B;;;0", perf_label(name + " age"), a, warn.count(), crit.count(),
                                 perf_label(name + " size"), m.size));
      if (a > oldest_age) oldest_age = a, oldest_size = m.size;
    }
    if (!g.future.empty()) {
      const Manifest& f = g.future.back()->manifest;
      if (s == CheckStatus::ok) s = CheckStatus::warning;
      part += fmt::format("; newest backup is dated in the future: {} finished {} ({} backup(s) after now + {})", f.id,
                          f.finished_at, g.future.size(), human(opts.future_skew));
      jg["future_newest_id"] = f.id;
    }
    if (!current.empty() && g.newest && g.newest->manifest.encryption.empty()) {
      if (s == CheckStatus::ok) s = CheckStatus::warning;
      part += fmt::format("; newest backup {} is not encrypted", g.newest->manifest.id);
      jg["newest_encrypted"] = false;
    }
    if (!g.stale_keys.empty()) {
      std::set<std::string> others;
      for (auto* e : g.stale_keys)
        for (auto& rec : e->manifest.recipients)
          if (!current.count(rec)) others.insert(rec);
      std::string list;
      for (auto& rec : others) list += (list.empty() ? "" : ", ") + rec;
      if (s == CheckStatus::ok) s = CheckStatus::warning;
      part += fmt::format("; {} backup(s) encrypted to recipients not in the current set ({}): keep their "
                          "identities while they are kept",
                          g.stale_keys.size(), list);
      jg["other_recipient_backups"] = g.stale_keys.size();
      jg["other_recipients"] = others;
    }
    worst(s);
    parts.push_back(part);
    jg["status"] = status_name(s);
    statuses += fmt::format("mevbackup_check_status{} {}\n", lbl, static_cast<int>(s));
    if (g.newest_verified) {
      jg["newest_verified_id"] = g.newest_verified->manifest.id;
      jg["newest_verified_at"] = g.newest_verified->verification->verified_at;
      verified += fmt::format("mevbackup_last_verify_success_timestamp_seconds{} {}\n", lbl,
                              epoch(g.newest_verified->verification->verified_at));
    }
    jgroups.push_back(jg);
  }
  metric_header("mevbackup_repository_up", "Whether the repository could be read.");
  metrics += "mevbackup_repository_up 1\n";
  metric_header("mevbackup_last_success_timestamp_seconds", "Unix time the newest complete backup finished.");
  metrics += last_success;
  metric_header("mevbackup_last_backup_size_bytes", "Stored size of the newest complete backup.");
  metrics += sizes;
  metric_header("mevbackup_last_verify_success_timestamp_seconds", "Unix time of the newest successful verification.");
  metrics += verified;
  metric_header("mevbackup_backups", "Complete backups in the repository.");
  metrics += totals;
  metric_header("mevbackup_future_dated_backups", "Backups finished after now plus the clock skew allowance.");
  metrics += futures;
  metric_header("mevbackup_check_status", "Freshness status: 0 OK, 1 WARNING, 2 CRITICAL.");
  metrics += statuses;
  metric_header("mevbackup_incomplete_objects", "Objects without a manifest (failed or running backups).");
  metrics += fmt::format("mevbackup_incomplete_objects {}\n", cat.incomplete.size());
  if (wal_newest) {
    metric_header("mevbackup_wal_last_archived_timestamp_seconds", "Unix time the newest WAL archive object was stored.");
    metrics += fmt::format("mevbackup_wal_last_archived_timestamp_seconds {}\n", *wal_newest);
  }
  std::string joined;
  for (auto& p : parts) joined += (joined.empty() ? "" : "; ") + p;
  // Perfdata: the group that freshness depends on as age/size, then each group when several.
  std::string perfdata;
  if (oldest_age >= 0)
    perfdata = fmt::format("age={}s;{};{};0 size={}B;;;0", oldest_age, warn.count(), crit.count(), oldest_size);
  else
    perfdata = "backups=0;;;0";
  if (wal_newest) {
    auto wal_age = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count() - *wal_newest;
    perfdata += fmt::format(" wal_age={}s;;;0", std::max<long long>(wal_age, 0));
  }
  if (perf.size() > 1)
    for (auto& p : perf) perfdata += " " + p;
  r.summary = fmt::format("MEVBACKUP {} - {} | {}", status_name(r.status), joined, perfdata);
  r.details = {{"status", status_name(r.status)}, {"summary", r.summary}, {"groups", jgroups},
               {"incomplete", cat.incomplete.size()}, {"now", format_rfc3339(now)},
               {"warning_seconds", warn.count()}, {"critical_seconds", crit.count()}};
  if (wal_newest) r.details["wal_newest_mtime"] = *wal_newest;
  r.prometheus = metrics;
  return r;
}

void write_file_atomically(const std::string& path, const std::string& text) {
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  std::mt19937_64 rng{std::random_device{}()};
  std::string tmp = fmt::format("{}.tmp-{:016x}", path, rng());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw sys_error(errno, fmt::format("cannot create {}", tmp));
  const char* p = text.data();
  size_t left = text.size();
  while (left) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : ENOSPC;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw sys_error(e, fmt::format("cannot write {}", tmp));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fchmod(fd, 0644) != 0 || ::fsync(fd) != 0 || ::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw sys_error(e, fmt::format("cannot write {}", tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw sys_error(e, fmt::format("cannot replace {}", path));
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace mevbackup
