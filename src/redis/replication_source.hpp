// The replica side of a Redis full sync, as a Source: SYNC is sent on an already
// connected (and authenticated) socket, and the RDB payload is read off it in either
// framing, "$<length>\r\n" + bytes or the diskless "$EOF:<40-byte mark>\r\n" + bytes +
// mark. Header-only so that the unit tests can drive it over a socketpair.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "mevbackup/stream.hpp"

namespace mevbackup::redis {

// The RDB payload of a replica sync, read off the socket. EOF is reported only once
// the whole payload (the announced length, or everything up to the EOF mark) arrived;
// a connection closed earlier is an error, so no partial RDB is ever committed.
class ReplicationSource final : public Source {
 public:
  ReplicationSource(int fd, std::string name, int header_timeout_s, int idle_timeout_s,
                                       CancelToken* cancel)
      : fd_(fd), name_(std::move(name)), header_timeout_s_(header_timeout_s), idle_timeout_s_(idle_timeout_s), cancel_(cancel),
        ib_(256 * 1024) {}

  // Sends SYNC and reads the framing line. Called before the pipeline starts, so a
  // refused SYNC fails before anything is created.
  void start() {
    const char sync[] = "SYNC\r\n";
    send_all(sync, sizeof sync - 1);
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(header_timeout_s_);
    for (;;) {
      char c;
      if (!recv_some(&c, 1, deadline)) cut("before the RDB payload started");
      if (c == '\n') {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) continue;  // keepalive newline while the server prepares the RDB
        break;
      }
      line += c;
      if (line.size() > 512) throw Error(Code::dump_failed, fmt::format("Redis at {} sent a malformed sync reply", name_));
    }
    if (line[0] == '-')
      throw Error(line.find("NOPERM") != std::string::npos ? Code::permission : Code::dump_failed,
                  fmt::format("Redis at {} refused SYNC: {}", name_, line.substr(1)));
    if (line.rfind("$EOF:", 0) == 0) {
      mark_ = line.substr(5);
      if (mark_.size() != 40)
        throw Error(Code::dump_failed, fmt::format("Redis at {} sent an EOF mark of {} bytes, not 40", name_, mark_.size()));
      diskless_ = true;
    } else if (line[0] == '$') {
      char* end = nullptr;
      long long n = std::strtoll(line.c_str() + 1, &end, 10);
      if (*end || n < 0)
        throw Error(Code::dump_failed, fmt::format("Redis at {} sent a bad RDB length \"{}\"", name_, line));
      remaining_ = static_cast<uint64_t>(n);
    } else {
      throw Error(Code::dump_failed, fmt::format("Redis at {} answered SYNC with \"{}\"", name_, line.substr(0, 80)));
    }
  }

  bool diskless() const { return diskless_; }
  // The announced payload length (0 for the diskless framing).
  uint64_t announced() const { return diskless_ ? 0 : remaining_ + received_; }

  size_t read(MutBytes buf) override {
    for (;;) {
      if (out_pos_ < emit_end_) {
        size_t n = std::min(buf.size(), emit_end_ - out_pos_);
        std::memcpy(buf.data(), ib_.data() + out_pos_, n);
        out_pos_ += n;
        return n;
      }
      if (done_) return 0;
      // Keep the held-back tail (a possible start of the EOF mark) at the front.
      std::memmove(ib_.data(), ib_.data() + emit_end_, ib_len_ - emit_end_);
      ib_len_ -= emit_end_;
      out_pos_ = emit_end_ = 0;
      size_t want = ib_.size() - ib_len_;
      if (!diskless_) want = static_cast<size_t>(std::min<uint64_t>(want, remaining_));
      if (!diskless_ && want == 0) {
        done_ = true;
        continue;
      }
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(idle_timeout_s_);
      size_t n = recv_some(reinterpret_cast<char*>(ib_.data()) + ib_len_, want, deadline);
      if (n == 0)
        cut(diskless_ ? fmt::format("after {} bytes, before the EOF mark", received_)
                      : fmt::format("after {} bytes, {} short of the announced length", received_, remaining_));
      received_ += n;
      ib_len_ += n;
      if (diskless_) {
        if (ib_len_ >= 40 && std::memcmp(ib_.data() + ib_len_ - 40, mark_.data(), 40) == 0) {
          emit_end_ = ib_len_ - 40;
          done_ = true;
        } else {
          emit_end_ = ib_len_ > 40 ? ib_len_ - 40 : 0;
        }
      } else {
        remaining_ -= n;
        emit_end_ = ib_len_;
        if (remaining_ == 0) done_ = true;
      }
    }
  }

  void abort() noexcept override { ::shutdown(fd_, SHUT_RDWR); }

 private:
  [[noreturn]] void cut(const std::string& when) {
    throw Error(Code::dump_failed,
                fmt::format("replication stream from Redis at {} was cut {}; no backup written", name_, when), true);
  }

  void send_all(const char* p, size_t n) {
    while (n) {
      ssize_t w = ::send(fd_, p, n, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        throw Error(Code::connection, fmt::format("sending SYNC to Redis at {}: {}", name_, std::strerror(errno)), true);
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
  }

  // Waits (in slices, watching for cancellation) until data arrives; returns 0 at EOF.
  size_t recv_some(char* p, size_t n, std::chrono::steady_clock::time_point deadline) {
    for (;;) {
      if (cancel_) cancel_->check();
      pollfd pfd{fd_, POLLIN, 0};
      int pr = ::poll(&pfd, 1, 250);
      if (pr < 0) {
        if (errno == EINTR) continue;
        throw sys_error(errno, "waiting for Redis at " + name_);
      }
      if (pr == 0) {
        if (std::chrono::steady_clock::now() > deadline)
          throw Error(Code::dump_failed, fmt::format("Redis at {} sent nothing for too long during the sync", name_),
                      true);
        continue;
      }
      ssize_t r = ::recv(fd_, p, n, 0);
      if (r > 0) return static_cast<size_t>(r);
      if (r == 0) return 0;
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      if (errno == ECONNRESET || errno == EPIPE || errno == ENOTCONN) return 0;
      throw sys_error(errno, "reading the replication stream of Redis at " + name_);
    }
  }

  int fd_;
  std::string name_;
  int header_timeout_s_, idle_timeout_s_;
  CancelToken* cancel_;
  std::vector<std::byte> ib_;
  size_t ib_len_ = 0, out_pos_ = 0, emit_end_ = 0;
  bool diskless_ = false, done_ = false;
  std::string mark_;
  uint64_t remaining_ = 0, received_ = 0;
};

}  // namespace mevbackup::redis
