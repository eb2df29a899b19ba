// Observers that watch bytes go by: SHA-256 and a byte counter.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "mevbackup/stream.hpp"

namespace mevbackup {

class Sha256 final : public Observer {
 public:
  Sha256();
  ~Sha256() override;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(Bytes data) override;
  void finish() override;
  // Lowercase hex of the digest; valid after finish().
  const std::string& hex() const { return hex_; }
  static std::string of(Bytes data);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string hex_;
};

class ByteCounter final : public Observer {
 public:
  void update(Bytes data) override { n_ += data.size(); }
  uint64_t count() const { return n_; }

 private:
  uint64_t n_ = 0;
};

// A sink that keeps nothing: it hashes and counts what reaches it (and hands it to
// `extra`, a kind's own check), for verifying a stream without storing it.
class DigestSink final : public Sink {
 public:
  void write(Bytes data) override {
    sha.update(data);
    count.update(data);
    if (extra) extra->update(data);
  }
  void commit() override { sha.finish(); }
  void abort() noexcept override {}
  Sha256 sha;
  ByteCounter count;
  Observer* extra = nullptr;
};

}  // namespace mevbackup
