// The parsers of S3's XML answers (declared in s3_storage.hpp), apart from the requests so
// that the unit tests and the fuzzer reach them.
#include <pugixml.hpp>

#include <sstream>

#include <fmt/format.h>

#include "mevbackup/storage.hpp"
#include "s3_client.hpp"
#include "s3_storage.hpp"

namespace mevbackup::s3 {

ListPage parse_list_page(const std::string& xml, const std::string& root, const std::string& where) {
  pugi::xml_document doc;
  if (!doc.load_buffer(xml.data(), xml.size()))
    throw Error(Code::io, fmt::format("S3 listing of {}: malformed XML", where));
  pugi::xml_node res = doc.child("ListBucketResult");
  if (!res) throw Error(Code::io, fmt::format("S3 listing of {}: no ListBucketResult", where));
  ListPage page;
  for (pugi::xml_node c : res.children("Contents")) {
    std::string k = c.child_value("Key");
    if (k.compare(0, root.size(), root) != 0) continue;
    page.objects.push_back(ObjectInfo{k.substr(root.size()), std::strtoull(c.child_value("Size"), nullptr, 10),
                                      parse_iso8601(c.child_value("LastModified")), {}});
  }
  page.truncated = std::string(res.child_value("IsTruncated")) == "true";
  if (page.truncated) page.next_token = res.child_value("NextContinuationToken");
  return page;
}

UploadsPage parse_uploads_page(const std::string& xml, const std::string& root, const std::string& where) {
  pugi::xml_document doc;
  if (!doc.load_buffer(xml.data(), xml.size()))
    throw Error(Code::io, fmt::format("S3 listing of the multipart uploads of {}: malformed XML", where));
  pugi::xml_node res = doc.child("ListMultipartUploadsResult");
  if (!res)
    throw Error(Code::io, fmt::format("S3 listing of the multipart uploads of {}: no ListMultipartUploadsResult", where));
  UploadsPage page;
  for (pugi::xml_node u : res.children("Upload")) {
    std::string k = u.child_value("Key");
    std::string id = u.child_value("UploadId");
    if (k.size() <= root.size() || k.compare(0, root.size(), root) != 0 || id.empty()) continue;
    page.uploads.push_back(ObjectInfo{k.substr(root.size()), 0, parse_iso8601(u.child_value("Initiated")), std::move(id)});
  }
  page.truncated = std::string(res.child_value("IsTruncated")) == "true";
  if (page.truncated) {
    page.next_key_marker = res.child_value("NextKeyMarker");
    page.next_upload_id_marker = res.child_value("NextUploadIdMarker");
    if (page.next_key_marker.empty())
      throw Error(Code::io,
                  fmt::format("S3 listing of the multipart uploads of {}: truncated without a NextKeyMarker", where));
  }
  return page;
}

std::string parse_upload_id(const std::string& xml) {
  pugi::xml_document doc;
  doc.load_buffer(xml.data(), xml.size());
  return doc.child("InitiateMultipartUploadResult").child_value("UploadId");
}

std::vector<Storage::RemoveFailure> parse_delete_result(const std::string& xml, const std::string& root,
                                                        const std::string& where) {
  pugi::xml_document res;
  if (!res.load_buffer(xml.data(), xml.size()) || !res.child("DeleteResult"))
    throw Error(Code::io, fmt::format("DeleteObjects in {}: malformed answer", where));
  std::vector<Storage::RemoveFailure> failed;
  for (pugi::xml_node e : res.child("DeleteResult").children("Error")) {
    std::string k = e.child_value("Key");
    if (k.compare(0, root.size(), root) == 0) k = k.substr(root.size());
    failed.push_back({k, fmt::format("{}: {}", e.child_value("Code"), e.child_value("Message"))});
  }
  return failed;
}

S3Error parse_complete_result(const std::string& xml, const std::string& where) {
  S3Error e = parse_error(xml);
  if (!e.code.empty()) return e;
  pugi::xml_document res;
  if (!res.load_buffer(xml.data(), xml.size()) || !res.child("CompleteMultipartUploadResult"))
    throw Error(Code::io, fmt::format("S3 CompleteMultipartUpload {}: unexpected answer", where));
  return e;
}

std::string xml_of(const pugi::xml_document& doc) {
  std::ostringstream os;
  doc.save(os, "", pugi::format_raw | pugi::format_no_declaration);
  return os.str();
}

}  // namespace mevbackup::s3
