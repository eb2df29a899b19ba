// The report of `mevbackup drill` in the forms its readers want: JSON for programs, a
// few lines for people, a Prometheus textfile for alerts, and one self-contained HTML
// page (timeline of the steps against the RTO, history of earlier drills) for a review.
//
// Every function takes the drill's report as PlanReport::to_json() gives it plus the
// drill's fields (rto_seconds, rpo_seconds, set_started_at, set_age_seconds, rto_ok,
// rpo_ok, checks_ok). Fields that are missing or of the wrong type are
// treated as absent, never as an error: earlier reports read back from disk are input.
// A drill passed when "ok" is true and none of rto_ok, rpo_ok, checks_ok is false.
// The functions are pure and thread-safe; write_drill_report touches only `dir`.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mevbackup/repository.hpp"

namespace mevbackup {

// Plain text, one line per fact: the verdict and why (the failed steps, checks and
// objectives), the total against the RTO, the set's age against the RPO, then one line
// per step and the failed checks.
std::string drill_summary(const nlohmann::json& report);

// node_exporter textfile-collector exposition, every series labelled plan="...":
// mevbackup_drill_last_success_timestamp_seconds (this drill's finish when it passed,
// else `last_success_unix`; absent when neither), _last_run_timestamp_seconds, _success,
// _duration_seconds, _rto_seconds and _rpo_seconds (absent without that objective),
// _set_age_seconds, and per step that ran (ok or failed) _step_duration_seconds and
// _step_success with a step="..." label.
std::string drill_prometheus(const nlohmann::json& report, std::optional<double> last_success_unix);

// One HTML5 page, inline CSS and SVG only (no script, no URL: a Content-Security-Policy
// forbids loading anything). `history` holds earlier reports, oldest first; only the
// last 50 are drawn. Every string from the report is escaped.
std::string drill_html(const nlohmann::json& report, const std::vector<nlohmann::json>& history);

// Paths of the files write_drill_report wrote.
struct DrillReportFiles {
  std::string json;        // dir/drill-<UTC yyyymmddThhmmssZ>[-N].json, never replacing another
  std::string summary;     // dir/summary.txt
  std::string prometheus;  // dir/mevbackup_drill.prom
  std::string html;        // dir/report.html
  size_t history = 0;      // earlier drill-*.json read as history
  size_t skipped = 0;      // drill-*.json that were unreadable or not a drill's report
};

// Writes the report into `dir` (created 0700 when missing): the report as
// drill-<stamp>.json (the drill's start, UTC) and latest.json, summary.txt, report.html
// with the history read from the earlier drill-*.json there, and mevbackup_drill.prom,
// whose last success comes from the newest passed drill when this one failed. Each file
// is written to a temporary name, fsync'd and renamed, mode 0644: a report holds no
// secret (no conninfo, no password). Files skipped as history are logged as warnings.
// Throws Error (invalid_argument when `report` is not an object; io, permission,
// no_space naming the path).
DrillReportFiles write_drill_report(const std::string& dir, const nlohmann::json& report, const LogFn& log = {});

}  // namespace mevbackup
