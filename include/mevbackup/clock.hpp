// The clock seam: code asks a Clock for "now", so tests can pin time.
#pragma once

#include <chrono>
#include <optional>
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
// The one parser of dates and times with a zone, for every caller (manifests, --now,
// recovery target times, S3 listings): "YYYY-MM-DD(T| )HH:MM:SS[.frac][ ](Z|±HH[:MM]|±HHMM)",
// microsecond precision, years 1970..2200. nullopt when malformed, out of range or
// without a zone; `why`
// then says which ("has no time zone", ...).
std::optional<TimePoint> try_parse_time(const std::string& text, std::string* why = nullptr);
// try_parse_time, or invalid_argument naming the text.
TimePoint parse_rfc3339(const std::string& text);
// "20261127_042723" (UTC): the stamp in artifact names.
std::string format_name_stamp(TimePoint t);

}  // namespace mevbackup
