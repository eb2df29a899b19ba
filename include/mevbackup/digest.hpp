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

}  // namespace mevbackup
