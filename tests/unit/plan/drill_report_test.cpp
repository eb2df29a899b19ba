// The drill's report: the summary tells why a drill failed, the textfile carries the last
// success across failures, the page loads nothing and shows user text as text, and the
// report directory keeps every drill.
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "../helpers.hpp"
#include "mevbackup/drill_report.hpp"

using namespace mevbackup;
using nlohmann::json;
using testutil::files_under;
using testutil::slurp;
using testutil::TempDir;

namespace {

json check(const std::string& what, bool ok, const std::string& detail) {
  return {{"check", what}, {"ok", ok}, {"detail", detail}};
}

json step(const std::string& name, const std::string& status, const std::string& started_at, double seconds,
          json checks = json::array(), const std::string& message = "") {
  return {{"name", name},          {"status", status},   {"message", message},
          {"started_at", started_at}, {"seconds", seconds}, {"detail", {{"checks", checks}}}};
}

// "2026-12-03T10:15:00Z" plus `seconds`.
std::string at(const std::string& start, int seconds) {
  return format_rfc3339(parse_rfc3339(start) + std::chrono::seconds(seconds));
}

// A drill of plan "mev-protection" that started at `started` and took 12.5 s: passed, or
// failed by a check of postgres.main (redis.cache then skipped).
json drill(const std::string& started, const std::string& finished, bool ok) {
  json checks = json::array({check("table public.t rows", true, "1000 = 1000"),
                             check("query SELECT COUNT(*) FROM mev_threats", ok, ok ? "42 = 42" : "41 != 42")});
  json steps = json::array({step("cleanup", "ok", started, 0.2), step("set", "ok", at(started, 0), 0.8),
                            step("postgres.main", ok ? "ok" : "failed", at(started, 1), 6.4, checks,
                                 ok ? "" : "check failed: 41 != 42"),
                            step("redis.cache", ok ? "ok" : "skipped", at(started, 7), ok ? 3.1 : 0),
                            step("scratch cleanup", "ok", at(started, 11), 0.5)});
  return {{"operation", "drill"},
          {"plan", "mev-protection"},
          {"set", "mev-protection_20261203_091500"},
          {"ok", ok},
          {"status", ok ? "ok" : "corrupt"},
          {"message", ok ? "backup set restored and checked" : "1 check failed"},
          {"started_at", started},
          {"finished_at", finished},
          {"seconds", 12.5},
          {"steps", steps},
          {"rto_seconds", 14400},
          {"rpo_seconds", 86400},
          {"set_started_at", "2026-12-03T09:15:00Z"},
          {"set_age_seconds", 3600.5},
          {"rto_ok", true},
          {"rpo_ok", true},
          {"checks_ok", ok}};
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The value of the one sample of `series` (name and labels as written), or "" when absent.
std::string sample(const std::string& prom, const std::string& series) {
  std::istringstream in(prom);
  for (std::string line; std::getline(in, line);)
    if (line.compare(0, series.size() + 1, series + " ") == 0) return line.substr(series.size() + 1);
  return "";
}

}  // namespace

TEST_CASE("a failed drill's summary says FAILED and names the failed step and check") {
  auto s = drill_summary(drill("2026-12-03T10:15:00Z", "2026-12-03T10:15:13Z", false));
  CHECK(s.rfind("Drill of plan mev-protection: FAILED\n", 0) == 0);
  CHECK(s.find("because step postgres.main failed: check failed: 41 != 42") != std::string::npos);
  CHECK(s.find("1 of 2 checks failed") != std::string::npos);
  CHECK(s.find("Failed checks:\n  postgres.main: query SELECT COUNT(*) FROM mev_threats: 41 != 42\n") !=
        std::string::npos);
  CHECK(s.find("Checks: 1 passed, 1 failed") != std::string::npos);
  CHECK(s.find("skipped") != std::string::npos);
}

TEST_CASE("a passed drill's summary gives the total against the RTO and the set's age against the RPO") {
  auto s = drill_summary(drill("2026-12-03T10:15:00Z", "2026-12-03T10:15:13Z", true));
  CHECK(s.rfind("Drill of plan mev-protection: PASSED\n", 0) == 0);
  CHECK(s.find("because") == std::string::npos);
  CHECK(s.find("Restore time: 12.5 s of the 4h00m RTO (0.09%): met") != std::string::npos);
  CHECK(s.find("Set age: 1h00m of the 1d00h RPO (4%): met") != std::string::npos);
  CHECK(s.find("Failed checks") == std::string::npos);
}

TEST_CASE("a missed objective fails the drill even when the drill said ok") {
  json r = drill("2026-12-03T10:15:00Z", "2026-12-03T14:20:00Z", true);
  r["seconds"] = 4 * 3600 + 300;
  r.erase("rto_ok");  // derived from the figures
  auto s = drill_summary(r);
  CHECK(s.rfind("Drill of plan mev-protection: FAILED\n", 0) == 0);
  CHECK(s.find("because the restore took 4h05m, longer than the RTO of 4h00m") != std::string::npos);
  CHECK(sample(drill_prometheus(r, std::nullopt), "mevbackup_drill_success{plan=\"mev-protection\"}") == "0");
}

TEST_CASE("the textfile has every series of a drill, one family at a time") {
  auto prom = drill_prometheus(drill("2026-12-03T10:15:00Z", "2026-12-03T10:15:13Z", true), std::nullopt);
  const std::string plan = "{plan=\"mev-protection\"}";
  CHECK(sample(prom, "mevbackup_drill_last_success_timestamp_seconds" + plan) == "1796292913");
  CHECK(sample(prom, "mevbackup_drill_last_run_timestamp_seconds" + plan) == "1796292913");
  CHECK(sample(prom, "mevbackup_drill_success" + plan) == "1");
  CHECK(sample(prom, "mevbackup_drill_duration_seconds" + plan) == "12.500");
  CHECK(sample(prom, "mevbackup_drill_rto_seconds" + plan) == "14400");
  CHECK(sample(prom, "mevbackup_drill_rpo_seconds" + plan) == "86400");
  CHECK(sample(prom, "mevbackup_drill_set_age_seconds" + plan) == "3600.500");
  CHECK(sample(prom, "mevbackup_drill_step_duration_seconds{plan=\"mev-protection\",step=\"postgres.main\"}") ==
        "6.400");
  CHECK(sample(prom, "mevbackup_drill_step_success{plan=\"mev-protection\",step=\"scratch cleanup\"}") == "1");
  // Every family: HELP, TYPE, then its samples, before the next one starts.
  std::istringstream in(prom);
  std::string family;
  std::vector<std::string> seen;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("# HELP ", 0) == 0) {
      family = line.substr(7, line.find(' ', 7) - 7);
      CHECK(std::find(seen.begin(), seen.end(), family) == seen.end());
      seen.push_back(family);
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      CHECK(line == "# TYPE " + family + " gauge");
      continue;
    }
    CHECK(line.rfind(family + "{", 0) == 0);
  }
  CHECK(seen.size() == 9);
}

TEST_CASE("a failed drill keeps the earlier success; skipped steps and absent objectives have no series") {
  json r = drill("2026-12-03T10:15:00Z", "2026-12-03T10:15:13Z", false);
  r["rpo_seconds"] = 0;
  auto prom = drill_prometheus(r, 1796200000.0);
  CHECK(sample(prom, "mevbackup_drill_last_success_timestamp_seconds{plan=\"mev-protection\"}") == "1796200000");
  CHECK(sample(prom, "mevbackup_drill_success{plan=\"mev-protection\"}") == "0");
  CHECK(sample(prom, "mevbackup_drill_step_success{plan=\"mev-protection\",step=\"postgres.main\"}") == "0");
  CHECK(prom.find("step=\"redis.cache\"") == std::string::npos);
  CHECK(prom.find("mevbackup_drill_rpo_seconds") == std::string::npos);
  // Never a success: no last-success series at all.
  CHECK(drill_prometheus(r, std::nullopt).find("last_success") == std::string::npos);
}

TEST_CASE("label values are escaped and a step seen twice keeps its series apart") {
  json r = drill("2026-12-03T10:15:00Z", "2026-12-03T10:15:13Z", true);
  r["plan"] = "a \"quoted\\plan\"\nx";
  r["steps"].push_back(step("cleanup", "ok", "2026-12-03T10:15:12Z", 0.1));
  auto prom = drill_prometheus(r, std::nullopt);
  CHECK(prom.find("{plan=\"a \\\"quoted\\\\plan\\\"\\nx\"}") != std::string::npos);
  CHECK(count(prom, "step=\"cleanup\"}") == 2);  // duration and success
  CHECK(count(prom, "step=\"cleanup (2)\"}") == 2);
}

TEST_CASE("the page loads nothing from outside") {
  json earlier = drill("2026-12-02T10:15:00Z", "2026-12-02T10:15:13Z", true);
  auto html = drill_html(drill("2026-12-03T10:15:00Z", "2026-12-03T10:15:13Z", false), {earlier});
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  for (const char* ref : {"http:", "https:", "ftp:", "//", "src=", "href=", "url(", "@import", "<script", "<link"})
    CHECK_MESSAGE(html.find(ref) == std::string::npos, ref);
  CHECK(html.find("default-src 'none'") != std::string::npos);
}

TEST_CASE("the page shows what plans, servers and users wrote as text") {
  json r = drill("2026-12-03T10:15:00Z", "2026-12-03T10:15:13Z", false);
  r["plan"] = "<b>plan</b>";
  r["message"] = "<script>alert('x')</script>";
  r["steps"][2]["detail"]["checks"].push_back(check("<img src=x onerror=alert(1)>", false, "a & b"));
  r["steps"][2]["name"] = "postgres.\"main\"";
  json earlier = drill("2026-12-02T10:15:00Z", "2026-12-02T10:15:13Z", true);
  earlier["set"] = "<i>old</i>";
  auto html = drill_html(r, {earlier});
  for (const char* tag : {"<script", "<img", "<b>", "<i>"}) CHECK_MESSAGE(html.find(tag) == std::string::npos, tag);
  CHECK(html.find("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;") != std::string::npos);
  CHECK(html.find("&lt;img src=x onerror=alert(1)&gt;: a &amp; b") != std::string::npos);
  CHECK(html.find("&lt;b&gt;plan&lt;/b&gt;") != std::string::npos);
  CHECK(html.find("&lt;i&gt;old&lt;/i&gt;") != std::string::npos);
  CHECK(html.find("postgres.&quot;main&quot;") != std::string::npos);
}

TEST_CASE("the page draws a bar per step, the RTO however far it is, and the history") {
  json r = drill("2026-12-03T10:15:00Z", "2026-12-03T10:15:13Z", true);
  auto html = drill_html(r, {});
  CHECK(html.find("Restore drill of mev-protection: PASSED") != std::string::npos);
  CHECK(html.find("class=\"banner pass\"") != std::string::npos);
  // 5 steps, each a bar with its tooltip; the RTO (4h against 12.5 s) on the bar below.
  CHECK(count(html, "<title>postgres.main: ok, 6.4 s") == 1);
  CHECK(html.find("RTO 4h00m is 1108&#215; this scale") != std::string::npos);
  CHECK(html.find("0.09% of the RTO of 4h00m used") != std::string::npos);
  CHECK(html.find("No earlier drill") != std::string::npos);
  // An RTO within reach: a line on the timeline itself.
  r["rto_seconds"] = 20;
  html = drill_html(r, {});
  CHECK(html.find(">RTO 20.0 s</text>") != std::string::npos);
  // History: one bar per drill, the current one last; the table newest first.
  std::vector<json> history;
  for (int day = 1; day <= 60; ++day)
    history.push_back(drill(fmt::format("2026-10-{:02}T10:15:00Z", (day - 1) % 28 + 1), "", day % 7 != 0));
  html = drill_html(r, history);
  CHECK(html.find("of the last 51 drills passed (10 older ones not shown)") != std::string::npos);
  CHECK(count(html, "mev-protection_20261203_091500: 12.5 s") == 51);
  CHECK(html.find("(this drill)") < html.find("2026-10-28T10:15:00Z</td>"));
}

TEST_CASE("write_drill_report writes every file, keeps each drill and reads them back as history") {
  TempDir tmp;
  const std::string dir = tmp / "drills";
  std::vector<std::string> warnings;
  LogFn log = [&](LogLevel l, const std::string& m) {
    if (l == LogLevel::warning) warnings.push_back(m);
  };
  json first = drill("2026-12-03T10:15:00Z", "2026-12-03T10:15:13Z", true);
  auto f1 = write_drill_report(dir, first, log);
  CHECK(testutil::mode_of(dir) == 0700);
  CHECK(f1.json == dir + "/drill-20261203T101500Z.json");
  CHECK(f1.history == 0);
  CHECK(files_under(dir) == std::vector<std::string>{"drill-20261203T101500Z.json", "latest.json",
                                                      "mevbackup_drill.prom", "report.html", "summary.txt"});
  for (auto& name : files_under(dir)) CHECK_MESSAGE(testutil::mode_of(dir + "/" + name) == 0644, name);
  CHECK(json::parse(slurp(f1.json)) == first);
  CHECK(slurp(f1.summary) == drill_summary(first));

  // The same start again (a clock set back, two drills in one second): a new name.
  json second = drill("2026-12-03T10:15:00Z", "2026-12-03T10:16:00Z", false);
  second["set"] = "mev-protection_20261203_101000";
  auto f2 = write_drill_report(dir, second, log);
  CHECK(f2.json == dir + "/drill-20261203T101500Z-1.json");
  CHECK(json::parse(slurp(f1.json)) == first);
  CHECK(json::parse(slurp(dir + "/latest.json")) == second);
  CHECK(f2.history == 1);
  // Failed: the textfile's last success is the first drill's finish.
  CHECK(sample(slurp(f2.prometheus), "mevbackup_drill_last_success_timestamp_seconds{plan=\"mev-protection\"}") ==
        "1796292913");
  CHECK(sample(slurp(f2.prometheus), "mevbackup_drill_success{plan=\"mev-protection\"}") == "0");

  // Files that are not a drill's report are left alone, and named in a warning.
  {
    std::ofstream(dir + "/drill-20261130T000000Z.json") << "not json";
    std::ofstream(dir + "/drill-20261130T000001Z.json") << R"({"operation": "run"})";
    std::ofstream(dir + "/notes.json") << "{}";
  }
  json third = drill("2026-12-04T10:15:00Z", "2026-12-04T10:15:13Z", true);
  third["set"] = "mev-protection_20261204_091500";
  auto f3 = write_drill_report(dir, third, log);
  CHECK(f3.history == 2);
  CHECK(f3.skipped == 2);
  REQUIRE(warnings.size() == 2);
  CHECK(warnings[0].find("drill-20261130T000001Z.json: not read as a drill's history: is not a drill's report") !=
        std::string::npos);
  CHECK(warnings[1].find("drill-20261130T000000Z.json: not read as a drill's history: is not JSON") !=
        std::string::npos);
  auto html = slurp(f3.html);
  CHECK(html.find("2 of the last 3 drills passed") != std::string::npos);
  CHECK(html.find("mev-protection_20261203_101000") != std::string::npos);
  CHECK(sample(slurp(f3.prometheus), "mevbackup_drill_last_success_timestamp_seconds{plan=\"mev-protection\"}") ==
        "1796379313");
  CHECK(files_under(dir).size() == 10);
}

TEST_CASE("write_drill_report refuses what is not a report and a directory that is a file") {
  TempDir tmp;
  CHECK_THROWS_AS(write_drill_report(tmp.path(), json::array()), Error);
  { std::ofstream(tmp / "file") << "x"; }
  try {
    write_drill_report(tmp / "file", drill("2026-12-03T10:15:00Z", "2026-12-03T10:15:13Z", true));
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::exists);
  }
  CHECK_THROWS_AS(write_drill_report(tmp / "no/such/parent", drill("2026-12-03T10:15:00Z", "", true)), Error);
}

TEST_CASE("reports of another shape are read without throwing") {
  for (const json& r : {json::object(), json{{"steps", 3}}, json{{"steps", json::array({1, "x", json::object()})}},
                        json{{"seconds", "fast"}, {"ok", "yes"}, {"started_at", "yesterday"}},
                        json{{"steps", json::array({{{"detail", {{"checks", json::array({1, json::object()})}}}}})}},
                        json{{"seconds", 1e308}, {"rto_seconds", -5}, {"set_age_seconds", -1e308},
                             {"started_at", "2026-12-03T10:15:00Z"},
                             {"steps", json::array({step("x", "ok", "2200-01-01T00:00:00Z", 1e308)})}}}) {
    CHECK_NOTHROW(drill_summary(r));
    CHECK_NOTHROW(drill_prometheus(r, std::nullopt));
    CHECK_NOTHROW(drill_html(r, {r, json::array(), json(5)}));
  }
}
