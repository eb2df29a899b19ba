// Text the reports of `check` (monitor.cpp) and `drill` (plan/drill_report.cpp) share.
#pragma once

#include <string>

namespace mevbackup::report_format {

// A label value as the Prometheus text exposition format quotes it (without the quotes):
// backslash, double quote and newline escaped.
std::string prometheus_label(const std::string& value);

}  // namespace mevbackup::report_format
