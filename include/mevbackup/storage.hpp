// Storage: where artifacts live. put() is a Sink that publishes atomically and never
// replaces an existing object; get() is a Source; list/stat/remove act on keys.
// Keys are relative, '/'-separated, without empty, "." or ".." components.
// Thread safety: distinct calls may run concurrently; one Sink/Source is one thread's.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mevbackup/fs.hpp"
#include "mevbackup/stream.hpp"

namespace mevbackup {

struct ObjectInfo {
  std::string key;
  uint64_t size = 0;
  int64_t mtime = 0;  // seconds since the epoch: when the object was stored
};

class Storage {
 public:
  virtual ~Storage() = default;
  // The object appears under `key` only when the sink's commit() succeeds; commit
  // fails with Code::exists when `key` already exists (nothing is overwritten).
  virtual std::unique_ptr<Sink> put(const std::string& key) = 0;
  virtual std::unique_ptr<Source> get(const std::string& key) = 0;
  // Every complete object whose key starts with `prefix`, sorted by key.
  virtual std::vector<ObjectInfo> list(const std::string& prefix) = 0;
  virtual std::optional<ObjectInfo> stat(const std::string& key) = 0;
  // Leftovers of uploads that never committed (a killed process's temporary files, an
  // S3 multipart upload never completed or aborted), for retention to clean up.
  virtual std::vector<ObjectInfo> list_unfinished(const std::string& prefix) {
    (void)prefix;
    return {};
  }
  // Removing a missing key is not an error.
  virtual void remove(const std::string& key) = 0;
  // Where this storage is, for messages (never contains credentials).
  virtual std::string describe() const = 0;

  // Small objects (manifests): whole reads and writes. read_small refuses objects
  // larger than max_size.
  std::string read_small(const std::string& key, size_t max_size = 16 << 20);
  void write_small(const std::string& key, const std::string& data);
};

// Throws invalid_argument naming the key when it is not a valid relative key.
void validate_key(const std::string& key);

// A directory on a local filesystem. Creates `root` (0700) on first write.
std::unique_ptr<Storage> make_local_storage(const std::string& root, Fs& fs = posix_fs());

// "PATH" or "file://PATH" -> local storage. Other schemes -> unsupported.
std::unique_ptr<Storage> open_storage(const std::string& url);

}  // namespace mevbackup
