// gzip at higher levels through libdeflate, several members compressed at once: the
// input is cut into independent chunks, each becomes a complete gzip member, and the
// members are written in order. A sequence of members is one valid .gz file (RFC 1952
// section 2.2); stock gunzip reads it. Memory: about (2 x threads) chunks in flight.
#include <libdeflate.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "mevbackup/compress.hpp"

namespace mevbackup {

namespace {

class ParallelDeflate final : public Filter {
 public:
  ParallelDeflate(int level, size_t chunk, unsigned threads)
      : level_(level), chunk_(chunk), threads_(threads ? threads : 1) {
    for (unsigned i = 0; i < threads_; ++i) workers_.emplace_back([this] { work(); });
  }
  ~ParallelDeflate() override {
    {
      std::lock_guard lk(m_);
      stop_ = true;
    }
    cv_work_.notify_all();
    for (auto& t : workers_) t.join();
  }
  const char* name() const override { return "gzip (libdeflate, parallel)"; }

  bool process(InBuf& in, OutBuf& out, bool finish) override {
    // 1. Move input into the current chunk; submit full chunks (waiting for room).
    while (in.left()) {
      if (!cur_) cur_ = std::make_shared<Job>();
      size_t n = std::min(in.left(), chunk_ - cur_->in.size());
      cur_->in.insert(cur_->in.end(), reinterpret_cast<const uint8_t*>(in.p + in.pos),
                      reinterpret_cast<const uint8_t*>(in.p + in.pos + n));
      in.pos += n;
      if (cur_->in.size() == chunk_) {
        if (!submit_if_room()) break;  // no room: emit output first
      }
    }
    if (finish && in.left() == 0 && !submitted_last_) {
      if (!cur_ && !any_member_) cur_ = std::make_shared<Job>();  // empty input: one empty member
      if (!cur_ || submit_if_room()) submitted_last_ = true;
    }
    // 2. Copy finished members, in order, into the output.
    drain(out, /*block=*/in.left() > 0 || (finish && out.room() > 0));
    if (error_) throw Error(Code::internal, *error_);
    return finish && submitted_last_ && !cur_ && order_.empty();
  }

 private:
  struct Job {
    std::vector<uint8_t> in, out;
    size_t out_len = 0, copied = 0;
    bool done = false;
  };

  bool submit_if_room() {
    std::lock_guard lk(m_);
    if (order_.size() >= 2 * threads_) return false;
    order_.push_back(cur_);
    pending_.push_back(cur_);
    cur_.reset();
    any_member_ = true;
    cv_work_.notify_one();
    return true;
  }

  // Copies finished members at the head of the queue. With block=true waits for the
  // head member when nothing could be copied, so the caller always makes progress.
  void drain(OutBuf& out, bool block) {
    std::unique_lock lk(m_);
    while (!order_.empty() && out.room()) {
      auto& head = order_.front();
      if (!head->done) {
        if (!block) return;
        cv_done_.wait(lk, [&] { return head->done; });
      }
      size_t n = std::min(out.room(), head->out_len - head->copied);
      std::memcpy(out.p + out.pos, head->out.data() + head->copied, n);
      out.pos += n;
      head->copied += n;
      if (head->copied == head->out_len) order_.pop_front();
      block = false;  // progress made
    }
  }

  void work() {
    libdeflate_compressor* c = libdeflate_alloc_compressor(level_);
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock lk(m_);
        cv_work_.wait(lk, [&] { return stop_ || !pending_.empty(); });
        if (stop_) break;
        job = pending_.front();
        pending_.pop_front();
      }
      if (!c) {
        std::lock_guard lk(m_);
        error_ = "libdeflate: cannot allocate a compressor";
        job->done = true;
        cv_done_.notify_all();
        continue;
      }
      job->out.resize(libdeflate_gzip_compress_bound(c, job->in.size()));
      size_t n = libdeflate_gzip_compress(c, job->in.data(), job->in.size(), job->out.data(), job->out.size());
      std::vector<uint8_t>().swap(job->in);
      std::lock_guard lk(m_);
      if (n == 0) error_ = "libdeflate: compression failed";
      job->out_len = n;
      job->done = true;
      cv_done_.notify_all();
    }
    if (c) libdeflate_free_compressor(c);
  }

  int level_;
  size_t chunk_;
  unsigned threads_;
  std::vector<std::thread> workers_;
  std::mutex m_;
  std::condition_variable cv_work_, cv_done_;
  std::deque<std::shared_ptr<Job>> pending_, order_;
  std::shared_ptr<Job> cur_;
  std::optional<std::string> error_;
  bool stop_ = false, submitted_last_ = false, any_member_ = false;
};

}  // namespace

std::unique_ptr<Filter> make_parallel_gzip_compressor(int level, size_t chunk, unsigned threads) {
  if (level < 1 || level > 12)
    throw Error(Code::invalid_argument, fmt::format("libdeflate level {} is out of range 1..12", level));
  if (chunk < 64 * 1024) throw Error(Code::invalid_argument, "parallel gzip chunks must be at least 64 KiB");
  return std::make_unique<ParallelDeflate>(level, chunk, threads);
}

}  // namespace mevbackup
