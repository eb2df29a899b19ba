// The drill's report (drill_report.hpp): read into a DrillView, told as a summary and as
// a Prometheus textfile, and written with the page (drill_html.cpp) into a directory
// that keeps the earlier drills as history.
#include "mevbackup/drill_report.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include <fmt/format.h>

#include "mevbackup/error.hpp"
#include "mevbackup/file_stream.hpp"
#include "drill_view.hpp"
#include "../verify/report_format.hpp"

namespace mevbackup {

namespace drill_detail {

namespace {

using json = nlohmann::json;

const json& field(const json& j, const char* key) {
  static const json absent;
  if (!j.is_object()) return absent;
  auto it = j.find(key);
  return it == j.end() ? absent : *it;
}

std::string text(const json& j, const char* key) {
  const json& v = field(j, key);
  return v.is_string() ? v.get<std::string>() : std::string();
}

std::optional<double> number(const json& j, const char* key) {
  const json& v = field(j, key);
  if (!v.is_number()) return std::nullopt;
  double d = v.get<double>();
  return std::isfinite(d) ? std::optional<double>(d) : std::nullopt;
}

// Seconds of a duration or an objective: 0 when absent, bounded (no scale of the page
// or textfile has to cope with 1e308).
constexpr double kMaxSeconds = 1e9;
double seconds_of(const json& j, const char* key) {
  return std::clamp(number(j, key).value_or(0), 0.0, kMaxSeconds);
}

std::optional<bool> flag(const json& j, const char* key) {
  const json& v = field(j, key);
  return v.is_boolean() ? std::optional<bool>(v.get<bool>()) : std::nullopt;
}

std::optional<TimePoint> when(const std::string& s) {
  if (s.empty()) return std::nullopt;
  return try_parse_time(s);
}

std::vector<CheckView> read_checks(const json& detail) {
  std::vector<CheckView> out;
  const json& checks = field(detail, "checks");
  if (!checks.is_array()) return out;
  for (auto& c : checks) {
    if (!c.is_object()) continue;
    CheckView v;
    v.check = text(c, "check");
    const json& d = field(c, "detail");
    if (d.is_string()) v.detail = d.get<std::string>();
    else if (!d.is_null()) v.detail = d.dump(-1, ' ', false, json::error_handler_t::replace);
    v.ok = flag(c, "ok").value_or(false);
    out.push_back(std::move(v));
  }
  return out;
}

// Steps with their offsets from the drill's start. Times are often to the second, so a
// step seemingly starting less than a second before the previous one ended really
// started after it: it is drawn from that end.
std::vector<StepView> read_steps(const json& report, const std::optional<TimePoint>& start) {
  std::vector<StepView> out;
  const json& steps = field(report, "steps");
  if (!steps.is_array()) return out;
  double prev_end = 0;
  for (auto& s : steps) {
    if (!s.is_object()) continue;
    StepView v;
    v.name = text(s, "name");
    v.status = text(s, "status");
    v.message = text(s, "message");
    v.started_at = text(s, "started_at");
    v.seconds = seconds_of(s, "seconds");
    auto t = when(v.started_at);
    if (t && start) {
      v.offset = std::clamp(std::chrono::duration<double>(*t - *start).count(), 0.0, kMaxSeconds);
      if (v.offset < prev_end && prev_end - v.offset < 1.0) v.offset = prev_end;
    } else {
      v.offset = prev_end;
    }
    v.checks = read_checks(field(s, "detail"));
    for (auto& c : v.checks) v.checks_failed += c.ok ? 0 : 1;
    prev_end = std::max(prev_end, v.offset + v.seconds);
    out.push_back(std::move(v));
  }
  return out;
}

// The first failed check, as its step's name and the check.
std::optional<std::pair<const StepView*, const CheckView*>> first_failed_check(const DrillView& d) {
  for (auto& s : d.steps)
    for (auto& c : s.checks)
      if (!c.ok) return std::make_pair(&s, &c);
  return std::nullopt;
}

void explain_failure(DrillView& d) {
  for (auto& s : d.steps)
    if (s.status == "failed")
      d.reasons.push_back(s.message.empty() ? fmt::format("step {} failed", s.name)
                                            : fmt::format("step {} failed: {}", s.name, one_line(s.message)));
  if (auto f = first_failed_check(d)) {
    auto& c = *f->second;
    d.reasons.push_back(fmt::format("{} of {} checks failed, the first in {}: {}{}{}", d.checks_failed, d.checks,
                                    f->first->name, one_line(c.check), c.detail.empty() ? "" : ": ",
                                    one_line(c.detail)));
  } else if (!d.checks_ok) {
    d.reasons.push_back("the checks did not pass");
  }
  if (!d.rto_ok)
    d.reasons.push_back(d.rto > 0 ? fmt::format("the restore took {}, longer than the RTO of {}",
                                                duration_text(d.seconds), duration_text(d.rto))
                                  : std::string("the RTO was missed"));
  if (!d.rpo_ok)
    d.reasons.push_back(d.rpo > 0 && d.set_age
                            ? fmt::format("the newest backup set was {} old, older than the RPO of {}",
                                          duration_text(*d.set_age), duration_text(d.rpo))
                            : std::string("the RPO was missed"));
  if (!d.ok && d.reasons.empty())
    d.reasons.push_back(d.message.empty() ? fmt::format("the drill ended with status {}", d.status)
                                          : one_line(d.message));
}

}  // namespace

double DrillView::span() const {
  double end = seconds;
  for (auto& s : steps) end = std::max(end, s.offset + s.seconds);
  return end;
}

DrillView read_drill(const json& report) {
  DrillView d;
  d.plan = text(report, "plan");
  d.set = text(report, "set");
  d.status = text(report, "status");
  d.message = text(report, "message");
  d.started_at = text(report, "started_at");
  d.finished_at = text(report, "finished_at");
  d.set_started_at = text(report, "set_started_at");
  d.start = when(d.started_at);
  d.finish = when(d.finished_at);
  d.seconds = seconds_of(report, "seconds");
  d.rto = seconds_of(report, "rto_seconds");
  d.rpo = seconds_of(report, "rpo_seconds");
  if (auto age = number(report, "set_age_seconds")) d.set_age = std::clamp(*age, -kMaxSeconds, kMaxSeconds);
  d.ok = flag(report, "ok").value_or(false);
  d.steps = read_steps(report, d.start);
  for (auto& s : d.steps) {
    d.checks += s.checks.size();
    d.checks_failed += s.checks_failed;
  }
  // The drill's own verdicts win; without them they follow from the figures.
  d.rto_ok = flag(report, "rto_ok").value_or(d.rto <= 0 || d.seconds <= d.rto);
  d.rpo_ok = flag(report, "rpo_ok").value_or(d.rpo <= 0 || !d.set_age || *d.set_age <= d.rpo);
  d.checks_ok = flag(report, "checks_ok").value_or(d.checks_failed == 0);
  d.passed = d.ok && d.rto_ok && d.rpo_ok && d.checks_ok;
  if (!d.passed) explain_failure(d);
  return d;
}

std::string duration_text(double s) {
  if (!std::isfinite(s) || s < 0 || s > 1e12) return "-";
  if (s < 59.95) return fmt::format("{:.1f} s", s);
  long long t = std::llround(s);
  if (t < 3600) return fmt::format("{}m{:02}s", t / 60, t % 60);
  if (t < 86400) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  return fmt::format("{}d{:02}h", t / 86400, (t % 86400) / 3600);
}

std::string against_text(double value, double objective, const char* name) {
  if (objective <= 0) return fmt::format("{} (no {} in the plan)", duration_text(value), name);
  double pct = 100 * value / objective;
  return fmt::format("{} of the {} {} ({})", duration_text(value), duration_text(objective), name,
                     pct < 1 ? fmt::format("{:.2f}%", pct) : fmt::format("{:.0f}%", pct));
}

}  // namespace drill_detail

using drill_detail::against_text;
using drill_detail::duration_text;
using drill_detail::read_drill;

// ---- summary

std::string drill_summary(const nlohmann::json& report) {
  auto d = read_drill(report);
  std::string out = fmt::format("Drill of plan {}: {}\n", d.plan.empty() ? "(unnamed)" : d.plan,
                                d.passed ? "PASSED" : "FAILED");
  for (auto& r : d.reasons) out += fmt::format("  because {}\n", r);
  out += fmt::format("Backup set: {}{}\n", d.set.empty() ? "none found" : d.set,
                     d.set_started_at.empty() ? "" : fmt::format(" (taken {})", d.set_started_at));
  out += fmt::format("Drill: started {}, finished {}\n", d.started_at.empty() ? "-" : d.started_at,
                     d.finished_at.empty() ? "-" : d.finished_at);
  out += fmt::format("Restore time: {}: {}\n", against_text(d.seconds, d.rto, "RTO"), d.rto_ok ? "met" : "MISSED");
  if (d.set_age)
    out += fmt::format("Set age: {}: {}\n", against_text(*d.set_age, d.rpo, "RPO"), d.rpo_ok ? "met" : "MISSED");
  else
    out += fmt::format("Set age: unknown{}\n", d.rpo_ok ? "" : ": RPO MISSED");
  out += fmt::format("Checks: {} passed, {} failed\n", d.checks - d.checks_failed, d.checks_failed);
  out += "Steps:\n";
  for (auto& s : d.steps) {
    std::string checks = s.checks.empty() ? ""
                                          : fmt::format(" ({} of {} checks passed)", s.checks.size() - s.checks_failed,
                                                        s.checks.size());
    out += fmt::format("  {:<8} {:>8}  {}{}{}{}\n", s.status, duration_text(s.seconds), s.name, checks,
                       s.message.empty() ? "" : ": ", one_line(s.message));
  }
  if (d.checks_failed) {
    out += "Failed checks:\n";
    for (auto& s : d.steps)
      for (auto& c : s.checks)
        if (!c.ok)
          out += fmt::format("  {}: {}{}{}\n", s.name, one_line(c.check), c.detail.empty() ? "" : ": ",
                             one_line(c.detail));
  }
  return out;
}

// ---- Prometheus textfile

namespace {

// Integers as integers (timestamps, whole seconds), the rest to the millisecond.
std::string sample_value(double v) {
  if (std::nearbyint(v) == v && std::fabs(v) < 1e15) return fmt::format("{:.0f}", v);
  return fmt::format("{:.3f}", v);
}

long long unix_seconds(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

class Exposition {
 public:
  // Starts a family; every sample of it must follow before the next family.
  void family(const char* name, const char* help) {
    text_ += fmt::format("# HELP {} {}\n# TYPE {} gauge\n", name, help, name);
    name_ = name;
  }
  void sample(const std::string& labels, double value) {
    text_ += fmt::format("{}{{{}}} {}\n", name_, labels, sample_value(value));
  }
  void gauge(const char* name, const char* help, const std::string& labels, double value) {
    family(name, help);
    sample(labels, value);
  }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
  const char* name_ = "";
};

}  // namespace

std::string drill_prometheus(const nlohmann::json& report, std::optional<double> last_success_unix) {
  using report_format::prometheus_label;
  auto d = read_drill(report);
  const std::string plan = fmt::format("plan=\"{}\"", prometheus_label(d.plan));
  std::optional<TimePoint> ran = d.finish ? d.finish : d.start;
  if (d.passed && ran) last_success_unix = static_cast<double>(unix_seconds(*ran));
  Exposition e;
  if (last_success_unix)
    e.gauge("mevbackup_drill_last_success_timestamp_seconds", "Unix time the newest passed drill finished.", plan,
            *last_success_unix);
  if (ran)
    e.gauge("mevbackup_drill_last_run_timestamp_seconds", "Unix time the newest drill finished.", plan,
            static_cast<double>(unix_seconds(*ran)));
  e.gauge("mevbackup_drill_success", "Whether the newest drill passed: restored, checked, within RTO and RPO.", plan,
          d.passed ? 1 : 0);
  e.gauge("mevbackup_drill_duration_seconds", "How long the newest drill took, restore and checks.", plan, d.seconds);
  // Without an objective there is no series: a 0 would read as an objective always missed.
  if (d.rto > 0) e.gauge("mevbackup_drill_rto_seconds", "The plan's recovery time objective.", plan, d.rto);
  if (d.rpo > 0) e.gauge("mevbackup_drill_rpo_seconds", "The plan's recovery point objective.", plan, d.rpo);
  if (d.set_age)
    e.gauge("mevbackup_drill_set_age_seconds", "Age of the restored backup set when the drill started.", plan,
            *d.set_age);
  // Steps that ran; a skipped step has neither a duration nor an outcome. A name seen
  // twice gets " (2)": one series per label set.
  std::vector<std::pair<std::string, const drill_detail::StepView*>> ran_steps;
  std::map<std::string, int> seen;
  for (auto& s : d.steps) {
    if (!s.ran()) continue;
    int n = ++seen[s.name];
    std::string name = n == 1 ? s.name : fmt::format("{} ({})", s.name, n);
    ran_steps.emplace_back(fmt::format("{},step=\"{}\"", plan, prometheus_label(name)), &s);
  }
  if (!ran_steps.empty()) {
    e.family("mevbackup_drill_step_duration_seconds", "How long each step of the newest drill took.");
    for (auto& [labels, s] : ran_steps) e.sample(labels, s->seconds);
    e.family("mevbackup_drill_step_success", "Whether each step of the newest drill succeeded.");
    for (auto& [labels, s] : ran_steps) e.sample(labels, s->status == "ok" ? 1 : 0);
  }
  return e.text();
}

// ---- the report directory

namespace {

constexpr size_t kHistoryShown = 50;
constexpr std::uintmax_t kMaxReportBytes = 16 << 20;  // a report is kilobytes; larger is not ours

// "drill-20261203T101500Z.json" or "drill-20261203T101500Z-3.json" -> (stamp, 3).
std::optional<std::pair<std::string, int>> history_name(const std::string& name) {
  const std::string prefix = "drill-", suffix = ".json";
  constexpr size_t kStamp = 16;  // yyyymmddThhmmssZ
  if (name.size() < prefix.size() + kStamp + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  std::string stamp = name.substr(prefix.size(), kStamp);
  for (size_t i = 0; i < kStamp; ++i) {
    bool digit = stamp[i] >= '0' && stamp[i] <= '9';
    if (i == 8 ? stamp[i] != 'T' : i == 15 ? stamp[i] != 'Z' : !digit) return std::nullopt;
  }
  std::string rest = name.substr(prefix.size() + kStamp, name.size() - prefix.size() - kStamp - suffix.size());
  if (rest.empty()) return std::make_pair(stamp, 0);
  if (rest.size() < 2 || rest.size() > 7 || rest[0] != '-' || rest[1] == '0' ||
      rest.find_first_not_of("0123456789", 1) != std::string::npos)
    return std::nullopt;
  return std::make_pair(stamp, std::stoi(rest.substr(1)));
}

std::string file_stamp(TimePoint t) {
  std::string s = format_name_stamp(t);  // 20261203_101500
  s[8] = 'T';
  return s + "Z";
}

// The report in `path`, or nullopt with `why`.
std::optional<nlohmann::json> read_report(const std::filesystem::path& path, std::string& why) {
  auto fail = [&](std::string reason) -> std::optional<nlohmann::json> {
    why = std::move(reason);
    return std::nullopt;
  };
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  if (ec) return fail(ec.message());
  if (size > kMaxReportBytes) return fail(fmt::format("larger than {} bytes", kMaxReportBytes));
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail("cannot be opened");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return fail("cannot be read");
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return fail("is not JSON");
  if (!j.is_object() || j.value("operation", nlohmann::json()) != "drill") return fail("is not a drill's report");
  return j;
}

struct History {
  std::vector<nlohmann::json> reports;  // oldest first, at most kHistoryShown
  std::optional<double> last_success;   // finish of the newest passed drill
  size_t skipped = 0;
};

// The earlier reports in `dir`, newest first until the page has its fill and the last
// success is known: a long history is not read whole at every drill.
History read_history(const std::string& dir, const LogFn& log) {
  std::vector<std::pair<std::pair<std::string, int>, std::filesystem::path>> files;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    auto name = history_name(it->path().filename().string());
    if (!name) continue;
    std::error_code sec;
    if (!it->is_regular_file(sec) || it->is_symlink(sec)) continue;
    files.emplace_back(*name, it->path());
  }
  if (ec) throw sys_error(ec.value(), fmt::format("cannot list {}", dir));
  std::sort(files.begin(), files.end());
  History h;
  std::deque<nlohmann::json> kept;
  for (auto it = files.rbegin(); it != files.rend(); ++it) {
    if (kept.size() >= kHistoryShown && h.last_success) break;
    std::string why;
    auto j = read_report(it->second, why);
    if (!j) {
      ++h.skipped;
      if (log) log(LogLevel::warning, fmt::format("{}: not read as a drill's history: {}", it->second.string(), why));
      continue;
    }
    auto d = read_drill(*j);
    if (!h.last_success && d.passed && (d.finish || d.start))
      h.last_success = static_cast<double>(unix_seconds(d.finish ? *d.finish : *d.start));
    if (kept.size() < kHistoryShown) kept.push_front(std::move(*j));
  }
  h.reports.assign(std::make_move_iterator(kept.begin()), std::make_move_iterator(kept.end()));
  return h;
}

void make_report_dir(const std::string& dir) {
  if (dir.empty()) throw Error(Code::invalid_argument, "the drill's report directory is empty");
  if (::mkdir(dir.c_str(), 0700) == 0) return;
  int e = errno;
  if (e != EEXIST) throw sys_error(e, fmt::format("cannot create the report directory {}", dir));
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw Error(Code::exists, fmt::format("{} exists and is not a directory", dir));
}

// Publishes `text` as `path` (mode 0644) through the file sink: a temporary file, fsync,
// rename. Without `replace`, a name already taken gets "-1", "-2", ... before `ext`.
std::string publish(const std::string& path, const std::string& text, bool replace, const std::string& ext = "") {
  FileSinkOptions o;
  o.replace = replace;
  o.on_open = [](int fd, const std::string& tmp) {
    if (::fchmod(fd, 0644) != 0) throw sys_error(errno, fmt::format("cannot chmod {}", tmp));
  };
  std::string published = path;
  if (!replace)
    o.next_path = [&](int attempt) {
      if (attempt > 10000) return std::string();
      published = fmt::format("{}-{}{}", path.substr(0, path.size() - ext.size()), attempt, ext);
      return published;
    };
  auto sink = make_file_sink(path, o);
  sink->write(Bytes(reinterpret_cast<const std::byte*>(text.data()), text.size()));
  sink->commit();
  return published;
}

}  // namespace

DrillReportFiles write_drill_report(const std::string& dir, const nlohmann::json& report, const LogFn& log) {
  if (!report.is_object()) throw Error(Code::invalid_argument, "a drill's report must be a JSON object");
  make_report_dir(dir);
  History h = read_history(dir, log);
  auto d = read_drill(report);
  // Written as given and readable by all (0644): a drill's report holds step names,
  // outcomes, timings and check results, and the drill (plan_drill.cpp) must never put a
  // conninfo, URL with credentials or password into it.
  const std::string json_text = report.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  DrillReportFiles f;
  f.history = h.reports.size();
  f.skipped = h.skipped;
  std::string stamp = file_stamp(d.start.value_or(std::chrono::system_clock::now()));
  f.json = publish(fmt::format("{}/drill-{}.json", dir, stamp), json_text, false, ".json");
  publish(dir + "/latest.json", json_text, true);
  f.summary = publish(dir + "/summary.txt", drill_summary(report), true);
  f.html = publish(dir + "/report.html", drill_html(report, h.reports), true);
  f.prometheus = publish(dir + "/mevbackup_drill.prom", drill_prometheus(report, h.last_success), true);
  return f;
}

}  // namespace mevbackup
