#include <cctype>
#include <cstdio>
#include <ctime>

#include <fmt/format.h>

#include "mevbackup/clock.hpp"
#include "mevbackup/error.hpp"

namespace mevbackup {

Clock& system_clock() {
  static Clock c;
  return c;
}

namespace {
std::tm utc(TimePoint t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  return tm;
}
}  // namespace

std::string format_rfc3339(TimePoint t) {
  std::tm tm = utc(t);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::string format_name_stamp(TimePoint t) {
  std::tm tm = utc(t);
  return fmt::format("{:04}{:02}{:02}_{:02}{:02}{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec);
}

std::optional<TimePoint> try_parse_time(const std::string& text, std::string* why) {
  auto fail = [&](const char* reason) -> std::optional<TimePoint> {
    if (why) *why = reason;
    return std::nullopt;
  };
  // Widths bound every field, so nothing overflows inside sscanf (tests/fuzz found a
  // year of -2147483648 once); a field out of range is as malformed as a missing one.
  int Y = 0, M = 0, D = 0, h = 0, m = 0, s = 0, n = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2d%*1[ T]%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &s, &n) != 6 || n == 0)
    return fail("is not a date and time");
  size_t i = static_cast<size_t>(n);
  long usec = 0;
  if (i < text.size() && text[i] == '.') {
    ++i;
    int digits = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      if (digits < 6) usec = usec * 10 + (text[i] - '0');
      ++digits;
      ++i;
    }
    if (!digits) return fail("has an empty fraction");
    for (; digits < 6; ++digits) usec *= 10;
  }
  while (i < text.size() && text[i] == ' ') ++i;
  long offset = 0;
  if (i < text.size() && (text[i] == 'Z' || text[i] == 'z')) {
    ++i;
  } else if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
    int sign = text[i] == '-' ? -1 : 1;
    ++i;
    int oh = 0, om = 0, k = 0;
    if (std::sscanf(text.c_str() + i, "%2d%n", &oh, &k) != 1 || k != 2 || oh < 0) return fail("has a bad zone offset");
    i += 2;
    if (i < text.size() && text[i] == ':') ++i;
    if (i + 2 <= text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      if (std::sscanf(text.c_str() + i, "%2d%n", &om, &k) != 1 || k != 2 || om < 0 || om > 59)
        return fail("has a bad zone offset");
      i += 2;
    }
    offset = sign * (oh * 3600L + om * 60L);
  } else {
    return fail("has no time zone");
  }
  if (i != text.size()) return fail("has trailing characters");
  // Years outside 1970..2200 are refused: system_clock counts nanoseconds in 64 bits,
  // which end before 1678 and after 2262 (the fuzzer found a year 1013 overflowing it).
  if (Y < 1970 || Y > 2200 || M < 1 || M > 12 || D < 1 || D > 31 || h < 0 || h > 23 || m < 0 || m > 59 || s < 0 ||
      s > 60)
    return fail("is out of range");
  std::tm tm{};
  tm.tm_year = Y - 1900;
  tm.tm_mon = M - 1;
  tm.tm_mday = D;
  tm.tm_hour = h;
  tm.tm_min = m;
  tm.tm_sec = s;
  std::time_t t = timegm(&tm) - offset;
  return std::chrono::system_clock::from_time_t(t) + std::chrono::microseconds(usec);
}

TimePoint parse_rfc3339(const std::string& text) {
  std::string why;
  if (auto t = try_parse_time(text, &why)) return *t;
  throw Error(Code::invalid_argument,
              fmt::format("invalid time \"{}\": it {} (expected RFC 3339, e.g. 2026-11-27T04:00:00Z)", text, why));
}

}  // namespace mevbackup
