// The repository in an S3 bucket: the Storage over the client (s3_client.cpp), with
// listing, stat and removal here and the other roles in their own files: writing
// (s3_write.cpp), reading (s3_read.cpp), the XML answers (s3_xml.cpp), lifecycle rules
// (s3_lifecycle.cpp), signing (sigv4.cpp).
#include <curl/curl.h>
#include <pugixml.hpp>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>

#include <fmt/format.h>

#include "mevbackup/storage.hpp"
#include "s3_client.hpp"
#include "s3_storage.hpp"
#include "mevbackup/s3.hpp"

namespace mevbackup::s3 {

uint64_t part_size_for(int n, uint64_t base) {
  int doublings = std::min((n - 1) / 900, 20);
  uint64_t size = base;
  for (int i = 0; i < doublings && size < kMaxPartSize; ++i) size *= 2;
  return std::min(size, kMaxPartSize);
}

S3Url parse_s3_url(const std::string& url) {
  if (url.rfind("s3://", 0) != 0) throw Error(Code::invalid_argument, fmt::format("\"{}\" is not an s3:// URL", url));
  std::string rest = url.substr(5);
  S3Url u;
  auto slash = rest.find('/');
  u.bucket = rest.substr(0, slash);
  if (slash != std::string::npos) u.prefix = rest.substr(slash + 1);
  while (!u.prefix.empty() && u.prefix.back() == '/') u.prefix.pop_back();
  if (u.bucket.empty()) throw Error(Code::invalid_argument, fmt::format("\"{}\": the bucket name is missing", url));
  if (u.bucket.find_first_of("@:?#") != std::string::npos)
    throw Error(Code::invalid_argument, fmt::format("\"{}\": invalid bucket name", url));
  if (!u.prefix.empty()) validate_key(u.prefix);
  return u;
}

namespace {

class S3StorageImpl final : public Storage, public S3Target {
 public:
  S3StorageImpl(const std::string& url, const StorageOptions& o) : opts_(o) {
    S3Url u = parse_s3_url(url);
    prefix_ = u.prefix;
    ClientConfig c;
    c.endpoint = o.endpoint_url;
    c.region = o.region;
    c.credentials = {o.access_key_id, o.secret_access_key, o.session_token};
    c.force_path_style = o.path_style;
    c.ca_bundle = o.ca_bundle;
    c.verify_tls = !o.no_verify_tls;
    c.unsigned_payload = o.unsigned_payload;
    c.log = o.log;
    c.profile = o.profile;
    const bool keys_from_options = !c.credentials.access_key_id.empty();
    apply_environment(c);
    apply_shared_files(c, keys_from_options);
    if (o.max_attempts > 0) c.max_attempts = o.max_attempts;
    if (o.retry_base_ms < 0 || o.retry_base_ms > 60000)
      throw Error(Code::invalid_argument, fmt::format("S3 retry base {} ms is outside 1..60000", o.retry_base_ms));
    if (o.retry_base_ms > 0) c.retry_base_ms = o.retry_base_ms;
    // Half the stall timeout: a stalled request is retried before the run as a whole
    // counts as stalled.
    if (o.stall_timeout_seconds > 0) c.low_speed_time_s = std::max<long>(1, static_cast<long>(o.stall_timeout_seconds / 2));
    client_ = std::make_unique<Client>(std::move(c), u.bucket);
    part_size_ = o.part_size ? o.part_size : kDefaultPartSize;
    if (part_size_ < kMinPartSize || part_size_ > kMaxPartSize)
      throw Error(Code::invalid_argument, fmt::format("S3 part size {} is outside 5 MiB..5 GiB", part_size_));
    concurrency_ = o.concurrency > 0 ? std::min(o.concurrency, 64) : 4;
  }

  std::unique_ptr<Sink> put(const std::string& key) override {
    validate_key(key);
    return make_s3_sink(*this, full(key), true);
  }

  std::unique_ptr<NamedSink> put_first_free(const std::function<std::string(int)>& key_for, int tries) override {
    return put_claimed(*this, opts_, key_for, tries);
  }

 protected:
  std::unique_ptr<Sink> put_small(const std::string& key) override {
    validate_key(key);
    return make_s3_sink(*this, full(key), false);
  }

 public:

  std::unique_ptr<Source> get(const std::string& key) override {
    validate_key(key);
    Response r = head(full(key));
    if (r.status == 404) throw Error(Code::not_found, fmt::format("{}: no such object", client_->describe(full(key))));
    uint64_t size = std::strtoull(r.header("content-length").c_str(), nullptr, 10);
    return make_s3_source(*client_, full(key), size, r.header("etag"));
  }

  std::vector<ObjectInfo> list(const std::string& prefix) override {
    std::vector<ObjectInfo> out;
    std::string root = prefix_.empty() ? "" : prefix_ + "/";
    std::string token;
    for (int page = 1;; ++page) {
      Request r;
      r.method = "GET";
      r.query = {{"list-type", "2"}, {"prefix", root + prefix}};
      if (!token.empty()) r.query.emplace_back("continuation-token", token);
      Response resp;
      try {
        resp = client_->perform(r);
      } catch (const Error& e) {
        // A listing is all or nothing: a partial one must not look like fewer backups.
        throw Error(e.code(), fmt::format("S3 listing of {} failed at page {}: {}", describe(), page, e.what()),
                    e.retriable());
      }
      ListPage lp = parse_list_page(resp.body, root, fmt::format("{} (page {})", describe(), page));
      for (auto& o : lp.objects)
        if (usable_key(o.key)) out.push_back(std::move(o));
      if (!lp.truncated) break;
      token = lp.next_token;
      if (token.empty()) throw Error(Code::io, fmt::format("S3 listing of {}: truncated without a token", describe()));
    }
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.key < b.key; });
    return out;
  }

  // ListMultipartUploads: what a killed run left. Their parts cost storage until they
  // are aborted. A server without the call (s3rver answers NotImplemented) has nothing
  // to list here: a warning says so, and the lifecycle rule is the remedy.
  std::vector<ObjectInfo> list_unfinished(const std::string& prefix) override {
    std::vector<ObjectInfo> out;
    std::string root = prefix_.empty() ? "" : prefix_ + "/";
    std::string key_marker, id_marker;
    for (int page = 1;; ++page) {
      Request r;
      r.method = "GET";
      r.query = {{"uploads", ""}, {"prefix", root + prefix}};
      if (!key_marker.empty()) {
        r.query.emplace_back("key-marker", key_marker);
        r.query.emplace_back("upload-id-marker", id_marker);
      }
      Response resp;
      try {
        resp = client_->perform(r);
      } catch (const Error& e) {
        if (e.code() == Code::unsupported && page == 1) {
          if (opts_.log && !warned_no_upload_listing_.exchange(true))
            opts_.log(2,
                      fmt::format("the server of {} cannot list multipart uploads ({}): uploads left by killed runs "
                                  "are not aborted here; `mevbackup lifecycle --abort-incomplete DAYS` has the "
                                  "server do it",
                                  describe(), e.what()));
          return {};
        }
        throw Error(e.code(),
                    fmt::format("S3 listing of the multipart uploads of {} failed at page {}: {}", describe(), page,
                                e.what()),
                    e.retriable());
      }
      UploadsPage up = parse_uploads_page(resp.body, root, fmt::format("{} (page {})", describe(), page));
      for (auto& o : up.uploads)
        if (usable_key(o.key)) out.push_back(std::move(o));
      if (!up.truncated) break;
      if (up.next_key_marker == key_marker && up.next_upload_id_marker == id_marker)
        throw Error(Code::io, fmt::format("S3 listing of the multipart uploads of {}: page {} repeats its markers",
                                          describe(), page));
      key_marker = up.next_key_marker;
      id_marker = up.next_upload_id_marker;
    }
    std::sort(out.begin(), out.end(),
              [](auto& a, auto& b) { return std::tie(a.key, a.upload_id) < std::tie(b.key, b.upload_id); });
    return out;
  }

  void remove_unfinished(const ObjectInfo& leftover) override {
    if (leftover.upload_id.empty()) return remove(leftover.key);
    validate_key(leftover.key);
    Request r;
    r.method = "DELETE";
    r.key = full(leftover.key);
    r.query = {{"uploadId", leftover.upload_id}};
    r.accept = {404};  // NoSuchUpload: already aborted or completed
    client_->perform(r);
  }

  std::optional<ObjectInfo> stat(const std::string& key) override {
    validate_key(key);
    Response r = head(full(key));
    if (r.status == 404) return std::nullopt;
    int64_t mtime = 0;
    if (auto lm = r.header("last-modified"); !lm.empty()) mtime = curl_getdate(lm.c_str(), nullptr);
    return ObjectInfo{key, std::strtoull(r.header("content-length").c_str(), nullptr, 10), std::max<int64_t>(mtime, 0), {}};
  }

  void remove(const std::string& key) override {
    validate_key(key);
    Request r;
    r.method = "DELETE";
    r.key = full(key);
    r.accept = {404};
    client_->perform(r);
  }

  // DeleteObjects, 1000 keys a request (the S3 maximum), quiet: only failures answer.
  std::vector<RemoveFailure> remove_many(const std::vector<std::string>& keys) override {
    std::vector<RemoveFailure> failed;
    for (size_t start = 0; start < keys.size(); start += 1000) {
      size_t end = std::min(keys.size(), start + 1000);
      pugi::xml_document doc;
      pugi::xml_node del = doc.append_child("Delete");
      del.append_attribute("xmlns") = "http://s3.amazonaws.com/doc/2006-03-01/";
      del.append_child("Quiet").text().set("true");
      std::vector<std::string> batch;
      for (size_t i = start; i < end; ++i) {
        try {
          validate_key(keys[i]);
        } catch (const Error& e) {
          failed.push_back({keys[i], e.what()});
          continue;
        }
        batch.push_back(keys[i]);
        del.append_child("Object").append_child("Key").text().set(full(keys[i]).c_str());
      }
      if (batch.empty()) continue;
      std::string body = s3::xml_of(doc);
      Request r;
      r.method = "POST";
      r.query = {{"delete", ""}};
      r.body = body;
      r.headers = {{"Content-Type", "application/xml"}, {"Content-MD5", s3::md5_base64(body)}};
      try {
        Response resp = client_->perform(r);
        for (auto& f : parse_delete_result(resp.body, prefix_.empty() ? "" : prefix_ + "/", describe()))
          failed.push_back(std::move(f));
      } catch (const Error& e) {
        for (auto& k : batch) failed.push_back({k, e.what()});
      }
    }
    return failed;
  }

  std::string describe() const override {
    return "s3://" + client_->bucket() + (prefix_.empty() ? "" : "/" + prefix_);
  }

  Response head(const std::string& full_key) override {
    Request r;
    r.method = "HEAD";
    r.key = full_key;
    r.accept = {404};
    return client_->perform(r);
  }

  std::string full(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "/" + key; }

  // A listed key the repository can use. Others (a folder marker "config/" as consoles
  // create, "a//b") are skipped with a warning, once per key, so that they stop nothing.
  bool usable_key(const std::string& key) {
    try {
      validate_key(key);
      return true;
    } catch (const Error& e) {
      std::lock_guard<std::mutex> g(warned_mu_);
      if (opts_.log && warned_keys_.insert(key).second)
        opts_.log(2, fmt::format("ignoring the object \"{}\" in {}: {}", key, describe(), e.what()));
      return false;
    }
  }

  Client& client() override { return *client_; }
  const std::string& prefix() const override { return prefix_; }
  const StorageOptions& opts() const override { return opts_; }
  uint64_t part_size() const override { return part_size_; }
  int concurrency() const override { return concurrency_; }

 private:
  StorageOptions opts_;
  std::string prefix_;
  std::unique_ptr<Client> client_;
  uint64_t part_size_;
  int concurrency_;
  std::atomic<bool> warned_no_upload_listing_{false};  // said once per storage
  std::mutex warned_mu_;
  std::set<std::string> warned_keys_;
};

}  // namespace

}  // namespace mevbackup::s3

namespace mevbackup {

std::unique_ptr<Storage> make_s3_storage(const std::string& url, const StorageOptions& opts) {
  return std::make_unique<s3::S3StorageImpl>(url, opts);
}

}  // namespace mevbackup

