// libFuzzer target for the parsers of S3's XML answers (src/storage/s3): the listing
// (ListObjectsV2), the multipart uploads listing (ListMultipartUploads), <Error> bodies, CreateMultipartUpload, CompleteMultipartUpload and
// DeleteObjects answers, and the listing's LastModified dates. A server (or a proxy)
// can send anything: every input must end in a value or an Error(io), never a crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "mevbackup/error.hpp"
#include "storage/s3/s3_client.hpp"
#include "storage/s3/s3_storage.hpp"

using namespace mevbackup;
using namespace mevbackup::s3;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string xml(reinterpret_cast<const char*>(data), size);
  auto expect_io = [](const Error& e) {
    if (e.code() != Code::io) std::abort();
  };
  (void)parse_error(xml);
  (void)parse_upload_id(xml);
  try {
    (void)parse_complete_result(xml, "s3://fuzz/key");
  } catch (const Error& e) {
    expect_io(e);
  }
  try {
    (void)parse_delete_result(xml, "prefix/", "s3://fuzz/prefix");
  } catch (const Error& e) {
    expect_io(e);
  }
  for (const char* root : {"", "prefix/"}) {
    try {
      ListPage p = parse_list_page(xml, root, "s3://fuzz/prefix");
      for (auto& o : p.objects)
        if (o.key.size() > xml.size()) std::abort();
    } catch (const Error& e) {
      expect_io(e);
    }
  }
  for (const char* root : {"", "prefix/"}) {
    try {
      UploadsPage p = parse_uploads_page(xml, root, "s3://fuzz/prefix");
      for (auto& o : p.uploads)
        if (o.key.empty() || o.upload_id.empty() || o.key.size() > xml.size()) std::abort();
    } catch (const Error& e) {
      expect_io(e);
    }
  }
  // Dates come from the listing's text as they are.
  (void)parse_iso8601(xml.substr(0, 64));
  return 0;
}
