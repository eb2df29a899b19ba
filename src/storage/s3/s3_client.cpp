#include "s3_client.hpp"

#include <curl/curl.h>
#include <pugixml.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "mevbackup/clock.hpp"
#include "mevbackup/error.hpp"

namespace mevbackup::s3 {

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

std::string lower(std::string s) {
  for (auto& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r' || s.back() == '\n' || s.back() == '\t')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return s.substr(i);
}

void curl_init_once() {
  static const bool done = [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) throw Error(Code::internal, "curl_global_init failed");
    return true;
  }();
  (void)done;
}

bool is_ip_or_localhost(const std::string& host) {
  if (host == "localhost" || host.empty() || host[0] == '[') return true;
  return std::all_of(host.begin(), host.end(), [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
}

// A bucket name that cannot be a DNS label of a TLS certificate's wildcard.
bool needs_path_style(const std::string& bucket) {
  for (char c : bucket)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return true;
  return false;
}

bool transient_curl(CURLcode c) {
  switch (c) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

// The error codes the AWS SDKs' standard retry mode retries: throttling, then transient.
// RequestTimeTooSkewed is not among them here: the SDKs retry it after correcting their
// clock offset, which this client does not do (a host whose clock is off also names and
// dates its backups wrongly, so the error asks for the clock to be fixed).
bool retriable_code(const std::string& code) {
  static const char* codes[] = {"Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
                                "TooManyRequestsException", "ProvisionedThroughputExceededException",
                                "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
                                "LimitExceededException", "RequestThrottled", "SlowDown", "EC2ThrottledException",
                                "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"};
  for (auto* c : codes)
    if (code == c) return true;
  return false;
}

Code code_for(long status, const std::string& s3code) {
  if (status == 403 || s3code == "AccessDenied" || s3code == "InvalidAccessKeyId" ||
      s3code == "SignatureDoesNotMatch" || s3code == "ExpiredToken" || s3code == "InvalidToken")
    return Code::auth;
  if (status == 404 || s3code == "NoSuchKey" || s3code == "NoSuchBucket" || s3code == "NoSuchUpload")
    return Code::not_found;
  if (status == 412 || s3code == "PreconditionFailed") return Code::exists;
  if (status == 501 || s3code == "NotImplemented") return Code::unsupported;
  return Code::io;
}

struct Transfer {
  Response* resp;
  const std::atomic<bool>* cancel;
  // Stall detection: no byte up or down for `stall` fails the attempt (curl's
  // LOW_SPEED_* average over a window of seconds, which makes them late and imprecise).
  std::chrono::milliseconds stall{0};
  std::chrono::steady_clock::time_point last_motion = std::chrono::steady_clock::now();
  curl_off_t last_down = 0, last_up = 0;
  bool stalled = false;
  size_t max_body = 0;
  bool too_long = false;  // the answer outgrew max_body
};

size_t on_header(char* p, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string line(p, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    t->resp->headers.clear();  // a new response (after 100 Continue)
  } else if (auto colon = line.find(':'); colon != std::string::npos) {
    t->resp->headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
  }
  return size * n;
}

size_t on_body(char* p, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  if (t->resp->body.size() + size * n > t->max_body) {
    t->too_long = true;
    return 0;  // curl stops with CURLE_WRITE_ERROR
  }
  t->resp->body.append(p, size * n);
  return size * n;
}

int on_xfer(void* user, curl_off_t, curl_off_t down, curl_off_t, curl_off_t up) {
  auto* t = static_cast<Transfer*>(user);
  if (t->cancel && t->cancel->load()) return 1;
  auto now = std::chrono::steady_clock::now();
  if (down != t->last_down || up != t->last_up) {
    t->last_down = down;
    t->last_up = up;
    t->last_motion = now;
  } else if (t->stall.count() > 0 && now - t->last_motion > t->stall) {
    t->stalled = true;
    return 1;
  }
  return 0;
}

struct SList {
  curl_slist* p = nullptr;
  ~SList() { curl_slist_free_all(p); }
  void add(const std::string& s) {
    curl_slist* n = curl_slist_append(p, s.c_str());
    if (!n) throw std::bad_alloc();
    p = n;
  }
};

}  // namespace

void apply_environment(ClientConfig& c) {
  if (!c.credentials.access_key_id.empty()) c.credential_source = "options";
  if (c.credentials.access_key_id.empty())
    if (auto v = env("AWS_ACCESS_KEY_ID")) {
      c.credentials.access_key_id = v;
      c.credential_source = "environment";
    }
  if (c.credentials.secret_access_key.empty())
    if (auto v = env("AWS_SECRET_ACCESS_KEY")) c.credentials.secret_access_key = v;
  if (c.credentials.session_token.empty())
    if (auto v = env("AWS_SESSION_TOKEN")) c.credentials.session_token = v;
  if (c.region.empty()) {
    if (auto v = env("AWS_REGION")) c.region = v;
    else if (auto d = env("AWS_DEFAULT_REGION")) c.region = d;
  }
  if (c.endpoint.empty())
    if (auto v = env("AWS_ENDPOINT_URL_S3") ? env("AWS_ENDPOINT_URL_S3") : env("AWS_ENDPOINT_URL")) c.endpoint = v;
  if (auto v = env("AWS_MAX_ATTEMPTS")) {
    int n = std::atoi(v);
    if (n >= 1 && n <= 100) c.max_attempts = n;
  }
  // As the aws CLI: a PEM bundle of the CAs to trust instead of the system's.
  if (c.ca_bundle.empty())
    if (auto v = env("AWS_CA_BUNDLE")) c.ca_bundle = v;
}

bool retriable_answer(long status, const std::string& s3code) {
  return status == 500 || status == 502 || status == 503 || status == 504 || status == 429 || retriable_code(s3code);
}

int64_t backoff_ceiling_ms(int n, int64_t base_ms, int64_t cap_ms) {
  double c = static_cast<double>(base_ms) * static_cast<double>(1LL << std::clamp(n - 1, 0, 30));
  return static_cast<int64_t>(std::min<double>(static_cast<double>(cap_ms), c));
}

std::string Response::header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

S3Error parse_error(const std::string& xml) {
  S3Error e;
  if (xml.empty()) return e;
  pugi::xml_document doc;
  if (!doc.load_buffer(xml.data(), xml.size())) return e;
  pugi::xml_node err = doc.child("Error");
  if (!err) return e;
  e.code = err.child_value("Code");
  e.message = err.child_value("Message");
  e.request_time = err.child_value("RequestTime");
  e.server_time = err.child_value("ServerTime");
  if (e.code.empty()) e.code = "UnknownError";
  return e;
}

int64_t parse_iso8601(const std::string& s) {
  auto t = try_parse_time(s);
  if (!t) return 0;
  int64_t secs = std::chrono::duration_cast<std::chrono::seconds>(t->time_since_epoch()).count();
  return secs < 0 ? 0 : secs;
}

Client::Client(ClientConfig cfg, std::string bucket) : cfg_(std::move(cfg)), bucket_(std::move(bucket)) {
  curl_init_once();
  if (bucket_.empty()) throw Error(Code::invalid_argument, "S3 bucket name is empty");
  if (cfg_.region.empty()) cfg_.region = "us-east-1";
  std::string ep = cfg_.endpoint.empty()
                       ? (cfg_.region == "us-east-1" ? std::string("https://s3.amazonaws.com")
                                                     : "https://s3." + cfg_.region + ".amazonaws.com")
                       : cfg_.endpoint;
  auto sep = ep.find("://");
  if (sep == std::string::npos)
    throw Error(Code::invalid_argument, fmt::format("S3 endpoint \"{}\" needs a scheme (https:// or http://)", ep));
  scheme_ = lower(ep.substr(0, sep));
  if (scheme_ != "http" && scheme_ != "https")
    throw Error(Code::invalid_argument, fmt::format("S3 endpoint \"{}\": scheme must be http or https", ep));
  hostport_ = ep.substr(sep + 3);
  if (auto slash = hostport_.find('/'); slash != std::string::npos) hostport_.resize(slash);
  if (hostport_.empty() || hostport_.find('@') != std::string::npos)
    throw Error(Code::invalid_argument, "S3 endpoint must be scheme://host[:port] (no credentials in it)");
  std::string host = hostport_;
  if (host[0] != '[')
    if (auto colon = host.rfind(':'); colon != std::string::npos) host.resize(colon);
  path_style_ = cfg_.force_path_style || is_ip_or_localhost(host) || needs_path_style(bucket_);
  if (cfg_.credentials.access_key_id.empty() || cfg_.credentials.secret_access_key.empty())
    throw Error(Code::auth,
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, give a profile of "
                "~/.aws/credentials (aws configure; AWS_PROFILE or --profile), or pass them as options");
  if (cfg_.unsigned_payload && scheme_ != "https")
    throw Error(Code::invalid_argument, "UNSIGNED-PAYLOAD needs an https endpoint");
  if (scheme_ == "https" && !cfg_.verify_tls && cfg_.log)
    cfg_.log(2, fmt::format("TLS certificate verification is OFF for {}: anyone on the path can read and alter "
                            "the backups",
                            hostport_));
  if (cfg_.max_attempts < 1) cfg_.max_attempts = 1;
}

Client::~Client() {
  for (void* h : handles_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* Client::take_handle() {
  {
    std::lock_guard lk(mu_);
    if (!handles_.empty()) {
      void* h = handles_.back();
      handles_.pop_back();
      curl_easy_reset(static_cast<CURL*>(h));
      return h;
    }
  }
  CURL* h = curl_easy_init();
  if (!h) throw Error(Code::no_memory, "curl_easy_init failed");
  return h;
}

void Client::give_handle(void* h) {
  std::lock_guard lk(mu_);
  handles_.push_back(h);
}

std::string Client::url_of(const Request& req, std::string* host, std::string* canonical_uri) const {
  std::string path;
  std::string h;
  if (path_style_) {
    h = hostport_;
    path = "/" + uri_encode(bucket_, true);
    if (!req.key.empty()) path += "/" + uri_encode(req.key, false);
  } else {
    h = bucket_ + "." + hostport_;
    path = "/" + uri_encode(req.key, false);
  }
  if (host) *host = h;
  if (canonical_uri) *canonical_uri = path;
  std::string url = scheme_ + "://" + h + path;
  if (!req.query.empty()) url += "?" + canonical_query(req.query);
  return url;
}

Response Client::attempt(const Request& req, const std::string& payload_hash, std::string& transport_error,
                         bool& retriable) {
  SigningInput in;
  in.method = req.method;
  std::string host;
  std::string url = url_of(req, &host, &in.canonical_uri);
  in.query = req.query;
  in.headers = req.headers;
  in.headers.emplace_back("host", host);
  in.payload_hash = payload_hash;
  in.amz_date = amz_date(std::time(nullptr));
  in.region = cfg_.region;
  in.service = "s3";
  Pairs headers = sign_s3(std::move(in), cfg_.credentials);

  SList list;
  for (auto& [k, v] : headers) list.add(k + ": " + v);
  list.add("Expect:");  // no 100-continue round trip
  bool has_body = req.method == "PUT" || req.method == "POST";
  if (has_body) {
    bool has_type = false;
    for (auto& [k, v] : req.headers) has_type |= lower(k) == "content-type";
    if (!has_type) list.add("Content-Type: application/octet-stream");
  }

  Response resp;
  Transfer t{&resp, req.cancel};
  t.stall = std::chrono::seconds(cfg_.low_speed_time_s);
  t.max_body = req.max_body;
  char errbuf[CURL_ERROR_SIZE] = "";
  auto* h = static_cast<CURL*>(take_handle());
  struct Give {
    Client* c;
    void* h;
    ~Give() { c->give_handle(h); }
  } give{this, h};
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, list.p);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xfer);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, &t);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, cfg_.connect_timeout_s);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, cfg_.verify_tls ? 1L : 0L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, cfg_.verify_tls ? 2L : 0L);
  if (!cfg_.ca_bundle.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, cfg_.ca_bundle.c_str());
  if (req.method == "HEAD") {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else if (has_body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, req.body.data() ? req.body.data() : "");
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  } else if (req.method != "GET") {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  }
  CURLcode rc = curl_easy_perform(h);
  if (rc != CURLE_OK) {
    if (rc == CURLE_ABORTED_BY_CALLBACK && t.stalled) {
      transport_error = fmt::format("no data moved for {} s: the connection stalled", cfg_.low_speed_time_s);
      retriable = true;
      resp.status = 0;
      return resp;
    }
    if (rc == CURLE_ABORTED_BY_CALLBACK) throw Error(Code::cancelled, "cancelled");
    if (rc == CURLE_WRITE_ERROR && t.too_long)
      throw Error(Code::io, fmt::format("S3 {} {}: the answer is larger than {} bytes; refused", req.method,
                                        req.key.empty() ? "s3://" + bucket_ : describe(req.key), req.max_body));
    transport_error = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE)
      transport_error += cfg_.ca_bundle.empty()
                             ? "; the server's TLS certificate is not trusted (it must name the endpoint's host; a "
                               "private CA goes in --ca-bundle or AWS_CA_BUNDLE)"
                             : "; the server's TLS certificate is not trusted with the CA bundle " + cfg_.ca_bundle +
                                   " (it must name the endpoint's host)";
    retriable = transient_curl(rc);
    resp.status = 0;
    return resp;
  }
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp.status);
  return resp;
}

Response Client::perform(const Request& req) {
  std::string hash = req.payload_sha256;
  if (hash.empty()) hash = cfg_.unsigned_payload && !req.body.empty() ? kUnsignedPayload : sha256_hex(req.body);
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string what = fmt::format("S3 {} {}", req.method, req.key.empty() ? "s3://" + bucket_ : describe(req.key));
  for (int n = 1;; ++n) {
    if (req.cancel && req.cancel->load()) throw Error(Code::cancelled, what + ": cancelled");
    std::string terr;
    bool retriable = false;
    Response r = attempt(req, hash, terr, retriable);
    std::string failure;
    Code code = Code::io;
    if (r.status == 0) {
      code = Code::connection;
      failure = fmt::format("{} ({})", terr, hostport_);
    } else if ((r.status >= 200 && r.status < 300) ||
               std::find(req.accept.begin(), req.accept.end(), r.status) != req.accept.end()) {
      return r;
    } else {
      S3Error e = parse_error(r.body);
      if (e.code.empty() && req.method == "HEAD" && r.status >= 400 && r.status < 500 && r.status != 404) {
        // A HEAD answer has no body, so no S3 error code; ask the same with a one-byte
        // GET to tell the user *why* (SignatureDoesNotMatch, InvalidAccessKeyId, ...).
        Request probe = req;
        probe.method = "GET";
        probe.headers.emplace_back("Range", "bytes=0-0");
        probe.accept.clear();
        std::string perr;
        bool pretriable = false;
        Response pr = attempt(probe, kEmptySha256, perr, pretriable);
        if (pr.status == r.status) e = parse_error(pr.body);
      }
      code = code_for(r.status, e.code);
      retriable = retriable_answer(r.status, e.code);
      failure = e.code.empty() ? fmt::format("HTTP {}", r.status)
                               : fmt::format("HTTP {} {}: {}", r.status, e.code, e.message);
      if (e.code == "RequestTimeTooSkewed") {
        // Signatures carry the time; S3 refuses one more than 15 minutes off its own.
        std::string server = !e.server_time.empty() ? e.server_time : r.header("date");
        char local[32];
        std::time_t now = std::time(nullptr);
        std::tm tm{};
        gmtime_r(&now, &tm);
        std::strftime(local, sizeof local, "%Y-%m-%dT%H:%M:%SZ", &tm);
        failure = fmt::format("the clock of this machine is skewed: local time {}, server time {} (S3 refuses "
                              "requests more than 15 minutes off; fix the clock, e.g. with NTP) ({})",
                              local, server.empty() ? "unknown" : server, failure);
      }
    }
    if (!retriable || n >= cfg_.max_attempts)
      throw Error(code, fmt::format("{}: {}{}", what, failure, n > 1 ? fmt::format(" (after {} attempts)", n) : ""),
                  retriable);
    // Full jitter: random(0, min(cap, base * 2^(n-1))).
    auto ceiling = static_cast<double>(backoff_ceiling_ms(n, cfg_.retry_base_ms, cfg_.retry_cap_ms));
    auto delay = std::chrono::milliseconds(
        static_cast<int64_t>(std::uniform_real_distribution<double>(0, 1)(rng) * ceiling));
    // Not logged: parts retry on worker threads, and the log callback belongs to the
    // caller's thread. The final error says how many attempts were made.
    auto until = std::chrono::steady_clock::now() + delay;
    while (std::chrono::steady_clock::now() < until) {
      if (req.cancel && req.cancel->load()) throw Error(Code::cancelled, what + ": cancelled");
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
          std::chrono::milliseconds(50), until - std::chrono::steady_clock::now()));
    }
  }
}

}  // namespace mevbackup::s3
