// An observer that fails the stream as soon as more bytes pass than a limit allows: an
// artifact read back from storage is input, and what its manifest declares bounds it,
// so a small hostile artifact cannot inflate into a full disk (a decompression bomb)
// before its checksum is checked at the end. The pipeline calls observers before it
// hands a chunk on, so the stage after this one never receives a byte past the limit.
#pragma once

#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "mevbackup/error.hpp"
#include "mevbackup/stream.hpp"

namespace mevbackup {

class ByteLimit final : public Observer {
 public:
  // `what` names the stream in the error ("the payload of database/x.dump.gz");
  // `declared` says where the limit comes from ("its manifest declares").
  ByteLimit(uint64_t limit, std::string what, std::string declared = "its manifest declares")
      : limit_(limit), what_(std::move(what)), declared_(std::move(declared)) {}
  void update(Bytes data) override {
    n_ += data.size();
    if (n_ > limit_)
      throw Error(Code::corrupt, fmt::format("{} is larger than the {} bytes {}; stopped after {} bytes", what_,
                                             limit_, declared_, n_));
  }
  // Tightens (or sets) the limit once the stream itself tells more (a WAL segment's header).
  void set_limit(uint64_t limit, std::string declared) {
    limit_ = limit;
    declared_ = std::move(declared);
    update(Bytes());
  }
  uint64_t count() const { return n_; }

 private:
  uint64_t limit_;
  uint64_t n_ = 0;
  std::string what_, declared_;
};

}  // namespace mevbackup
