// S3Storage internals shared with the unit tests.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mevbackup/storage.hpp"
#include "s3_client.hpp"

namespace pugi {
class xml_document;
}

namespace mevbackup::s3 {

inline constexpr uint64_t kMiB = 1024 * 1024;
inline constexpr uint64_t kMinPartSize = 5 * kMiB;           // S3's minimum (but for the last part)
inline constexpr uint64_t kMaxPartSize = 5 * 1024 * kMiB;    // S3's maximum
inline constexpr uint64_t kDefaultPartSize = 8 * kMiB;
inline constexpr int kMaxParts = 10000;

// Size of part `n` (1-based) of a stream of unknown length: `base` doubling every 900
// parts, capped at 5 GiB, so that 10,000 parts hold at least 5 TiB for any base >= 5 MiB
// while a small backup still uses small parts.
uint64_t part_size_for(int n, uint64_t base);

// "s3://bucket/some/prefix/" -> bucket "bucket", prefix "some/prefix".
struct S3Url {
  std::string bucket, prefix;
};
S3Url parse_s3_url(const std::string& url);

// The parsers of S3's XML answers, apart from the requests so that the unit tests and
// the fuzzer (tests/fuzz/s3_xml_fuzz.cpp) reach them. `where` names the bucket or key
// in messages; `root` is the repository's prefix with its '/', removed from the keys.
struct ListPage {
  std::vector<ObjectInfo> objects;  // keys under `root` only, `root` removed
  bool truncated = false;           // IsTruncated was "true"
  std::string next_token;           // NextContinuationToken (when truncated)
};
// ListObjectsV2. Throws io for malformed XML or no ListBucketResult.
ListPage parse_list_page(const std::string& xml, const std::string& root, const std::string& where);
// ListMultipartUploads: the uploads for keys under `root` (`root` removed; upload_id and
// mtime = Initiated set, size 0) and the markers of the next page. Throws io for
// malformed XML or no ListMultipartUploadsResult, or a truncated page without markers.
struct UploadsPage {
  std::vector<ObjectInfo> uploads;
  bool truncated = false;
  std::string next_key_marker, next_upload_id_marker;
};
UploadsPage parse_uploads_page(const std::string& xml, const std::string& root, const std::string& where);
// CreateMultipartUpload: the UploadId, "" when the answer has none.
std::string parse_upload_id(const std::string& xml);
// DeleteObjects (quiet): the keys that failed. Throws io for a malformed answer.
std::vector<Storage::RemoveFailure> parse_delete_result(const std::string& xml, const std::string& root,
                                                        const std::string& where);
// CompleteMultipartUpload: the <Error> of a 200 answer (code empty on success). Throws
// io when the answer is neither an error nor a CompleteMultipartUploadResult.
S3Error parse_complete_result(const std::string& xml, const std::string& where);

// s3_xml.cpp: an XML document as sent in a request body (with its declaration).
std::string xml_of(const pugi::xml_document& doc);

// ---- the storage's roles, one file each -------------------------------------------
// What the writer and the lifecycle rules need of the S3 storage they work on
// (S3StorageImpl, s3_storage.cpp). Keys given as `full_key` include the prefix.
class S3Target {
 public:
  virtual Client& client() = 0;
  virtual const StorageOptions& opts() const = 0;
  virtual const std::string& prefix() const = 0;
  virtual uint64_t part_size() const = 0;
  virtual int concurrency() const = 0;
  virtual Response head(const std::string& full_key) = 0;  // 404 is an answer, not an error

 protected:
  ~S3Target() = default;
};

// s3_write.cpp: an upload (one PUT, or multipart once it outgrows a part) that never
// replaces an existing object; `artifact` gives it the storage class.
std::unique_ptr<Sink> make_s3_sink(S3Target& st, std::string full_key, bool artifact);
// s3_write.cpp: put_first_free by claims, for servers that ignore If-None-Match.
std::unique_ptr<NamedSink> put_claimed(Storage& st, const StorageOptions& opts,
                                       const std::function<std::string(int)>& key_for, int tries);
// s3_write.cpp: a random mark of one upload (x-amz-meta-mevb-upload).
std::string upload_nonce();
// s3_read.cpp: the object read in ranged GETs, each If-Match `etag` (when not empty).
std::unique_ptr<Source> make_s3_source(Client& c, std::string full_key, uint64_t size, std::string etag);

}  // namespace mevbackup::s3
