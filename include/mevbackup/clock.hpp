// The clock seam: code asks a Clock for "now", so tests can pin time.
#pragma once

#include <chrono>
#include <string>

namespace mevbackup {

using TimePoint = std::chrono::system_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const { return std::chrono::system_clock::now(); }
};
Clock& system_clock();

// "2026-11-27T04:27:23Z" (UTC, second precision).
std::string format_rfc3339(TimePoint t);
// Accepts "YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)"; throws invalid_argument naming the text.
TimePoint parse_rfc3339(const std::string& text);
// "20261127_042723" (UTC): the stamp in artifact names.
std::string format_name_stamp(TimePoint t);

}  // namespace mevbackup
