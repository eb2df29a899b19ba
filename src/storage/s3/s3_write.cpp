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
#include <thread>

#include <fmt/format.h>

#include "mevbackup/storage.hpp"
#include "s3_client.hpp"
#include "s3_storage.hpp"

namespace mevbackup::s3 {

// A random mark of one upload, kept as the object's x-amz-meta-mevb-upload: what a
// writer checks after its upload, and the proof it needs before deleting an object.
std::string upload_nonce() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> g(mu);
  return fmt::format("{:016x}{:016x}", rng(), rng());
}

namespace {

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

constexpr const char* kNonceHeader = "x-amz-meta-mevb-upload";

class S3Sink final : public Sink {
 public:
  // `artifact`: the storage class applies (manifests, records and locks stay STANDARD).
  S3Sink(S3Target& st, std::string key, bool artifact);
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

  S3Target& st_;
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

// The first buffer grows as data comes, so a manifest does not cost a whole part.
S3Sink::S3Sink(S3Target& st, std::string key, bool artifact)
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
  ClaimedSink(Storage& st, const StorageOptions& opts, std::string key, std::string claim)
      : st_(st), opts_(opts), key_(std::move(key)), claim_(std::move(claim)), inner_(st.put(key_)) {}
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
      if (opts_.log)
        opts_.log(2, fmt::format("could not remove the name claim {} (the next prune does): {}", claim, e.what()));
    }
  }
  Storage& st_;
  const StorageOptions& opts_;
  std::string key_, claim_;
  std::unique_ptr<Sink> inner_;
};

}  // namespace

std::unique_ptr<Sink> make_s3_sink(S3Target& st, std::string full_key, bool artifact) {
  return std::make_unique<S3Sink>(st, std::move(full_key), artifact);
}

// Without a compare-and-swap (many S3-compatible servers ignore If-None-Match), a name
// is taken with a claim: the writer stores "<dir>/.<name>.claim-<nonce>", lists the
// claims of that name, and takes it only when its claim is the only one and the name
// is still free; otherwise it withdraws and tries the next name. Of two writers, the
// second to list sees the first's claim, so at most one takes a name (both may back
// off: they then meet again at the next name, or not). A killed writer's claim is an
// object without a manifest: the next prune removes it.
std::unique_ptr<NamedSink> put_claimed(Storage& st, const StorageOptions& opts,
                                       const std::function<std::string(int)>& key_for, int tries) {
  if (tries < 1) throw Error(Code::invalid_argument, "put_first_free: no candidate names");
  const std::string nonce = upload_nonce().substr(0, 16);
  for (int i = 0; i < tries; ++i) {
    std::string key = key_for(i);
    validate_key(key);
    if (st.stat(key)) continue;
    auto slash = key.rfind('/');
    std::string dir = slash == std::string::npos ? "" : key.substr(0, slash + 1);
    std::string claims = dir + "." + key.substr(dir.size()) + ".claim-";
    std::string claim = claims + nonce;
    st.write_small(claim, nonce + "\n");
    bool alone = false;
    try {
      auto seen = st.list(claims);
      alone = seen.size() == 1 && seen[0].key == claim && !st.stat(key);
    } catch (...) {
      st.remove(claim);
      throw;
    }
    if (alone) return std::make_unique<ClaimedSink>(st, opts, key, claim);
    st.remove(claim);
  }
  throw Error(Code::exists, fmt::format("{} and the next {} names are taken in {}", key_for(0), tries - 1, st.describe()));
}

}  // namespace mevbackup::s3
