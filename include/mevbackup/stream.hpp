// The stream contract: Source -> Filter... -> Sink, run by a Pipeline.
//
// Thread safety: a Source, Filter, Observer or Sink is used by one thread at a time
// (the pipeline gives each stage its own thread); CancelToken is safe from any thread.
// Errors: every method reports failure by throwing mevbackup::Error.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "mevbackup/error.hpp"

namespace mevbackup {

using Bytes = std::span<const std::byte>;
using MutBytes = std::span<std::byte>;

// Caller-owned buffers with a cursor, as zstd's ZSTD_inBuffer / ZSTD_outBuffer.
struct InBuf {
  const std::byte* p = nullptr;
  size_t n = 0;
  size_t pos = 0;
  size_t left() const { return n - pos; }
};
struct OutBuf {
  std::byte* p = nullptr;
  size_t n = 0;
  size_t pos = 0;
  size_t room() const { return n - pos; }
};

// Produces bytes. read() fills part of `buf` and returns how many bytes it wrote;
// 0 means the stream ended *successfully* (a source that can fail late, such as a
// child process, checks its exit status before returning 0).
class Source {
 public:
  virtual ~Source() = default;
  virtual size_t read(MutBytes buf) = 0;
  // Called when the pipeline stops early (error or cancel): release what is held.
  virtual void abort() noexcept {}
};

// Transforms bytes. Consumes from `in`, produces into `out`. With finish=true the
// input is the last; returns true once everything is flushed to `out`.
class Filter {
 public:
  virtual ~Filter() = default;
  virtual bool process(InBuf& in, OutBuf& out, bool finish) = 0;
  virtual const char* name() const = 0;
};

// Watches bytes go by without changing them (hash, count); result read after the run.
class Observer {
 public:
  virtual ~Observer() = default;
  virtual void update(Bytes data) = 0;
  virtual void finish() {}
};

// Consumes bytes and publishes them atomically: nothing is visible before commit()
// succeeds; abort() leaves nothing behind and never throws.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void write(Bytes data) = 0;
  virtual void commit() = 0;
  virtual void abort() noexcept = 0;
};

// Cooperative cancellation, shared by everyone taking part in a run.
class CancelToken {
 public:
  CancelToken() = default;
  // A token that is also cancelled when `parent` is (a part of a run: see RepositoryLock::guard).
  explicit CancelToken(const CancelToken* parent) : parent_(parent) {}
  CancelToken(const CancelToken&) = delete;
  CancelToken& operator=(const CancelToken&) = delete;

  void cancel() noexcept { flag_.store(true, std::memory_order_release); }
  // Cancels with a reason: check() then throws Error(code, why) instead of "cancelled".
  // The first reason given stays.
  void cancel(Code code, std::string why);
  bool cancelled() const noexcept {
    return flag_.load(std::memory_order_acquire) || (parent_ && parent_->cancelled());
  }
  // Not while others use the token (the C API resets it when a run starts).
  void reset() noexcept {
    flag_.store(false, std::memory_order_relaxed);
    has_reason_.store(false, std::memory_order_relaxed);
    claiming_.store(false, std::memory_order_relaxed);
  }
  // Throws when cancelled: the reason given to cancel(code, why), the parent's, or
  // Error(cancelled).
  void check() const;

 private:
  std::atomic<bool> flag_{false};
  std::atomic<bool> has_reason_{false};  // code_ and why_ are set (before flag_)
  std::atomic<bool> claiming_{false};    // one writer of code_ and why_
  Code code_ = Code::cancelled;
  std::string why_;
  const CancelToken* parent_ = nullptr;
};

struct Progress {
  const char* stage = "";      // "backup", "restore", ...
  uint64_t bytes_in = 0;       // read from the source so far
  uint64_t bytes_out = 0;      // handed to the sink so far
  double elapsed_s = 0;
  bool done = false;
};
// Returning false cancels the run.
using ProgressFn = std::function<bool(const Progress&)>;

struct PipelineOptions {
  size_t chunk_size = 256 * 1024;   // bytes per buffer between stages
  size_t queue_depth = 4;           // buffers in flight between two stages
  std::chrono::milliseconds progress_interval{200};
  // > 0: fail with Code::io (retriable) when no byte moves for this long, so a stalled
  // server or network cannot hang a cron job forever.
  std::chrono::milliseconds stall_timeout{0};
  const char* stage_name = "";
};

// Runs source -> filters -> sink with a thread per transforming stage and bounded
// queues between them, so memory stays at about
// (stages x queue_depth x chunk_size) whatever the stream's length.
// The sink and the progress callback run on the caller's thread.
// On any error or cancellation every stage stops, the source and sink are aborted,
// and the first error is thrown; the sink is committed only when everything,
// including `before_commit`, succeeded.
class Pipeline {
 public:
  explicit Pipeline(Source& source) : source_(source) {}
  Pipeline& then(Filter& f);
  Pipeline& observe(Observer& o);   // sees the bytes at this position of the chain
  Pipeline& before_commit(std::function<void()> check);
  void run(Sink& sink, CancelToken* cancel = nullptr, const ProgressFn& progress = {},
           const PipelineOptions& opts = {});

 private:
  struct Step {
    Filter* filter = nullptr;
    std::vector<Observer*> observers;   // observe the output of this step
  };
  Source& source_;
  std::vector<Observer*> source_observers_;
  std::vector<Step> steps_;
  std::function<void()> before_commit_;
};

// Convenience adapters used by tests and small tools.
class MemorySource : public Source {
 public:
  explicit MemorySource(std::vector<std::byte> data, size_t max_read = SIZE_MAX)
      : data_(std::move(data)), max_read_(max_read) {}
  size_t read(MutBytes buf) override;

 private:
  std::vector<std::byte> data_;
  size_t pos_ = 0;
  size_t max_read_;
};

// A source whose first bytes can be looked at before it is read: head() holds up to
// `n` bytes read ahead (fewer when the stream is shorter), which read() then returns
// first. For telling formats apart by their magic (an encrypted WAL file from a plain one).
class PeekSource final : public Source {
 public:
  PeekSource(std::unique_ptr<Source> inner, size_t n);
  const std::string& head() const { return head_; }
  size_t read(MutBytes buf) override;
  void abort() noexcept override { inner_->abort(); }

 private:
  std::unique_ptr<Source> inner_;
  std::string head_;
  size_t pos_ = 0;
};

// A pull-side filter: the bytes of `inner`, seen by `before` (the raw bytes: a hash or a
// count, optional), transformed by `filter`. read() returns 0 once the filter flushed
// its end; a stream the filter finds cut short throws, as in a Pipeline.
class FilterSource final : public Source {
 public:
  FilterSource(std::unique_ptr<Source> inner, std::unique_ptr<Filter> filter, std::vector<Observer*> before = {});
  size_t read(MutBytes buf) override;
  void abort() noexcept override { inner_->abort(); }

 private:
  std::unique_ptr<Source> inner_;
  std::unique_ptr<Filter> filter_;
  std::vector<Observer*> before_;
  std::vector<std::byte> buf_;
  InBuf in_;
  bool eof_ = false, done_ = false;
};

// A pull-side observer: the bytes of `inner` unchanged, seen by `observers` (finished at
// its end). `at_end` (optional) runs once when `inner` has ended, before read() returns 0,
// so a check that throws (sizes and checksums against a manifest) fails the stream there
// and on every later read.
class TapSource final : public Source {
 public:
  TapSource(std::unique_ptr<Source> inner, std::vector<Observer*> observers, std::function<void()> at_end = {});
  size_t read(MutBytes buf) override;
  void abort() noexcept override { inner_->abort(); }

 private:
  std::unique_ptr<Source> inner_;
  std::vector<Observer*> observers_;
  std::function<void()> at_end_;
  bool ended_ = false;
  std::exception_ptr end_error_;
};

// A bandwidth limit: passes bytes through unchanged at most `bytes_per_second` on
// average (a token bucket of a tenth of a second), sleeping while over budget and checking
// `cancel` (optional) at least every 100 ms. 0 is invalid_argument.
std::unique_ptr<Filter> make_throttle(uint64_t bytes_per_second, const CancelToken* cancel = nullptr);
// "20MiB/s", "500KiB/s", "1.5MB/s", "1000000" (bytes/s): K/M/G are powers of 1000,
// KiB/MiB/GiB of 1024. invalid_argument naming the text for 0, "fast" and the like.
uint64_t parse_rate(const std::string& text);

class MemorySink : public Sink {
 public:
  void write(Bytes data) override;
  void commit() override { committed = true; }
  void abort() noexcept override { aborted = true; }
  std::vector<std::byte> data;
  bool committed = false;
  bool aborted = false;
};

}  // namespace mevbackup
