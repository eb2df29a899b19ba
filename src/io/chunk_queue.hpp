// From push to pull: a bounded queue of chunks between a Sink's writes (on the pipeline's
// thread) and a pull reader on a thread of its own (libarchive extracting a tar).
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

#include "mevbackup/stream.hpp"

namespace mevbackup {

class ChunkQueue final : public Source {
 public:
  explicit ChunkQueue(size_t depth = 4) : depth_(depth) {}
  // Push side: waits while `depth` chunks are queued. false once fail() was called
  // (the reader gave up): stop writing.
  bool push(Bytes data);
  // The end of the stream: read() returns 0 once the queue is empty.
  void close();
  // Either side: pushes return false, reads throw cancelled ("the stream was stopped").
  void fail();
  // Pull side: the pushed bytes in order.
  size_t read(MutBytes buf) override;

 private:
  const size_t depth_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::vector<std::byte>> q_;
  std::vector<std::byte> cur_;  // the reader's chunk, read from cur_pos_
  size_t cur_pos_ = 0;
  bool closed_ = false, failed_ = false;
};

}  // namespace mevbackup
