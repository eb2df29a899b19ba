// The bandwidth limit as a filter: a token bucket that passes bytes through unchanged and
// sleeps (never spins) when the budget is spent.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "mevbackup/stream.hpp"

namespace mevbackup {

namespace {

class Throttle final : public Filter {
 public:
  Throttle(uint64_t rate, const CancelToken* cancel)
      : rate_(static_cast<double>(rate)),
        // A bucket of a tenth of a second (at least 16 KiB): bursts stay short, and the
        // long-run rate is the limit whatever the chunk sizes.
        burst_(std::max(16384.0, rate_ / 10)),
        tokens_(0),
        last_(Clock::now()),
        cancel_(cancel),
        name_(fmt::format("throttle ({} bytes/s)", rate)) {}

  const char* name() const override { return name_.c_str(); }

  bool process(InBuf& in, OutBuf& out, bool finish) override {
    while (in.left() && out.room()) {
      refill();
      if (tokens_ < 1) {
        // Sleep until a useful amount is allowed again (a sixteenth of the bucket), in
        // slices short enough for a cancel to be seen.
        double need = std::min(burst_ / 16, static_cast<double>(in.left())) - tokens_;
        auto wait = std::chrono::duration<double>(need / rate_);
        auto slice = std::min<std::chrono::duration<double>>(wait, std::chrono::milliseconds(100));
        std::this_thread::sleep_for(slice);
        if (cancel_) cancel_->check();
        continue;
      }
      size_t n = std::min({in.left(), out.room(), static_cast<size_t>(tokens_)});
      std::memcpy(out.p + out.pos, in.p + in.pos, n);
      in.pos += n;
      out.pos += n;
      tokens_ -= static_cast<double>(n);
    }
    return finish && in.left() == 0;
  }

 private:
  using Clock = std::chrono::steady_clock;
  void refill() {
    auto now = Clock::now();
    tokens_ = std::min(burst_, tokens_ + std::chrono::duration<double>(now - last_).count() * rate_);
    last_ = now;
  }
  double rate_, burst_, tokens_;
  Clock::time_point last_;
  const CancelToken* cancel_;
  std::string name_;
};

}  // namespace

std::unique_ptr<Filter> make_throttle(uint64_t bytes_per_second, const CancelToken* cancel) {
  if (bytes_per_second == 0) throw Error(Code::invalid_argument, "a rate limit must be more than 0 bytes/s");
  return std::make_unique<Throttle>(bytes_per_second, cancel);
}

uint64_t parse_rate(const std::string& text) {
  auto bad = [&] {
    return Error(Code::invalid_argument,
                 fmt::format("rate \"{}\" is not a rate above 0 (a number of bytes per second, or e.g. 500KiB/s, "
                             "20MiB/s, 1GB/s)",
                             text));
  };
  std::string s = text;
  if (s.size() > 2 && s.compare(s.size() - 2, 2, "/s") == 0) s.resize(s.size() - 2);
  size_t i = 0;
  while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) ++i;
  if (std::count(s.begin(), s.begin() + i, '.') > 1 ||
      std::none_of(s.begin(), s.begin() + i, [](char c) { return c >= '0' && c <= '9'; }))
    throw bad();
  double v = std::stod(s.substr(0, i));
  std::string unit = s.substr(i);
  double mul = 0;
  if (unit.empty() || unit == "B") mul = 1;
  else if (unit == "k" || unit == "K" || unit == "kB" || unit == "KB") mul = 1e3;
  else if (unit == "KiB" || unit == "Ki") mul = 1024;
  else if (unit == "M" || unit == "MB") mul = 1e6;
  else if (unit == "MiB" || unit == "Mi") mul = 1048576;
  else if (unit == "G" || unit == "GB") mul = 1e9;
  else if (unit == "GiB" || unit == "Gi") mul = 1073741824;
  else throw bad();
  double bytes = v * mul;
  if (!(bytes >= 1) || bytes > 1e13) throw bad();
  return static_cast<uint64_t>(bytes);
}

}  // namespace mevbackup
