// Reading an object: one ranged GET per chunk, every range from the same version.
#include <algorithm>
#include <atomic>
#include <cstring>

#include <fmt/format.h>

#include "mevbackup/storage.hpp"
#include "s3_client.hpp"
#include "s3_storage.hpp"

namespace mevbackup::s3 {

namespace {

// An object read back, in ranged GETs of 8 MiB.
class S3Source final : public Source {
 public:
  S3Source(Client& c, std::string key, uint64_t size, std::string etag)
      : client_(c), key_(std::move(key)), size_(size), etag_(std::move(etag)) {}
  size_t read(MutBytes buf) override {
    if (pos_ == chunk_.size()) {
      if (offset_ >= size_) return 0;
      fetch();
    }
    size_t n = std::min(buf.size(), chunk_.size() - pos_);
    std::memcpy(buf.data(), chunk_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  void abort() noexcept override { cancel_ = true; }

 private:
  // One ranged GET per chunk: a dropped connection costs a retry of this range only,
  // and If-Match makes sure every range comes from the same object version.
  void fetch() {
    uint64_t end = std::min(size_, offset_ + kChunk) - 1;
    Request r;
    r.method = "GET";
    r.key = key_;
    r.headers.emplace_back("Range", fmt::format("bytes={}-{}", offset_, end));
    if (!etag_.empty()) r.headers.emplace_back("If-Match", etag_);
    r.cancel = &cancel_;
    r.max_body = static_cast<size_t>(end - offset_ + 1);  // a server ignoring Range does not fill memory
    Response resp;
    try {
      resp = client_.perform(r);
    } catch (const Error& e) {
      if (e.code() == Code::exists)  // 412 on If-Match
        throw Error(Code::corrupt, fmt::format("{} changed while being read", client_.describe(key_)));
      throw;
    }
    uint64_t want = end - offset_ + 1;
    if (resp.body.size() != want)
      throw Error(Code::io, fmt::format("{}: range {}-{} returned {} bytes instead of {}", client_.describe(key_),
                                        offset_, end, resp.body.size(), want),
                  true);
    chunk_ = std::move(resp.body);
    pos_ = 0;
    offset_ = end + 1;
  }

  static constexpr uint64_t kChunk = 8 * kMiB;
  Client& client_;
  std::string key_;
  uint64_t size_;
  std::string etag_;
  uint64_t offset_ = 0;
  std::string chunk_;
  size_t pos_ = 0;
  std::atomic<bool> cancel_{false};
};

}  // namespace

std::unique_ptr<Source> make_s3_source(Client& c, std::string full_key, uint64_t size, std::string etag) {
  return std::make_unique<S3Source>(c, std::move(full_key), size, std::move(etag));
}

}  // namespace mevbackup::s3
