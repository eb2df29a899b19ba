// Pull-side streams: PeekSource, FilterSource and TapSource (stream.hpp).
#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "mevbackup/stream.hpp"

namespace mevbackup {

PeekSource::PeekSource(std::unique_ptr<Source> inner, size_t n) : inner_(std::move(inner)) {
  head_.resize(n);
  size_t got = 0;
  while (got < n) {
    size_t r = inner_->read(MutBytes(reinterpret_cast<std::byte*>(head_.data()) + got, n - got));
    if (r == 0) break;
    got += r;
  }
  head_.resize(got);
}

size_t PeekSource::read(MutBytes buf) {
  if (pos_ < head_.size()) {
    size_t n = std::min(buf.size(), head_.size() - pos_);
    std::memcpy(buf.data(), head_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  return inner_->read(buf);
}

FilterSource::FilterSource(std::unique_ptr<Source> inner, std::unique_ptr<Filter> filter, std::vector<Observer*> before)
    : inner_(std::move(inner)), filter_(std::move(filter)), before_(std::move(before)), buf_(256 * 1024) {}

size_t FilterSource::read(MutBytes out) {
  if (out.empty()) return 0;
  while (!done_) {
    if (in_.left() == 0 && !eof_) {
      size_t n = inner_->read(MutBytes(buf_.data(), buf_.size()));
      if (n == 0) {
        eof_ = true;
        for (Observer* o : before_) o->finish();
      } else {
        for (Observer* o : before_) o->update(Bytes(buf_.data(), n));
      }
      in_ = InBuf{buf_.data(), n, 0};
    }
    OutBuf ob{out.data(), out.size(), 0};
    done_ = filter_->process(in_, ob, eof_ && in_.left() == 0);
    if (done_ && (in_.left() > 0 || !eof_)) {
      // The filter's stream ended before its input did: bytes after the end are damage.
      size_t extra = in_.left();
      std::vector<std::byte> probe(4096);
      while (!eof_) {
        size_t n = inner_->read(MutBytes(probe.data(), probe.size()));
        if (n == 0) {
          eof_ = true;
          break;
        }
        for (Observer* o : before_) o->update(Bytes(probe.data(), n));
        extra += n;
      }
      in_.pos = in_.n;
      for (Observer* o : before_) o->finish();
      if (extra)
        throw Error(Code::corrupt, fmt::format("{}: {} bytes of trailing data after the end of the stream",
                                               filter_->name(), extra));
    }
    if (ob.pos) return ob.pos;
    if (eof_ && in_.left() == 0 && !done_ && ob.pos == 0) {
      // finish was asked and nothing came out: let the filter report its own end next
      // round; a filter that makes no progress on finish is cut short.
      OutBuf again{out.data(), out.size(), 0};
      done_ = filter_->process(in_, again, true);
      if (again.pos) return again.pos;
      if (!done_) throw Error(Code::corrupt, fmt::format("{}: the stream ended before its end", filter_->name()));
    }
  }
  return 0;
}

TapSource::TapSource(std::unique_ptr<Source> inner, std::vector<Observer*> observers, std::function<void()> at_end)
    : inner_(std::move(inner)), observers_(std::move(observers)), at_end_(std::move(at_end)) {}

size_t TapSource::read(MutBytes buf) {
  if (end_error_) std::rethrow_exception(end_error_);
  if (ended_ || buf.empty()) return 0;
  size_t n = inner_->read(buf);
  if (n) {
    for (Observer* o : observers_) o->update(Bytes(buf.data(), n));
    return n;
  }
  ended_ = true;
  try {
    for (Observer* o : observers_) o->finish();
    if (at_end_) at_end_();
  } catch (...) {
    end_error_ = std::current_exception();
    throw;
  }
  return 0;
}

}  // namespace mevbackup
