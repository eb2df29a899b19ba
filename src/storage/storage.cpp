#include <fmt/format.h>

#include "mevbackup/storage.hpp"

namespace mevbackup {

void validate_key(const std::string& key) {
  auto bad = [&](const char* why) {
    return Error(Code::invalid_argument, fmt::format("invalid storage key \"{}\": {}", key, why));
  };
  if (key.empty()) throw bad("empty");
  if (key.front() == '/') throw bad("must be relative");
  if (key.find('\0') != std::string::npos) throw bad("contains NUL");
  size_t start = 0;
  while (start <= key.size()) {
    size_t end = key.find('/', start);
    if (end == std::string::npos) end = key.size();
    std::string_view part(key.data() + start, end - start);
    if (part.empty()) throw bad("empty path component");
    if (part == "." || part == "..") throw bad("\".\" or \"..\" component");
    start = end + 1;
  }
}

std::vector<Storage::RemoveFailure> Storage::remove_many(const std::vector<std::string>& keys) {
  std::vector<RemoveFailure> failed;
  for (auto& k : keys) {
    try {
      remove(k);
    } catch (const Error& e) {
      failed.push_back({k, e.what()});
    }
  }
  return failed;
}

std::string Storage::read_small(const std::string& key, size_t max_size) {
  auto src = get(key);
  std::string out;
  char buf[65536];
  for (;;) {
    size_t n = src->read(MutBytes(reinterpret_cast<std::byte*>(buf), sizeof buf));
    if (n == 0) break;
    if (out.size() + n > max_size)
      throw Error(Code::corrupt, fmt::format("{} in {} is larger than {} bytes", key, describe(), max_size));
    out.append(buf, n);
  }
  return out;
}

namespace {

// put() under a key chosen before the upload.
class KeyedSink final : public NamedSink {
 public:
  KeyedSink(std::unique_ptr<Sink> inner, std::string key) : inner_(std::move(inner)), key_(std::move(key)) {}
  void write(Bytes data) override { inner_->write(data); }
  void commit() override { inner_->commit(); }
  void abort() noexcept override { inner_->abort(); }
  std::string key() const override { return key_; }

 private:
  std::unique_ptr<Sink> inner_;
  std::string key_;
};

}  // namespace

std::unique_ptr<NamedSink> Storage::put_first_free(const std::function<std::string(int)>& key_for, int tries) {
  for (int i = 0; i < tries; ++i) {
    std::string key = key_for(i);
    if (!stat(key)) return std::make_unique<KeyedSink>(put(key), key);
  }
  throw Error(Code::exists, fmt::format("{} and the next {} names are taken in {}", key_for(0), tries - 1, describe()));
}

void Storage::write_small(const std::string& key, const std::string& data) {
  auto sink = put_small(key);
  try {
    sink->write(Bytes(reinterpret_cast<const std::byte*>(data.data()), data.size()));
    sink->commit();
  } catch (...) {
    sink->abort();
    throw;
  }
}

std::unique_ptr<Storage> open_storage(const std::string& url) { return open_storage(url, StorageOptions{}); }

std::unique_ptr<Storage> open_storage(const std::string& url, const StorageOptions& opts) {
  if (url.rfind("s3://", 0) == 0) return make_s3_storage(url, opts);
  if (url.empty()) throw Error(Code::invalid_argument, "repository location is empty");
  if (url.rfind("file://", 0) == 0) return make_local_storage(url.substr(7));
  auto scheme = url.find("://");
  if (scheme != std::string::npos)
    throw Error(Code::unsupported,
                fmt::format("repository \"{}\": scheme \"{}\" is not supported (use a local path)", url,
                            url.substr(0, scheme)));
  return make_local_storage(url);
}

}  // namespace mevbackup
