// Monitor: how old is the newest complete backup of each kind and source, against a
// maximum age (the RPO); Nagios statuses and a Prometheus textfile.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <random>

#include <fmt/format.h>

#include "mevbackup/maintenance.hpp"

namespace mevbackup {

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

std::string label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\', out += c;
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

long long epoch(const std::string& rfc3339) {
  return std::chrono::duration_cast<std::chrono::seconds>(parse_rfc3339(rfc3339).time_since_epoch()).count();
}

}  // namespace

CheckResult check(Repository& repo, const CheckOptions& opts, TimePoint now, const RunContext& ctx) {
  CheckResult r;
  if (opts.max_age.count() <= 0) throw Error(Code::invalid_argument, "max-age must be positive");
  Catalog cat;
  try {
    cat = repo.catalog(opts.kind, ctx.log);
  } catch (const Error& e) {
    r.status = CheckStatus::unknown;
    r.summary = fmt::format("MEVBACKUP UNKNOWN - cannot read {}: {}", repo.storage().describe(), e.what());
    r.details = {{"status", "UNKNOWN"}, {"error", e.what()}, {"groups", nlohmann::json::array()}};
    r.prometheus = "# HELP mevbackup_repository_up Whether the repository could be read.\n"
                   "# TYPE mevbackup_repository_up gauge\nmevbackup_repository_up 0\n";
    return r;
  }
  struct Group {
    const CatalogEntry* newest = nullptr;
    const CatalogEntry* newest_verified = nullptr;
    size_t count = 0;
  };
  std::map<std::pair<std::string, std::string>, Group> groups;
  for (auto& e : cat.backups) {
    Group& g = groups[{e.manifest.kind, e.manifest.source_name}];
    ++g.count;
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
  std::string last_success, sizes, verified, totals, statuses;
  for (auto& [key, g] : groups) {
    const Manifest& m = g.newest->manifest;
    auto age = std::chrono::duration_cast<std::chrono::seconds>(now - parse_rfc3339(m.finished_at));
    CheckStatus s = CheckStatus::ok;
    if (age > opts.max_age) s = CheckStatus::critical;
    else if (age.count() >= opts.warning_fraction * static_cast<double>(opts.max_age.count())) s = CheckStatus::warning;
    worst(s);
    parts.push_back(fmt::format("{}/{}: {} newest {} ago (max {})", key.first, key.second, status_name(s), human(age),
                                human(opts.max_age)));
    nlohmann::json jg = {{"kind", key.first}, {"source", key.second}, {"status", status_name(s)},
                         {"newest_id", m.id}, {"newest_finished_at", m.finished_at}, {"age_seconds", age.count()},
                         {"max_age_seconds", opts.max_age.count()}, {"backups", g.count}, {"size", m.size}};
    std::string lbl = fmt::format("{{kind=\"{}\",source=\"{}\"}}", label(key.first), label(key.second));
    last_success += fmt::format("mevbackup_last_success_timestamp_seconds{} {}\n", lbl, epoch(m.finished_at));
    sizes += fmt::format("mevbackup_last_backup_size_bytes{} {}\n", lbl, m.size);
    totals += fmt::format("mevbackup_backups_total{} {}\n", lbl, g.count);
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
  metric_header("mevbackup_backups_total", "Complete backups in the repository.");
  metrics += totals;
  metric_header("mevbackup_check_status", "Freshness status: 0 OK, 1 WARNING, 2 CRITICAL.");
  metrics += statuses;
  metric_header("mevbackup_incomplete_objects", "Objects without a manifest (failed or running backups).");
  metrics += fmt::format("mevbackup_incomplete_objects {}\n", cat.incomplete.size());
  std::string joined;
  for (auto& p : parts) joined += (joined.empty() ? "" : "; ") + p;
  r.summary = fmt::format("MEVBACKUP {} - {}", status_name(r.status), joined);
  r.details = {{"status", status_name(r.status)}, {"summary", r.summary}, {"groups", jgroups},
               {"incomplete", cat.incomplete.size()}, {"now", format_rfc3339(now)}};
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
