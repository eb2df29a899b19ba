// The repository in an S3 bucket. put() streams: parts are uploaded while the backup
// is still being produced, a few at a time, with memory bounded by
// (concurrency x part size) plus the part being filled. Nothing is visible before
// CompleteMultipartUpload succeeds; any failure or cancellation aborts the upload.
//
// Not replacing an existing key: every final write carries If-None-Match: * (AWS S3
// and recent MinIO refuse with 412 when the key exists), and the key is checked with
// HEAD just before completing, for servers that ignore the header. On such servers two
// writers racing for the same key between that HEAD and the completion can still
// replace one another; the repository's names (timestamp + counter) make that a
// concurrent-writer bug, never a normal path.
#include "s3_storage.hpp"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <pugixml.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "mevbackup/s3.hpp"
#include "mevbackup/storage.hpp"
#include "s3_client.hpp"

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

// ---- the parsers of S3's XML answers (reached by tests/fuzz/s3_xml_fuzz.cpp) ----

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

namespace {

class S3StorageImpl;

// MD5 of a whole object, fed as it streams (S3 ETags are MD5s; see S3Sink::verify_stored).
class Md5 {
 public:
  Md5() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || !EVP_DigestInit_ex(ctx_, EVP_md5(), nullptr)) throw Error(Code::internal, "MD5 init failed");
  }
  ~Md5() { EVP_MD_CTX_free(ctx_); }
  Md5(const Md5&) = delete;
  Md5& operator=(const Md5&) = delete;
  void update(const char* p, size_t n) {
    if (!EVP_DigestUpdate(ctx_, p, n)) throw Error(Code::internal, "MD5 failed");
  }
  std::string raw() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!EVP_DigestFinal_ex(ctx_, md, &len)) throw Error(Code::internal, "MD5 failed");
    return std::string(reinterpret_cast<char*>(md), len);
  }

 private:
  EVP_MD_CTX* ctx_;
};

// "\"0123abc...\"" -> 0123abc... (S3 quotes its ETags).
std::string unquote(std::string e) {
  if (e.size() >= 2 && e.front() == '"' && e.back() == '"') e = e.substr(1, e.size() - 2);
  for (auto& c : e)
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  return e;
}

bool is_md5_hex(const std::string& s) {
  return s.size() == 32 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// SSE-KMS and SSE-C objects have ETags that are not the MD5 of their content.
bool etag_not_md5(const Response& r) {
  return r.header("x-amz-server-side-encryption").rfind("aws:kms", 0) == 0 ||
         !r.header("x-amz-server-side-encryption-customer-algorithm").empty();
}

// A random mark of one upload, kept as the object's x-amz-meta-mevb-upload: what a
// writer checks after its upload, and the proof it needs before deleting an object.
std::string upload_nonce() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> g(mu);
  return fmt::format("{:016x}{:016x}", rng(), rng());
}

constexpr const char* kNonceHeader = "x-amz-meta-mevb-upload";

class S3Sink final : public Sink {
 public:
  // `artifact`: the storage class applies (manifests, records and locks stay STANDARD).
  S3Sink(S3StorageImpl& st, std::string key, bool artifact);
  ~S3Sink() override { abort(); }
  void write(Bytes data) override;
  void commit() override;
  void abort() noexcept override;

 private:
  struct Job {
    int number;
    std::string data;
  };
  void check_failed();
  void ensure_absent();
  void start_upload();
  void submit_part();
  void worker();
  Pairs object_headers() const;
  bool etags_are_md5(const Response& r) const;
  void verify_stored(const Response* put_answer, const std::string& whole_md5_hex, int parts);

  S3StorageImpl& st_;
  Client& client_;
  std::string key_;  // full key in the bucket
  bool artifact_;
  std::string nonce_ = upload_nonce();
  std::string buf_;
  int next_part_ = 1;
  std::string upload_id_;
  bool done_ = false;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  std::map<int, std::string> etags_;
  std::map<int, std::string> part_md5_;  // raw MD5 of each part sent
  Md5 md5_;                              // of everything written
  uint64_t inflight_bytes_ = 0;
  uint64_t total_bytes_ = 0;  // handed to the parts so far
  int inflight_ = 0;
  std::exception_ptr error_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> workers_;
};

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

class S3StorageImpl final : public Storage {
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
    apply_environment(c);
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
    return std::make_unique<S3Sink>(*this, full(key), true);
  }

  std::unique_ptr<NamedSink> put_first_free(const std::function<std::string(int)>& key_for, int tries) override;

 protected:
  std::unique_ptr<Sink> put_small(const std::string& key) override {
    validate_key(key);
    return std::make_unique<S3Sink>(*this, full(key), false);
  }

 public:

  std::unique_ptr<Source> get(const std::string& key) override {
    validate_key(key);
    Response r = head(full(key));
    if (r.status == 404) throw Error(Code::not_found, fmt::format("{}: no such object", client_->describe(full(key))));
    uint64_t size = std::strtoull(r.header("content-length").c_str(), nullptr, 10);
    return std::make_unique<S3Source>(*client_, full(key), size, r.header("etag"));
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

  Response head(const std::string& full_key) {
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

  Client& client() { return *client_; }
  const std::string& prefix() const { return prefix_; }
  const StorageOptions& opts() const { return opts_; }
  uint64_t part_size() const { return part_size_; }
  int concurrency() const { return concurrency_; }

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

// The first buffer grows as data comes, so a manifest does not cost a whole part.
S3Sink::S3Sink(S3StorageImpl& st, std::string key, bool artifact)
    : st_(st), client_(st.client()), key_(std::move(key)), artifact_(artifact) {}

Pairs S3Sink::object_headers() const {
  Pairs h;
  const auto& o = st_.opts();
  if (artifact_ && !o.storage_class.empty()) h.emplace_back("x-amz-storage-class", o.storage_class);
  h.emplace_back(kNonceHeader, nonce_);
  if (!o.sse.empty()) h.emplace_back("x-amz-server-side-encryption", o.sse);
  if (!o.sse_kms_key_id.empty()) h.emplace_back("x-amz-server-side-encryption-aws-kms-key-id", o.sse_kms_key_id);
  return h;
}

void S3Sink::check_failed() {
  std::lock_guard lk(mu_);
  if (error_) std::rethrow_exception(error_);
}

void S3Sink::ensure_absent() {
  if (st_.head(key_).status != 404)
    throw Error(Code::exists, fmt::format("{} already exists; it was not overwritten", client_.describe(key_)));
}

void S3Sink::start_upload() {
  ensure_absent();  // fail before uploading gigabytes, not after
  Request r;
  r.method = "POST";
  r.key = key_;
  r.query = {{"uploads", ""}};
  r.headers = object_headers();
  r.cancel = &stop_;
  Response resp = client_.perform(r);
  upload_id_ = parse_upload_id(resp.body);
  if (upload_id_.empty())
    throw Error(Code::io, fmt::format("S3 CreateMultipartUpload {}: no UploadId in the answer", client_.describe(key_)));
  for (int i = 0; i < st_.concurrency(); ++i) workers_.emplace_back([this] { worker(); });
}

void S3Sink::submit_part() {
  if (next_part_ > kMaxParts)
    throw Error(Code::invalid_argument, fmt::format("{}: more than {} parts", client_.describe(key_), kMaxParts));
  if (upload_id_.empty()) start_upload();
  uint64_t budget = st_.part_size() * static_cast<uint64_t>(st_.concurrency());
  std::unique_lock lk(mu_);
  // Bounded memory: wait while what is queued or in flight would exceed the budget.
  cv_.wait(lk, [&] { return error_ || inflight_ == 0 || inflight_bytes_ + buf_.size() <= budget; });
  if (error_) std::rethrow_exception(error_);
  inflight_bytes_ += buf_.size();
  total_bytes_ += buf_.size();
  ++inflight_;
  queue_.push_back(Job{next_part_++, std::move(buf_)});
  lk.unlock();
  cv_.notify_all();
  buf_ = std::string();
  buf_.reserve(part_size_for(next_part_, st_.part_size()));
}

void S3Sink::worker() {
  for (;;) {
    Job job;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (stop_ || error_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    std::string etag, md5;
    std::exception_ptr err;
    try {
      Request r;
      r.method = "PUT";
      r.key = key_;
      r.query = {{"partNumber", std::to_string(job.number)}, {"uploadId", upload_id_}};
      r.body = job.data;
      md5 = md5_raw(job.data);
      r.headers.emplace_back("Content-MD5", base64(md5));  // S3 checks each part
      r.cancel = &stop_;
      Response resp = client_.perform(r);
      etag = resp.header("etag");
      if (etag.empty())
        throw Error(Code::io, fmt::format("S3 UploadPart {} part {}: no ETag", client_.describe(key_), job.number));
      // A server that ignores Content-MD5 (or a proxy that damaged the part) shows it
      // in the ETag: the MD5 of what it stored.
      if (etags_are_md5(resp) && is_md5_hex(unquote(etag)) && unquote(etag) != to_hex(md5))
        throw Error(Code::corrupt,
                    fmt::format("S3 UploadPart {} part {}: the server stored other bytes than the {} sent (its ETag "
                                "{} is not their MD5 {}); the upload is abandoned",
                                client_.describe(key_), job.number, job.data.size(), etag, to_hex(md5)));
    } catch (...) {
      err = std::current_exception();
    }
    {
      std::lock_guard lk(mu_);
      if (err && !error_) error_ = err;
      if (!err) {
        etags_[job.number] = etag;
        part_md5_[job.number] = md5;
      }
      inflight_bytes_ -= job.data.size();
      --inflight_;
    }
    cv_.notify_all();
  }
}

void S3Sink::write(Bytes data) {
  if (done_) throw Error(Code::internal, "write to a finished S3 sink");
  check_failed();
  const char* p = reinterpret_cast<const char*>(data.data());
  size_t left = data.size();
  md5_.update(p, left);
  while (left) {
    uint64_t cap = part_size_for(next_part_, st_.part_size());
    size_t n = static_cast<size_t>(std::min<uint64_t>(left, cap - buf_.size()));
    buf_.append(p, n);
    p += n;
    left -= n;
    if (buf_.size() == cap) submit_part();
  }
}

void S3Sink::commit() {
  if (done_) throw Error(Code::internal, "commit of a finished S3 sink");
  check_failed();
  if (upload_id_.empty()) {
    // Small object: one PUT.
    ensure_absent();
    std::string md5 = md5_.raw();
    Request r;
    r.method = "PUT";
    r.key = key_;
    r.body = buf_;
    r.headers = object_headers();
    r.headers.emplace_back("Content-MD5", base64(md5));
    r.headers.emplace_back("If-None-Match", "*");
    Response resp;
    try {
      resp = client_.perform(r);
    } catch (const Error& e) {
      if (e.code() == Code::exists)
        throw Error(Code::exists, fmt::format("{} already exists; it was not overwritten", client_.describe(key_)));
      throw;
    }
    total_bytes_ = buf_.size();
    verify_stored(&resp, to_hex(md5), 0);
    done_ = true;
    buf_ = std::string();
    return;
  }
  if (!buf_.empty()) submit_part();
  {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return error_ || inflight_ == 0; });
    if (error_) std::rethrow_exception(error_);
  }
  ensure_absent();
  pugi::xml_document doc;
  auto root = doc.append_child("CompleteMultipartUpload");
  root.append_attribute("xmlns") = "http://s3.amazonaws.com/doc/2006-03-01/";
  for (auto& [n, etag] : etags_) {
    auto part = root.append_child("Part");
    part.append_child("PartNumber").text().set(n);
    part.append_child("ETag").text().set(etag.c_str());
  }
  std::string body = xml_of(doc);
  Request r;
  r.method = "POST";
  r.key = key_;
  r.query = {{"uploadId", upload_id_}};
  r.body = body;
  r.headers.emplace_back("Content-Type", "application/xml");
  r.headers.emplace_back("If-None-Match", "*");
  // CompleteMultipartUpload can answer 200 and report an error in the body, even after
  // it has started sending; such an answer is a failure, retried when it is transient.
  for (int attempt = 1;; ++attempt) {
    Response resp;
    try {
      resp = client_.perform(r);
    } catch (const Error& e) {
      if (e.code() == Code::exists)
        throw Error(Code::exists, fmt::format("{} already exists; it was not overwritten", client_.describe(key_)));
      // A retried completion whose first attempt succeeded (the answer was lost) finds
      // the upload gone; the object is then there with exactly our bytes (it was absent
      // just before).
      if (e.code() == Code::not_found) {
        Response h = st_.head(key_);
        if (h.status != 404 && std::strtoull(h.header("content-length").c_str(), nullptr, 10) == total_bytes_ &&
            h.header(kNonceHeader) == nonce_)
          break;
      }
      throw;
    }
    S3Error e = parse_complete_result(resp.body, client_.describe(key_));
    if (e.code.empty()) break;
    bool transient = e.code == "InternalError" || e.code == "SlowDown" || e.code == "ServiceUnavailable";
    if (!transient || attempt >= client_.config().max_attempts)
      throw Error(Code::io, fmt::format("S3 CompleteMultipartUpload {}: {}: {}", client_.describe(key_), e.code,
                                        e.message),
                  transient);
  }
  upload_id_.clear();  // completed: nothing to abort
  abort();             // joins the workers
  verify_stored(nullptr, to_hex(md5_.raw()), static_cast<int>(part_md5_.size()));
  done_ = true;
}

bool S3Sink::etags_are_md5(const Response& r) const {
  return st_.opts().sse.rfind("aws:kms", 0) != 0 && !etag_not_md5(r);
}

// What the server acknowledged is checked before anyone can take it for a backup: a
// HEAD must show exactly the bytes sent (length), and an ETag that is an MD5 must be
// the right one (the content's MD5 for one PUT, or servers like s3rver; for a
// multipart object AWS's "MD5 of the parts' MD5s-N"). A mismatch means the server kept
// a short or damaged object: it is deleted (it did not exist before: ensure_absent)
// and the write fails with Code::corrupt.
void S3Sink::verify_stored(const Response* put_answer, const std::string& whole_md5_hex, int parts) {
  std::string problem;
  if (put_answer) {
    std::string etag = unquote(put_answer->header("etag"));
    if (etags_are_md5(*put_answer) && is_md5_hex(etag) && etag != whole_md5_hex)
      problem = fmt::format("its ETag {} is not the MD5 of the {} bytes sent ({})", etag, total_bytes_, whole_md5_hex);
  }
  // The HEAD is asked up to three times: a server that is only eventually consistent
  // (s3rver answers a PUT before its file is written; some S3-compatible stores lag
  // behind their own acknowledgements) is given a moment before its answer counts.
  std::string multi;  // AWS's multipart ETag: MD5 of the parts' MD5s, "-" and their count
  if (parts > 0) {
    std::string all;
    for (auto& [n, m] : part_md5_) all += m;
    multi = fmt::format("{}-{}", to_hex(md5_raw(all)), parts);
  }
  bool ours = false;  // the object last seen carries this upload's mark
  for (int attempt = 1; problem.empty(); ++attempt) {
    Response h = st_.head(key_);
    std::string len = h.header("content-length");
    std::string etag = unquote(h.header("etag"));
    std::string mark = h.header(kNonceHeader);
    ours = h.status != 404 && mark == nonce_;
    // A server that ignores If-None-Match let another writer replace this upload: the
    // object is theirs now, and not ours to delete.
    if (h.status != 404 && !mark.empty() && mark != nonce_)
      throw Error(Code::exists, fmt::format("{} was written by another upload at the same time (its {} is not this "
                                            "upload's); it was left alone and this upload is lost",
                                            client_.describe(key_), kNonceHeader));
    std::string seen;
    if (h.status == 404)
      seen = "the server acknowledged the upload but has no such object";
    else if (len.empty() || std::strtoull(len.c_str(), nullptr, 10) != total_bytes_)
      seen = fmt::format("it holds {} bytes, {} were sent", len.empty() ? "an unknown number of" : len, total_bytes_);
    else if (etags_are_md5(h) && is_md5_hex(etag) && etag != whole_md5_hex)
      seen = fmt::format("its ETag {} is not the MD5 of the bytes sent ({})", etag, whole_md5_hex);
    else if (etags_are_md5(h) && parts > 0 && etag.find('-') != std::string::npos && etag != multi)
      seen = fmt::format("its ETag {} differs from the one of the parts sent ({})", etag, multi);
    if (seen.empty()) return;
    if (attempt < 3) {
      if (st_.opts().log)
        st_.opts().log(1, fmt::format("{}: the server does not show the upload yet ({}); asking again in {} ms",
                                      client_.describe(key_), seen, 200 * attempt));
      std::this_thread::sleep_for(std::chrono::milliseconds(200 * attempt));
      continue;
    }
    if (h.status == 404) throw Error(Code::corrupt, fmt::format("{}: {}", client_.describe(key_), seen));
    problem = seen;
  }
  // Here the server kept something other than what was sent. Deleted only when it
  // carries this upload's mark: anything else may be another writer's.
  std::string fate = "it was deleted";
  if (!ours) {  // the PUT's answer showed the damage: whose object is there?
    try {
      Response h = st_.head(key_);
      ours = h.status != 404 && h.header(kNonceHeader) == nonce_;
    } catch (const std::exception&) {
    }
  }
  if (!ours) {
    fate = fmt::format("it was left in place: it does not carry this upload's {}, so it may be another writer's",
                       kNonceHeader);
  } else {
    try {
      Request r;
      r.method = "DELETE";
      r.key = key_;
      r.accept = {404};
      client_.perform(r);
    } catch (const std::exception& e) {
      fate = fmt::format("deleting it failed too ({}): delete it by hand", e.what());
    }
  }
  throw Error(Code::corrupt, fmt::format("{}: the server kept other bytes than were uploaded: {}; {}",
                                         client_.describe(key_), problem, fate));
}

void S3Sink::abort() noexcept {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
  workers_.clear();
  if (!upload_id_.empty()) {
    std::string id = std::move(upload_id_);
    upload_id_.clear();
    try {
      Request r;
      r.method = "DELETE";
      r.key = key_;
      r.query = {{"uploadId", id}};
      r.accept = {404};
      client_.perform(r);
    } catch (const std::exception& e) {
      if (st_.opts().log)
        st_.opts().log(2, fmt::format("could not abort the multipart upload of {} (a bucket lifecycle rule "
                                      "AbortIncompleteMultipartUpload cleans it up): {}",
                                      client_.describe(key_), e.what()));
    }
  }
  buf_ = std::string();
}

// put_first_free's sink on S3: the upload under a claimed key; the claim goes when
// the upload is done, committed or not.
class ClaimedSink final : public NamedSink {
 public:
  ClaimedSink(S3StorageImpl& st, std::string key, std::string claim)
      : st_(st), key_(std::move(key)), claim_(std::move(claim)), inner_(st.put(key_)) {}
  ~ClaimedSink() override { release(); }
  void write(Bytes data) override { inner_->write(data); }
  void commit() override {
    inner_->commit();
    release();
  }
  void abort() noexcept override {
    inner_->abort();
    release();
  }
  std::string key() const override { return key_; }

 private:
  void release() noexcept {
    if (claim_.empty()) return;
    std::string claim = std::move(claim_);
    claim_.clear();
    try {
      st_.remove(claim);
    } catch (const std::exception& e) {
      if (st_.opts().log)
        st_.opts().log(2, fmt::format("could not remove the name claim {} (the next prune does): {}", claim, e.what()));
    }
  }
  S3StorageImpl& st_;
  std::string key_, claim_;
  std::unique_ptr<Sink> inner_;
};

// Without a compare-and-swap (many S3-compatible servers ignore If-None-Match), a name
// is taken with a claim: the writer stores "<dir>/.<name>.claim-<nonce>", lists the
// claims of that name, and takes it only when its claim is the only one and the name
// is still free; otherwise it withdraws and tries the next name. Of two writers, the
// second to list sees the first's claim, so at most one takes a name (both may back
// off: they then meet again at the next name, or not). A killed writer's claim is an
// object without a manifest: the next prune removes it.
std::unique_ptr<NamedSink> S3StorageImpl::put_first_free(const std::function<std::string(int)>& key_for, int tries) {
  if (tries < 1) throw Error(Code::invalid_argument, "put_first_free: no candidate names");
  const std::string nonce = upload_nonce().substr(0, 16);
  for (int i = 0; i < tries; ++i) {
    std::string key = key_for(i);
    validate_key(key);
    if (stat(key)) continue;
    auto slash = key.rfind('/');
    std::string dir = slash == std::string::npos ? "" : key.substr(0, slash + 1);
    std::string claims = dir + "." + key.substr(dir.size()) + ".claim-";
    std::string claim = claims + nonce;
    write_small(claim, nonce + "\n");
    bool alone = false;
    try {
      auto seen = list(claims);
      alone = seen.size() == 1 && seen[0].key == claim && !stat(key);
    } catch (...) {
      remove(claim);
      throw;
    }
    if (alone) return std::make_unique<ClaimedSink>(*this, key, claim);
    remove(claim);
  }
  throw Error(Code::exists, fmt::format("{} and the next {} names are taken in {}", key_for(0), tries - 1, describe()));
}

}  // namespace

}  // namespace mevbackup::s3

namespace mevbackup {

std::string lifecycle_rule_xml(const std::string& prefix, const LifecycleRule& rule) {
  auto bad = [](const std::string& why) { return Error(Code::invalid_argument, "lifecycle rule: " + why); };
  if (rule.transitions.empty() && rule.expire_days <= 0) throw bad("give at least one transition or an expiration");
  int last = 0;
  for (auto& t : rule.transitions) {
    if (t.days <= last) throw bad(fmt::format("transition days must be positive and increasing ({} after {})", t.days, last));
    if (t.storage_class.empty() ||
        t.storage_class.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ_") != std::string::npos)
      throw bad(fmt::format("\"{}\" is not a storage class", t.storage_class));
    last = t.days;
  }
  if (rule.expire_days < 0 || (rule.expire_days > 0 && rule.expire_days <= last))
    throw bad(fmt::format("expiration after {} days must come after the last transition ({} days)", rule.expire_days,
                          last));
  pugi::xml_document doc;
  auto r = doc.append_child("Rule");
  std::string filter_prefix = prefix.empty() ? "" : prefix + "/";
  r.append_child("ID").text().set((rule.id.empty() ? "mevbackup " + (prefix.empty() ? "*" : prefix) : rule.id).c_str());
  r.append_child("Filter").append_child("Prefix").text().set(filter_prefix.c_str());
  r.append_child("Status").text().set("Enabled");
  for (auto& t : rule.transitions) {
    auto x = r.append_child("Transition");
    x.append_child("Days").text().set(t.days);
    x.append_child("StorageClass").text().set(t.storage_class.c_str());
  }
  if (rule.expire_days > 0) r.append_child("Expiration").append_child("Days").text().set(rule.expire_days);
  if (rule.abort_incomplete_days > 0)
    r.append_child("AbortIncompleteMultipartUpload").append_child("DaysAfterInitiation").text().set(
        rule.abort_incomplete_days);
  return s3::xml_of(doc);
}

void put_bucket_lifecycle(Storage& storage, const LifecycleRule& rule) {
  auto* st = dynamic_cast<s3::S3StorageImpl*>(&storage);
  if (!st)
    throw Error(Code::unsupported, fmt::format("{} is not S3 storage: lifecycle rules are an S3 feature", storage.describe()));
  std::string prefix = st->prefix();
  std::string rule_xml = lifecycle_rule_xml(prefix, rule);
  s3::Client& c = st->client();
  auto unsupported = [&](const Error& e) {
    return Error(Code::unsupported, fmt::format("the server of {} does not support bucket lifecycle rules ({})",
                                                storage.describe(), e.what()));
  };
  // Read what is there, so that other rules of the bucket survive.
  pugi::xml_document doc;
  try {
    s3::Request get;
    get.method = "GET";
    get.query = {{"lifecycle", ""}};
    get.accept = {404};
    s3::Response resp = c.perform(get);
    if (resp.status == 200 && !doc.load_buffer(resp.body.data(), resp.body.size()))
      throw Error(Code::io, fmt::format("lifecycle configuration of {}: malformed XML", storage.describe()));
  } catch (const Error& e) {
    if (e.code() == Code::unsupported) throw unsupported(e);
    throw;
  }
  pugi::xml_node conf = doc.child("LifecycleConfiguration");
  if (!conf) {
    doc.reset();
    conf = doc.append_child("LifecycleConfiguration");
    conf.append_attribute("xmlns") = "http://s3.amazonaws.com/doc/2006-03-01/";
  }
  pugi::xml_document mine;
  mine.load_string(rule_xml.c_str());
  std::string id = mine.child("Rule").child_value("ID");
  for (pugi::xml_node r = conf.child("Rule"); r;) {
    pugi::xml_node next = r.next_sibling("Rule");
    if (id == r.child_value("ID")) conf.remove_child(r);
    r = next;
  }
  conf.append_copy(mine.child("Rule"));
  std::string body = s3::xml_of(doc);
  s3::Request put;
  put.method = "PUT";
  put.query = {{"lifecycle", ""}};
  put.body = body;
  put.headers = {{"Content-Type", "application/xml"}, {"Content-MD5", s3::md5_base64(body)}};
  try {
    c.perform(put);
  } catch (const Error& e) {
    if (e.code() == Code::unsupported) throw unsupported(e);
    throw;
  }
}

std::unique_ptr<Storage> make_s3_storage(const std::string& url, const StorageOptions& opts) {
  return std::make_unique<s3::S3StorageImpl>(url, opts);
}

}  // namespace mevbackup
