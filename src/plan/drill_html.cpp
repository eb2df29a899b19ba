// The drill's report as one self-contained page (drill_report.hpp): a banner with the
// verdict, the key figures, a timeline of the steps against the RTO, the steps with
// their checks, and the earlier drills. Inline CSS and SVG only; the page's
// Content-Security-Policy lets it load nothing, so a report opened from a mail or a
// share cannot reach out. Every string from a report goes through esc().
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "mevbackup/drill_report.hpp"
#include "mevbackup/version.hpp"
#include "drill_view.hpp"

namespace mevbackup {

namespace {

using drill_detail::CheckView;
using drill_detail::DrillView;
using drill_detail::StepView;
using drill_detail::against_text;
using drill_detail::duration_text;
using drill_detail::read_drill;

constexpr size_t kHistoryShown = 50;

// Text for HTML content and attribute values alike. Control characters other than
// tab and newline become spaces (they are not allowed in HTML).
std::string esc(const std::string& s) {
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  for (unsigned char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f) out += ' ';
        else out += static_cast<char>(c);
    }
  }
  return out;
}

// At most `n` characters (UTF-8 code points) of `s`, with an ellipsis when cut.
std::string clip(const std::string& s, size_t n) {
  size_t chars = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xc0) == 0x80) continue;
    if (++chars > n) return s.substr(0, i) + "\u2026";
  }
  return s;
}

const char* status_class(const std::string& status) {
  if (status == "ok" || status == "failed" || status == "skipped") return status.c_str();
  return "other";
}

const char* status_color(const std::string& status) {
  if (status == "ok") return "#2f9e44";
  if (status == "failed") return "#e03131";
  if (status == "skipped") return "#adb5bd";
  return "#868e96";
}

// A tick step that cuts [0, scale] into at most `most` parts, in steps people read.
double tick_step(double scale, int most) {
  static const double steps[] = {0.1,  0.2,  0.5,   1,     2,     5,     10,     15,     30,     60,    120,
                                 300,  600,  900,   1800,  3600,  7200,  10800,  21600,  43200,  86400, 172800,
                                 432000, 864000, 2592000};
  for (double s : steps)
    if (scale / s <= most) return s;
  return scale / most;
}

std::string tick_text(double t, double step) {
  if (t <= 0) return "0";
  if (step < 1) return fmt::format("{:.1f}s", t);
  long long s = std::llround(t);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return s % 60 ? fmt::format("{}m{:02}s", s / 60, s % 60) : fmt::format("{}m", s / 60);
  if (s < 86400) return s % 3600 ? fmt::format("{}h{:02}m", s / 3600, s % 3600 / 60) : fmt::format("{}h", s / 3600);
  return s % 86400 ? fmt::format("{}d{:02}h", s / 86400, s % 86400 / 3600) : fmt::format("{}d", s / 86400);
}

std::string percent(double part, double whole) {
  double p = 100 * part / whole;
  return p < 1 ? fmt::format("{:.2f}%", p) : fmt::format("{:.0f}%", p);
}

const char* kStyle = R"(
body{margin:0;font:15px/1.45 system-ui,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;color:#212529;
  background:#f1f3f5}
main{max-width:1100px;margin:0 auto;padding:0 20px 32px}
.banner{padding:18px 28px;color:#fff}
.banner.pass{background:#2f9e44}
.banner.fail{background:#c92a2a}
.banner h1{margin:0;font-size:26px}
.banner p{margin:4px 0 0}
.banner ul{margin:6px 0 0;padding-left:20px}
.figures{display:flex;flex-wrap:wrap;gap:12px;margin:18px 0}
.fig{flex:1 1 190px;background:#fff;border:1px solid #dee2e6;border-left:5px solid #adb5bd;border-radius:6px;
  padding:10px 14px}
.fig.good{border-left-color:#2f9e44}
.fig.bad{border-left-color:#e03131}
.fig .k{display:block;color:#495057;font-size:12px;text-transform:uppercase;letter-spacing:.05em}
.fig .v{display:block;font-size:22px;font-weight:600;word-break:break-all}
.fig .v.small{font-size:15px}
.fig .s{display:block;color:#495057;font-size:13px}
section{background:#fff;border:1px solid #dee2e6;border-radius:6px;padding:14px 18px;margin:16px 0}
h2{font-size:18px;margin:0 0 10px}
svg{display:block;width:100%;height:auto}
svg text{font-size:12px;fill:#343a40}
.legend{font-size:13px;color:#495057;margin-bottom:6px}
.legend span{margin-right:16px;white-space:nowrap}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e9ecef;vertical-align:top}
th{color:#495057;font-weight:600;font-size:13px}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.st{display:inline-block;padding:1px 9px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
.st.ok{background:#2f9e44}
.st.failed{background:#e03131}
.st.skipped,.st.other{background:#868e96}
.msg{color:#495057;word-break:break-word}
details summary{cursor:default}
details ul{margin:4px 0;padding-left:18px}
li.bad{color:#c92a2a}
li.good{color:#2b8a3e}
tr.current td{background:#f8f9fa;font-weight:600}
.note{color:#495057;font-size:13px;margin:6px 0 0}
footer{color:#868e96;font-size:12px;text-align:center}
)";

// ---- banner and key figures

std::string banner(const DrillView& d) {
  std::string out = fmt::format("<header class=\"banner {}\"><h1>Restore drill of {}: {}</h1>",
                                d.passed ? "pass" : "fail", esc(d.plan.empty() ? "(unnamed plan)" : d.plan),
                                d.passed ? "PASSED" : "FAILED");
  // A failed drill's message is mostly its first reason: said once.
  bool told = std::any_of(d.reasons.begin(), d.reasons.end(),
                          [&](const std::string& r) { return r.find(d.message) != std::string::npos; });
  if (!d.message.empty() && !told) out += fmt::format("<p>{}</p>", esc(d.message));
  if (!d.reasons.empty()) {
    out += "<ul>";
    for (auto& r : d.reasons) out += fmt::format("<li>{}</li>", esc(r));
    out += "</ul>";
  }
  return out + "</header>\n";
}

std::string figure(const char* cls, const char* key, const std::string& value, const std::string& sub,
                   bool small = false) {
  return fmt::format("<div class=\"fig {}\"><span class=\"k\">{}</span><span class=\"v{}\">{}</span>"
                     "<span class=\"s\">{}</span></div>\n",
                     cls, key, small ? " small" : "", esc(value), esc(sub));
}

std::string figures(const DrillView& d) {
  std::string out = "<div class=\"figures\">\n";
  out += figure(d.rto_ok ? "good" : "bad", "Restore time", duration_text(d.seconds),
                d.rto > 0 ? fmt::format("RTO {}: {} used", duration_text(d.rto), percent(d.seconds, d.rto))
                          : "no RTO in the plan");
  std::string rpo = "no RPO in the plan";
  if (d.rpo > 0)
    rpo = d.set_age ? fmt::format("RPO {}: {} used", duration_text(d.rpo), percent(*d.set_age, d.rpo))
                    : fmt::format("RPO {}", duration_text(d.rpo));
  out += figure(d.rpo_ok ? "good" : "bad", "Backup set age", d.set_age ? duration_text(*d.set_age) : "-", rpo);
  out += figure(d.checks_ok ? "good" : "bad", "Checks", fmt::format("{} / {}", d.checks - d.checks_failed, d.checks),
                d.checks_failed ? fmt::format("{} failed", d.checks_failed)
                                : (d.checks ? std::string("all passed") : std::string("none recorded")));
  out += figure("", "Backup set", d.set.empty() ? "none found" : d.set,
                d.set_started_at.empty() ? "" : "taken " + d.set_started_at, true);
  out += figure("", "Drill", d.started_at.empty() ? "-" : d.started_at,
                d.finished_at.empty() ? "" : "finished " + d.finished_at, true);
  return out + "</div>\n";
}

// ---- timeline

constexpr double kWidth = 1000, kLabels = 200, kRight = 24, kRow = 26;

// SVG pieces; `attrs` start with a space, `markup` is escaped already.
std::string svg_line(double x1, double y1, double x2, double y2, const char* stroke, const char* attrs = "") {
  return fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\"{}/>\n", x1, y1, x2,
                     y2, stroke, attrs);
}
std::string svg_text(double x, double y, const std::string& markup, const char* attrs = "") {
  return fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\"{}>{}</text>\n", x, y, attrs, markup);
}
std::string svg_rect(double x, double y, double w, double h, const char* fill, const std::string& tooltip,
                     const char* attrs = "") {
  return fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"{}>{}</rect>\n", x,
                     y, w, h, fill, attrs, tooltip.empty() ? "" : "<title>" + esc(tooltip) + "</title>");
}
constexpr const char* kRed = "#c92a2a";
constexpr const char* kDashed = " stroke-width=\"2\" stroke-dasharray=\"6 4\"";

std::string legend() {
  std::string out = "<div class=\"legend\">";
  for (const char* s : {"ok", "failed", "skipped"})
    out += fmt::format("<span><i class=\"sw\" style=\"background:{}\"></i>{}</span>", status_color(s), s);
  return out + "<span><i class=\"sw\" style=\"background:#c92a2a;width:3px\"></i>RTO</span></div>\n";
}

// The total against the RTO on a bar of its own, so the RTO is drawn whatever the scale
// of the timeline above it.
std::string rto_bar(const DrillView& d, double y) {
  const double cw = kWidth - kLabels - kRight;
  std::string out = svg_text(kLabels - 10, y + 11, "total vs RTO", " text-anchor=\"end\"");
  if (d.rto <= 0)
    return out + svg_text(kLabels, y + 11, fmt::format("no RTO in the plan: {} in all", esc(duration_text(d.seconds))));
  double whole = std::max(d.rto, d.seconds);
  out += svg_rect(kLabels, y + 4, cw, 8, "#e9ecef", "", " rx=\"4\"");
  out += svg_rect(kLabels, y + 4, std::max(2.0, d.seconds / whole * cw), 8, d.rto_ok ? "#2f9e44" : "#e03131",
                  against_text(d.seconds, d.rto, "RTO"), " rx=\"4\"");
  double mark = kLabels + d.rto / whole * cw;
  out += svg_line(mark, y, mark, y + 16, kRed, " stroke-width=\"2\"");
  out += svg_text(kLabels, y + 30, fmt::format("{} of the RTO of {} used ({})", percent(d.seconds, d.rto),
                                               esc(duration_text(d.rto)), esc(duration_text(d.seconds))));
  return out;
}

std::string timeline(const DrillView& d) {
  const double cw = kWidth - kLabels - kRight;
  const double span = std::max(d.span(), 0.1);
  // The RTO line belongs on the timeline when the steps keep a readable third of it;
  // a far larger RTO is shown by the bar below instead.
  const bool rto_fits = d.rto > 0 && d.rto <= 3 * span;
  const double scale = (rto_fits ? std::max(span, d.rto) : span) * 1.04;
  auto x = [&](double t) { return kLabels + t / scale * cw; };
  const double top = 26;
  const double axis = top + kRow * static_cast<double>(std::max<size_t>(d.steps.size(), 1)) + 4;
  std::string out = fmt::format("<svg viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"the drill's steps in time\">\n",
                                kWidth, axis + 74);
  double step = tick_step(scale, 10);
  for (int i = 0; i * step <= scale; ++i) {
    double t = i * step;
    out += svg_line(x(t), top - 6, x(t), axis, "#e9ecef");
    out += svg_text(x(t), axis + 16, tick_text(t, step), " text-anchor=\"middle\"");
  }
  out += svg_line(kLabels, axis, kLabels + cw, axis, "#868e96");
  if (d.steps.empty()) out += svg_text(kLabels + 8, top + 16, "no steps recorded");
  for (size_t i = 0; i < d.steps.size(); ++i) {
    const StepView& s = d.steps[i];
    double y = top + kRow * static_cast<double>(i);
    double x0 = x(s.offset), w = std::max(2.0, s.seconds / scale * cw);
    out += svg_text(kLabels - 10, y + 15, esc(clip(s.name, 28)), " text-anchor=\"end\"");
    out += svg_rect(x0, y + 3, w, 16, status_color(s.status),
                    fmt::format("{}: {}, {} from +{}", s.name, s.status, duration_text(s.seconds),
                                duration_text(s.offset)),
                    " rx=\"3\"");
    // The figure right of the bar; left of it when there is no room, inside a bar that
    // reaches from the start to the right edge.
    std::string took = esc(duration_text(s.seconds));
    if (x0 + w + 64 <= kWidth) out += svg_text(x0 + w + 5, y + 15, took);
    else if (x0 - 64 >= kLabels) out += svg_text(x0 - 5, y + 15, took, " text-anchor=\"end\"");
    else out += svg_text(x0 + w - 5, y + 15, took, " text-anchor=\"end\" style=\"fill:#fff\"");
  }
  if (rto_fits) {
    double rx = x(d.rto);
    bool near_right = rx > kWidth - 80;
    out += svg_line(rx, top - 10, rx, axis, kRed, kDashed);
    out += svg_text(near_right ? rx - 4 : rx + 4, top - 12, "RTO " + esc(duration_text(d.rto)),
                    near_right ? " text-anchor=\"end\" style=\"fill:#c92a2a\"" : " style=\"fill:#c92a2a\"");
  } else if (d.rto > 0) {
    out += svg_text(kWidth - kRight, top - 12,
                    fmt::format("RTO {} is {}&#215; this scale: see below", esc(duration_text(d.rto)),
                                std::llround(d.rto / scale)),
                    " text-anchor=\"end\" style=\"fill:#c92a2a\"");
  }
  out += rto_bar(d, axis + 32);
  return out + "</svg>\n";
}

// ---- steps

std::string checks_cell(const StepView& s) {
  if (s.checks.empty()) return "&#8211;";
  std::string out = fmt::format("<details{}><summary>{} passed{}</summary><ul>", s.checks_failed ? " open" : "",
                                s.checks.size() - s.checks_failed,
                                s.checks_failed ? fmt::format(", {} failed", s.checks_failed) : "");
  for (const CheckView& c : s.checks)
    out += fmt::format("<li class=\"{}\">{} {}{}{}</li>", c.ok ? "good" : "bad", c.ok ? "&#10003;" : "&#10007;",
                       esc(c.check), c.detail.empty() ? "" : ": ", esc(c.detail));
  return out + "</ul></details>";
}

std::string steps_table(const DrillView& d) {
  std::string out = "<table><thead><tr><th>Step</th><th>Status</th><th>Start</th><th>Duration</th><th>Checks</th>"
                    "<th>Message</th></tr></thead><tbody>\n";
  for (const StepView& s : d.steps)
    out += fmt::format("<tr><td>{}</td><td><span class=\"st {}\">{}</span></td><td class=\"num\">+{}</td>"
                       "<td class=\"num\">{}</td><td>{}</td><td class=\"msg\">{}</td></tr>\n",
                       esc(s.name), status_class(s.status), esc(s.status.empty() ? "?" : s.status),
                       esc(duration_text(s.offset)), esc(duration_text(s.seconds)), checks_cell(s), esc(s.message));
  if (d.steps.empty()) out += "<tr><td colspan=\"6\">no steps recorded</td></tr>\n";
  return out + "</tbody></table>\n";
}

// ---- history

// Bars of the drills' totals, oldest left, the current one outlined; the RTO as a line
// when it is within reach of the bars.
std::string history_chart(const std::vector<DrillView>& drills, double rto) {
  const double left = 64, right = 16, top = 16, plot = 170, width = kWidth - left - right;
  double most = 0;
  for (auto& d : drills) most = std::max(most, d.seconds);
  most = std::max(most, 0.1);
  const bool rto_fits = rto > 0 && rto <= 3 * most;
  const double scale = (rto_fits ? std::max(most, rto) : most) * 1.1;
  auto y = [&](double v) { return top + plot - v / scale * plot; };
  std::string out = fmt::format("<svg viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"total time of each drill\">\n",
                                kWidth, top + plot + 40);
  double step = tick_step(scale, 5);
  for (int i = 0; i * step <= scale; ++i) {
    double v = i * step;
    out += svg_line(left, y(v), left + width, y(v), "#e9ecef");
    out += svg_text(left - 6, y(v) + 4, tick_text(v, step), " text-anchor=\"end\"");
  }
  const double slot = width / static_cast<double>(drills.size());
  const double bar = std::min(36.0, slot * 0.7);
  const size_t every = (drills.size() + 11) / 12;  // at most a dozen dates under the bars
  for (size_t i = 0; i < drills.size(); ++i) {
    const DrillView& d = drills[i];
    bool current = i + 1 == drills.size();
    double cx = left + slot * (static_cast<double>(i) + 0.5);
    double h = std::max(1.5, d.seconds / scale * plot);
    out += svg_rect(cx - bar / 2, top + plot - h, bar, h, d.passed ? "#2f9e44" : "#e03131",
                    fmt::format("{} {}: {}, {}", d.started_at, d.set, duration_text(d.seconds),
                                d.passed ? "passed" : "failed"),
                    current ? " rx=\"2\" stroke=\"#212529\" stroke-width=\"2\"" : " rx=\"2\"");
    if (current || (drills.size() - 1 - i) % every == 0)
      out += svg_text(cx, top + plot + 16, current ? std::string("this drill") : esc(d.started_at.substr(0, 10)),
                      " text-anchor=\"middle\"");
  }
  out += svg_line(left, top + plot, left + width, top + plot, "#868e96");
  if (rto_fits) {
    out += svg_line(left, y(rto), left + width, y(rto), kRed, kDashed);
    out += svg_text(left + width, y(rto) - 4, "RTO " + esc(duration_text(rto)),
                    " text-anchor=\"end\" style=\"fill:#c92a2a\"");
  }
  return out + "</svg>\n";
}

std::string history_table(const std::vector<DrillView>& drills) {
  std::string out = "<table><thead><tr><th>Started</th><th>Backup set</th><th>Total</th><th>RTO</th>"
                    "<th>Set age</th><th>Verdict</th></tr></thead><tbody>\n";
  for (size_t i = drills.size(); i-- > 0;) {
    const DrillView& d = drills[i];
    bool current = i + 1 == drills.size();
    out += fmt::format("<tr{}><td>{}{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>"
                       "<td class=\"num\">{}</td><td><span class=\"st {}\">{}</span></td></tr>\n",
                       current ? " class=\"current\"" : "", esc(d.started_at.empty() ? "-" : d.started_at),
                       current ? " (this drill)" : "", esc(d.set.empty() ? "-" : d.set), esc(duration_text(d.seconds)),
                       d.rto > 0 ? esc(duration_text(d.rto)) : "-", d.set_age ? esc(duration_text(*d.set_age)) : "-",
                       d.passed ? "ok" : "failed", d.passed ? "passed" : "failed");
  }
  return out + "</tbody></table>\n";
}

std::string history_section(const DrillView& current, const std::vector<nlohmann::json>& history) {
  std::vector<DrillView> drills;
  size_t from = history.size() > kHistoryShown ? history.size() - kHistoryShown : 0;
  for (size_t i = from; i < history.size(); ++i) drills.push_back(read_drill(history[i]));
  drills.push_back(current);
  size_t passed = 0;
  for (auto& d : drills) passed += d.passed ? 1 : 0;
  std::string out = "<section><h2>History</h2>\n";
  if (drills.size() == 1)
    out += "<p class=\"note\">No earlier drill is recorded in this report directory.</p>\n";
  else
    out += fmt::format("<p class=\"note\">{} of the last {} drills passed{}.</p>\n", passed, drills.size(),
                       from ? fmt::format(" ({} older ones not shown)", from) : "");
  out += history_chart(drills, current.rto);
  out += history_table(drills);
  return out + "</section>\n";
}

}  // namespace

std::string drill_html(const nlohmann::json& report, const std::vector<nlohmann::json>& history) {
  DrillView d = read_drill(report);
  std::string plan = d.plan.empty() ? "(unnamed plan)" : d.plan;
  std::string out = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  out += "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n";
  out += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  out += fmt::format("<title>Restore drill of {}: {}</title>\n", esc(plan), d.passed ? "PASSED" : "FAILED");
  out += fmt::format("<style>{}</style>\n</head>\n<body>\n", kStyle);
  out += banner(d);
  out += "<main>\n";
  out += figures(d);
  out += "<section><h2>Timeline</h2>\n" + legend() + timeline(d) + "</section>\n";
  out += "<section><h2>Steps</h2>\n" + steps_table(d) + "</section>\n";
  out += history_section(d, history);
  out += fmt::format("<footer>Written by mevbackup {}{}.</footer>\n", kVersionString,
                     d.finished_at.empty() ? "" : " after the drill that finished " + esc(d.finished_at));
  return out + "</main>\n</body>\n</html>\n";
}

}  // namespace mevbackup
