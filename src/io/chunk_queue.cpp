#include "chunk_queue.hpp"

#include <algorithm>
#include <cstring>

namespace mevbackup {

bool ChunkQueue::push(Bytes data) {
  std::vector<std::byte> c(data.begin(), data.end());  // copied outside the lock
  std::unique_lock lk(m_);
  cv_.wait(lk, [&] { return failed_ || q_.size() < depth_; });
  if (failed_) return false;
  q_.push_back(std::move(c));
  cv_.notify_all();
  return true;
}

void ChunkQueue::close() {
  std::lock_guard lk(m_);
  closed_ = true;
  cv_.notify_all();
}

void ChunkQueue::fail() {
  std::lock_guard lk(m_);
  failed_ = true;
  cv_.notify_all();
}

size_t ChunkQueue::read(MutBytes buf) {
  if (buf.empty()) return 0;
  if (cur_pos_ == cur_.size()) {
    std::unique_lock lk(m_);
    cv_.wait(lk, [&] { return failed_ || closed_ || !q_.empty(); });
    if (failed_) throw Error(Code::cancelled, "the stream was stopped");
    if (q_.empty()) return 0;  // closed and drained
    cur_ = std::move(q_.front());
    cur_pos_ = 0;
    q_.pop_front();
    cv_.notify_all();
  }
  size_t n = std::min(buf.size(), cur_.size() - cur_pos_);
  std::memcpy(buf.data(), cur_.data() + cur_pos_, n);
  cur_pos_ += n;
  return n;
}

}  // namespace mevbackup
