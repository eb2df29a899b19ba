// A drill's report read once into plain values, for its renderers (drill_report.cpp:
// summary, textfile, files; drill_html.cpp: the page). Reading never throws: a field
// missing or of the wrong type is absent (reports read back from disk are input).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mevbackup/clock.hpp"

namespace mevbackup::drill_detail {

struct CheckView {
  std::string check, detail;
  bool ok = false;
};

struct StepView {
  std::string name, status, message, started_at;
  double offset = 0;   // seconds from the drill's start
  double seconds = 0;
  std::vector<CheckView> checks;
  size_t checks_failed = 0;
  bool ran() const { return status == "ok" || status == "failed"; }
};

struct DrillView {
  std::string plan, set, status, message, started_at, finished_at, set_started_at;
  std::optional<TimePoint> start, finish;
  double seconds = 0;
  double rto = 0, rpo = 0;          // 0: no objective
  std::optional<double> set_age;    // seconds, when the drill found a set
  bool ok = false, rto_ok = true, rpo_ok = true, checks_ok = true;
  bool passed = false;              // ok and every objective and check met
  std::vector<StepView> steps;
  size_t checks = 0, checks_failed = 0;
  // Why it failed, one sentence each: failed steps, failed checks, missed objectives.
  std::vector<std::string> reasons;
  // The end of the last step, or `seconds` when larger: what the timeline must show.
  double span() const;
};

DrillView read_drill(const nlohmann::json& report);

// "0.4 s", "12.3 s", "4m05s", "3h05m", "2d04h"; "-" for a negative or absurd value.
std::string duration_text(double seconds);
// "12.3 s of 4h00m (0.1%)" or "12.3 s (no RTO)".
std::string against_text(double value, double objective, const char* name);

}  // namespace mevbackup::drill_detail
