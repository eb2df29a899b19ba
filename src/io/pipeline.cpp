#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "mevbackup/stream.hpp"

namespace mevbackup {

void CancelToken::cancel(Code code, std::string why) {
  if (!claiming_.exchange(true)) {
    code_ = code;
    why_ = std::move(why);
    has_reason_.store(true, std::memory_order_release);
  }
  cancel();
}

void CancelToken::check() const {
  if (!flag_.load(std::memory_order_acquire)) {
    if (parent_) parent_->check();
    return;
  }
  if (has_reason_.load(std::memory_order_acquire)) throw Error(code_, why_);
  throw Error(Code::cancelled, "operation cancelled");
}

size_t MemorySource::read(MutBytes buf) {
  size_t n = std::min({buf.size(), data_.size() - pos_, max_read_});
  if (n) std::memcpy(buf.data(), data_.data() + pos_, n);
  pos_ += n;
  return n;
}

void MemorySink::write(Bytes d) { data.insert(data.end(), d.begin(), d.end()); }

namespace {

// A buffer of at most `cap` bytes whose first size() bytes are in use. Allocated
// without zeroing and recycled through a Pool: a 256 KiB value-initialised vector per
// chunk cost a memset and fresh page faults for every chunk of a multi-GB stream.
class Chunk {
 public:
  Chunk() = default;
  Chunk(std::unique_ptr<std::byte[]> buf, size_t cap) : buf_(std::move(buf)), cap_(cap), size_(cap) {}
  std::byte* data() { return buf_.get(); }
  size_t size() const { return size_; }
  size_t capacity() const { return cap_; }
  void resize(size_t n) { size_ = std::min(n, cap_); }
  std::unique_ptr<std::byte[]> release() {
    cap_ = size_ = 0;
    return std::move(buf_);
  }

 private:
  std::unique_ptr<std::byte[]> buf_;
  size_t cap_ = 0;
  size_t size_ = 0;
};

// Free buffers of one size, shared by the stages of one run. Bounded: at most as many
// as can be in flight (queues and stages), so memory stays what the queues allow.
class Pool {
 public:
  Pool(size_t chunk_size, size_t max_free) : chunk_size_(chunk_size), max_free_(max_free) {}
  Chunk get() {
    {
      std::lock_guard lk(m_);
      if (!free_.empty()) {
        auto b = std::move(free_.back());
        free_.pop_back();
        return Chunk(std::move(b), chunk_size_);
      }
    }
    return Chunk(std::unique_ptr<std::byte[]>(new std::byte[chunk_size_]), chunk_size_);
  }
  void put(Chunk& c) {
    if (c.capacity() != chunk_size_) return;
    auto b = c.release();
    std::lock_guard lk(m_);
    if (free_.size() < max_free_) free_.push_back(std::move(b));
  }

 private:
  std::mutex m_;
  std::vector<std::unique_ptr<std::byte[]>> free_;
  size_t chunk_size_;
  size_t max_free_;
};

// A bounded FIFO between two stages. close() marks the normal end of the stream;
// fail() wakes everybody at once and makes every later push/pop give up.
class ChunkQueue {
 public:
  explicit ChunkQueue(size_t depth) : depth_(depth ? depth : 1) {}

  bool push(Chunk c) {
    std::unique_lock lk(m_);
    not_full_.wait(lk, [&] { return failed_ || q_.size() < depth_; });
    if (failed_) return false;
    q_.push_back(std::move(c));
    not_empty_.notify_one();
    return true;
  }
  enum class Pop { item, end, failed, timeout };
  Pop pop(Chunk& out, std::optional<std::chrono::milliseconds> wait = std::nullopt) {
    std::unique_lock lk(m_);
    auto ready = [&] { return failed_ || closed_ || !q_.empty(); };
    if (wait) {
      if (!not_empty_.wait_for(lk, *wait, ready)) return Pop::timeout;
    } else {
      not_empty_.wait(lk, ready);
    }
    if (failed_) return Pop::failed;
    if (q_.empty()) return Pop::end;
    out = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return Pop::item;
  }
  void close() {
    std::lock_guard lk(m_);
    closed_ = true;
    not_empty_.notify_all();
  }
  void fail() {
    std::lock_guard lk(m_);
    failed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable not_empty_, not_full_;
  std::deque<Chunk> q_;
  size_t depth_;
  bool closed_ = false;
  bool failed_ = false;
};

struct RunState {
  std::mutex m;
  std::exception_ptr first_error;
  std::vector<std::unique_ptr<ChunkQueue>> queues;
  std::atomic<bool> failed{false};
  std::atomic<uint64_t> bytes_in{0};

  void record(std::exception_ptr e) {
    {
      std::lock_guard lk(m);
      if (!first_error) first_error = e;
    }
    failed = true;
    for (auto& q : queues) q->fail();
  }
};

void notify(const std::vector<Observer*>& obs, Bytes b) {
  for (auto* o : obs) o->update(b);
}
void finish(const std::vector<Observer*>& obs) {
  for (auto* o : obs) o->finish();
}

}  // namespace

Pipeline& Pipeline::then(Filter& f) {
  steps_.push_back(Step{&f, {}});
  return *this;
}

Pipeline& Pipeline::observe(Observer& o) {
  (steps_.empty() ? source_observers_ : steps_.back().observers).push_back(&o);
  return *this;
}

Pipeline& Pipeline::before_commit(std::function<void()> check) {
  before_commit_ = std::move(check);
  return *this;
}

void Pipeline::run(Sink& sink, CancelToken* cancel, const ProgressFn& progress,
                   const PipelineOptions& opts) {
  if (opts.chunk_size == 0) throw Error(Code::invalid_argument, "pipeline chunk size must be > 0");
  CancelToken local_cancel;
  CancelToken& cancel_tok = cancel ? *cancel : local_cancel;
  RunState st;
  for (size_t i = 0; i <= steps_.size(); ++i)
    st.queues.push_back(std::make_unique<ChunkQueue>(opts.queue_depth));
  // Every queue full, plus one buffer held by each stage and the sink.
  Pool pool(opts.chunk_size, (steps_.size() + 1) * (std::max<size_t>(opts.queue_depth, 1) + 2));

  std::vector<std::thread> threads;
  auto guarded = [&st](auto&& body) {
    return [&st, body]() mutable {
      try {
        body();
      } catch (...) {
        st.record(std::current_exception());
      }
    };
  };

  // Stage 0: the source.
  threads.emplace_back(guarded([&] {
    ChunkQueue& out = *st.queues[0];
    for (;;) {
      cancel_tok.check();
      Chunk c = pool.get();
      size_t n = source_.read(MutBytes(c.data(), c.size()));
      if (n == 0) {
        pool.put(c);
        break;
      }
      c.resize(n);
      notify(source_observers_, Bytes(c.data(), n));
      st.bytes_in += n;
      if (!out.push(std::move(c))) return;
    }
    finish(source_observers_);
    out.close();
  }));

  // One thread per filter.
  for (size_t i = 0; i < steps_.size(); ++i) {
    threads.emplace_back(guarded([&, i] {
      Filter& f = *steps_[i].filter;
      const auto& obs = steps_[i].observers;
      ChunkQueue& in_q = *st.queues[i];
      ChunkQueue& out_q = *st.queues[i + 1];
      Chunk out = pool.get();
      OutBuf ob{out.data(), out.size(), 0};
      auto flush = [&]() -> bool {
        if (ob.pos == 0) return true;
        out.resize(ob.pos);
        notify(obs, Bytes(out.data(), out.size()));
        bool ok = out_q.push(std::move(out));
        out = pool.get();
        ob = OutBuf{out.data(), out.size(), 0};
        return ok;
      };
      Chunk c;
      for (;;) {
        auto r = in_q.pop(c);
        if (r == ChunkQueue::Pop::failed) return;
        bool last = (r == ChunkQueue::Pop::end);
        InBuf ib{c.data(), last ? 0 : c.size(), 0};
        for (;;) {
          cancel_tok.check();
          size_t in_before = ib.pos, out_before = ob.pos;
          bool done = f.process(ib, ob, last);
          bool progressed = ib.pos != in_before || ob.pos != out_before || ob.room() == 0;
          if (ob.room() == 0 && !flush()) return;
          if (last ? done : ib.left() == 0) break;
          if (!progressed) throw Error(Code::internal, std::string("filter ") + f.name() + " made no progress");
        }
        if (last) break;
        pool.put(c);
      }
      if (!flush()) return;
      finish(obs);
      out_q.close();
    }));
  }

  // The sink, on the caller's thread.
  auto started = std::chrono::steady_clock::now();
  auto last_report = started;
  uint64_t bytes_out = 0;
  Progress p;
  p.stage = opts.stage_name;
  auto report = [&](bool done) {
    if (!progress) return;
    p.bytes_in = st.bytes_in.load();
    p.bytes_out = bytes_out;
    p.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    p.done = done;
    if (!progress(p)) cancel_tok.cancel();
  };
  auto stop_all = [&] {
    for (auto& q : st.queues) q->fail();
    source_.abort();  // unblocks a source stuck in read()
    for (auto& t : threads)
      if (t.joinable()) t.join();
    sink.abort();
  };

  uint64_t seen_in = 0;
  auto last_motion = started;
  auto check_stall = [&](std::chrono::steady_clock::time_point now) {
    uint64_t in_now = st.bytes_in.load();
    if (in_now != seen_in) {
      seen_in = in_now;
      last_motion = now;
    }
    if (opts.stall_timeout.count() > 0 && now - last_motion > opts.stall_timeout)
      throw Error(Code::io,
                  fmt::format("no data moved for {} s: the source or the destination stalled",
                              std::chrono::duration_cast<std::chrono::seconds>(opts.stall_timeout).count()),
                  true);
  };
  try {
    ChunkQueue& in_q = *st.queues.back();
    Chunk c;
    for (;;) {
      cancel_tok.check();
      auto wait = opts.progress_interval;
      if (opts.stall_timeout.count() > 0) wait = std::min(wait, std::max(opts.stall_timeout / 4, std::chrono::milliseconds(10)));
      auto r = in_q.pop(c, wait);
      if (r == ChunkQueue::Pop::timeout) {
        auto now = std::chrono::steady_clock::now();
        check_stall(now);
        if (now - last_report >= opts.progress_interval) {
          last_report = now;
          report(false);
        }
        continue;
      }
      if (r == ChunkQueue::Pop::failed) break;
      if (r == ChunkQueue::Pop::end) break;
      sink.write(Bytes(c.data(), c.size()));
      bytes_out += c.size();
      pool.put(c);
      auto now = std::chrono::steady_clock::now();
      last_motion = now;
      if (now - last_report >= opts.progress_interval) {
        last_report = now;
        report(false);
      }
    }
  } catch (...) {
    st.record(std::current_exception());
  }
  if (st.failed) {
    stop_all();
    std::rethrow_exception(st.first_error);
  }
  for (auto& t : threads) t.join();
  if (st.failed) {  // a stage failed after the sink saw the end (cannot normally happen)
    source_.abort();
    sink.abort();
    std::rethrow_exception(st.first_error);
  }
  try {
    cancel_tok.check();
    if (before_commit_) before_commit_();
    sink.commit();
  } catch (...) {
    sink.abort();
    throw;
  }
  report(true);
}

}  // namespace mevbackup
