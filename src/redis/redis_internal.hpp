// Pieces shared by the Redis dumper and restorer.
#pragma once

#include <cstring>
#include <string>
#include <vector>

#include "mevbackup/redis.hpp"
#include "mevbackup/stream.hpp"

namespace mevbackup::redis {

// Keeps the first 9 bytes of an RDB ("REDIS0010") to tell its version.
struct RdbHeader final : Observer {
  unsigned char head[9] = {};
  size_t have = 0;
  void update(Bytes data) override;
  // Throws corrupt (naming `what`) when the bytes are no RDB header.
  int version(const std::string& what) const;
};

// A Source that shows every byte it hands out to observers, for sources whose
// bytes must be looked at before Repository::publish compresses them.
class TapSource final : public Source {
 public:
  explicit TapSource(Source& inner) : inner_(inner) {}
  TapSource& tap(Observer& o) {
    observers_.push_back(&o);
    return *this;
  }
  size_t read(MutBytes buf) override {
    size_t n = inner_.read(buf);
    for (auto* o : observers_) {
      if (n) o->update(Bytes(buf.data(), n));
      else o->finish();
    }
    return n;
  }
  void abort() noexcept override { inner_.abort(); }

 private:
  Source& inner_;
  std::vector<Observer*> observers_;
};

class RdbSummaryObserver;
// Throws corrupt when the RDB `check` saw does not parse or does not match `m`.
void verify_rdb(const Manifest& m, RdbSummaryObserver& check, const RunContext& ctx);
// The live restore (redis_live_restorer.cpp).
void restore_live(Repository& repo, const Manifest& backup, const RedisRestoreOptions& opts, const RunContext& ctx);

}  // namespace mevbackup::redis
