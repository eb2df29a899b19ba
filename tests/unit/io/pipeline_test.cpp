#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "../helpers.hpp"
#include "io/chunk_queue.hpp"

using namespace mevbackup;
using testutil::random_bytes;

namespace {

// Passes bytes through unchanged, at most `step` bytes per call: exercises partial
// consumption and tiny outputs.
class Copy final : public Filter {
 public:
  explicit Copy(size_t step = SIZE_MAX) : step_(step) {}
  bool process(InBuf& in, OutBuf& out, bool finish) override {
    size_t n = std::min({in.left(), out.room(), step_});
    if (n) std::memcpy(out.p + out.pos, in.p + in.pos, n);  // in.p is null on the last, empty call
    in.pos += n;
    out.pos += n;
    return finish && in.left() == 0;
  }
  const char* name() const override { return "copy"; }

 private:
  size_t step_;
};

class FailingSource final : public Source {
 public:
  explicit FailingSource(size_t fail_after) : fail_after_(fail_after) {}
  size_t read(MutBytes buf) override {
    if (given_ >= fail_after_) throw Error(Code::dump_failed, "source broke");
    size_t n = std::min(buf.size(), fail_after_ - given_);
    std::memset(buf.data(), 'x', n);
    given_ += n;
    return n;
  }
  void abort() noexcept override { aborted = true; }
  std::atomic<bool> aborted{false};

 private:
  size_t fail_after_, given_ = 0;
};

// Never ends until aborted: like a stalled pg_dump.
class EndlessSource final : public Source {
 public:
  size_t read(MutBytes buf) override {
    if (aborted) return 0;
    std::memset(buf.data(), 'y', buf.size());
    reads++;
    return buf.size();
  }
  void abort() noexcept override { aborted = true; }
  std::atomic<bool> aborted{false};
  std::atomic<size_t> reads{0};
};

class FailingSink final : public Sink {
 public:
  explicit FailingSink(size_t fail_after) : fail_after_(fail_after) {}
  void write(Bytes d) override {
    written += d.size();
    if (written > fail_after_) throw Error(Code::no_space, "disk full");
  }
  void commit() override { committed = true; }
  void abort() noexcept override { aborted = true; }
  size_t written = 0;
  bool committed = false, aborted = false;

 private:
  size_t fail_after_;
};

}  // namespace

TEST_CASE("pipeline copies every byte through filters and observers, for any chunk size") {
  for (size_t chunk : {size_t(1), size_t(7), size_t(4096), size_t(1 << 20)}) {
    auto data = random_bytes(chunk < 4096 ? 20011 : 3 * 1024 * 1024 + 17, chunk);  // tiny chunks: less data
    MemorySource src(data);
    Copy c1, c2(3);
    Sha256 before, after;
    ByteCounter count;
    MemorySink sink;
    PipelineOptions o;
    o.chunk_size = chunk;
    Pipeline(src).observe(before).then(c1).then(c2).observe(after).observe(count).run(sink, nullptr, {}, o);
    CHECK(sink.committed);
    CHECK(sink.data == data);
    CHECK(count.count() == data.size());
    CHECK(before.hex() == after.hex());
    CHECK(before.hex() == Sha256::of(Bytes(data.data(), data.size())));
  }
}

TEST_CASE("SHA-256 matches the FIPS 180-2 test vector") {
  std::string abc = "abc";
  CHECK(Sha256::of(Bytes(reinterpret_cast<const std::byte*>(abc.data()), abc.size())) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(Sha256::of(Bytes()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("an empty source gives an empty, committed stream") {
  MemorySource src({});
  Copy c;
  MemorySink sink;
  Pipeline(src).then(c).run(sink);
  CHECK(sink.committed);
  CHECK(sink.data.empty());
}

TEST_CASE("a failing source aborts the sink and surfaces the source's error") {
  FailingSource src(1 << 20);
  Copy c;
  MemorySink sink;
  try {
    Pipeline(src).then(c).run(sink);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::dump_failed);
    CHECK(std::string(e.what()) == "source broke");
  }
  CHECK(sink.aborted);
  CHECK_FALSE(sink.committed);
}

TEST_CASE("a failing sink stops the source and is aborted, not committed") {
  EndlessSource src;
  FailingSink sink(5 << 20);
  CHECK_THROWS_WITH_AS(Pipeline(src).run(sink), "disk full", Error);
  CHECK(src.aborted);
  CHECK(sink.aborted);
  CHECK_FALSE(sink.committed);
}

TEST_CASE("before_commit can veto the commit") {
  MemorySource src(random_bytes(1000));
  MemorySink sink;
  CHECK_THROWS_AS(Pipeline(src).before_commit([] { throw Error(Code::corrupt, "bad checksum"); }).run(sink), Error);
  CHECK(sink.aborted);
  CHECK_FALSE(sink.committed);
}

TEST_CASE("cancellation from another thread stops an endless stream") {
  EndlessSource src;
  MemorySink sink;
  CancelToken cancel;
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    cancel.cancel();
  });
  try {
    Pipeline(src).run(sink, &cancel);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::cancelled);
  }
  t.join();
  CHECK(sink.aborted);
  CHECK_FALSE(sink.committed);
}

TEST_CASE("a progress callback returning false cancels the run") {
  EndlessSource src;
  FailingSink sink(SIZE_MAX);
  PipelineOptions o;
  o.progress_interval = std::chrono::milliseconds(1);
  int calls = 0;
  uint64_t last_in = 0;
  try {
    Pipeline(src).run(sink, nullptr, [&](const Progress& p) {
      last_in = p.bytes_in;
      return ++calls < 5;
    }, o);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::cancelled);
  }
  CHECK(calls == 5);
  CHECK(last_in > 0);
}

TEST_CASE("buffers between stages are bounded: a stalled sink stalls the source") {
  EndlessSource src;
  class SlowSink final : public Sink {
   public:
    void write(Bytes) override {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      throw Error(Code::io, "stop");
    }
    void commit() override {}
    void abort() noexcept override {}
  } sink;
  PipelineOptions o;
  o.chunk_size = 1024;
  o.queue_depth = 2;
  Copy c;
  CHECK_THROWS(Pipeline(src).then(c).run(sink, nullptr, {}, o));
  // source queue (2) + the filter's input and output chunks + its output queue (2)
  // + the chunk in the sink + one blocked read: a handful, never thousands.
  CHECK(src.reads.load() <= 10);
}

TEST_CASE("a stalled source fails the run after the stall timeout, as a retriable I/O error") {
  class Stalled final : public Source {
   public:
    size_t read(MutBytes buf) override {
      if (first_) {
        first_ = false;
        std::memset(buf.data(), 'a', 10);
        return 10;
      }
      std::unique_lock lk(m_);
      cv_.wait(lk, [&] { return aborted_; });  // blocks like a silent TCP peer
      return 0;
    }
    void abort() noexcept override {
      std::lock_guard lk(m_);
      aborted_ = true;
      cv_.notify_all();
    }

   private:
    bool first_ = true, aborted_ = false;
    std::mutex m_;
    std::condition_variable cv_;
  } src;
  MemorySink sink;
  PipelineOptions o;
  o.stall_timeout = std::chrono::milliseconds(300);
  auto t0 = std::chrono::steady_clock::now();
  try {
    Pipeline(src).run(sink, nullptr, {}, o);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::io);
    CHECK(e.retriable());
    CHECK(std::string(e.what()).find("stalled") != std::string::npos);
  }
  auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited >= std::chrono::milliseconds(300));
  CHECK(waited < std::chrono::seconds(5));
  CHECK(sink.aborted);
}

TEST_CASE("TapSource passes bytes unchanged to its observers and checks at the end") {
  auto data = random_bytes(100000, 9, false);
  Sha256 sha;
  ByteCounter n;
  int ends = 0;
  TapSource tap(std::make_unique<MemorySource>(data, 333), {&sha, &n}, [&] {
    ++ends;
    CHECK(n.count() == data.size());
  });
  std::vector<std::byte> out(data.size() + 10);
  size_t got = 0;
  for (size_t r; (r = tap.read(MutBytes(out.data() + got, out.size() - got))) > 0;) got += r;
  CHECK(got == data.size());
  CHECK(tap.read(MutBytes(out.data(), 1)) == 0);
  CHECK(ends == 1);
  Sha256 whole;
  whole.update(Bytes(data.data(), data.size()));
  whole.finish();
  CHECK(sha.hex() == whole.hex());

  TapSource failing(std::make_unique<MemorySource>(data), {}, [] { throw Error(Code::corrupt, "checksum differs"); });
  std::byte b[200000];
  CHECK(failing.read(MutBytes(b, sizeof b)) == data.size());
  CHECK_THROWS_WITH_AS(failing.read(MutBytes(b, sizeof b)), "checksum differs", Error);
  CHECK_THROWS_WITH_AS(failing.read(MutBytes(b, sizeof b)), "checksum differs", Error);
}

TEST_CASE("ChunkQueue hands pushed bytes to a reader on another thread, bounded, and stops both sides on fail") {
  auto data = random_bytes(1 << 20, 4, false);
  ChunkQueue q(2);
  std::vector<std::byte> got;
  std::thread reader([&] {
    std::byte b[1000];
    for (size_t n; (n = q.read(MutBytes(b, sizeof b))) > 0;) got.insert(got.end(), b, b + n);
  });
  for (size_t pos = 0; pos < data.size(); pos += 4096) CHECK(q.push(Bytes(data.data() + pos, 4096)));
  q.close();
  reader.join();
  CHECK(got == data);

  ChunkQueue stopped(1);
  CHECK(stopped.push(Bytes(data.data(), 10)));
  std::thread failer([&] { stopped.fail(); });
  // The second push waits for room until fail() wakes it.
  bool pushed = stopped.push(Bytes(data.data(), 10)) && stopped.push(Bytes(data.data(), 10));
  failer.join();
  CHECK_FALSE(pushed);
  std::byte b[10];
  CHECK_THROWS_WITH_AS(stopped.read(MutBytes(b, sizeof b)), "the stream was stopped", Error);
}
