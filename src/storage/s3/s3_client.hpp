// A small S3 client on libcurl: SigV4-signed requests, path-style or virtual-hosted
// addressing, TLS verification, and retries the way the AWS SDKs' "standard" mode does
// (throttling, 5xx, timeouts and connection resets retried with capped exponential
// backoff and full jitter; other 4xx fail at once with S3's error code and message).
//
// Thread safety: one S3Client may serve requests from several threads at once.
// Errors: mevbackup::Error; messages name the method, bucket and key, never a secret.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "sigv4.hpp"

namespace mevbackup::s3 {

struct ClientConfig {
  std::string endpoint;          // "https://s3.eu-west-1.amazonaws.com", "http://127.0.0.1:9000"; empty: AWS
  std::string region;            // empty: us-east-1
  Credentials credentials;
  bool force_path_style = false; // path style is automatic for IP addresses and localhost
  std::string ca_bundle;         // PEM file; empty: the system's
  bool verify_tls = true;
  bool unsigned_payload = false; // UNSIGNED-PAYLOAD instead of SHA-256 bodies (refused without TLS)
  int max_attempts = 3;          // AWS standard mode; AWS_MAX_ATTEMPTS overrides
  int64_t retry_base_ms = 1000;  // backoff = random(0,1) * min(cap, base * 2^(attempt-1));
  int64_t retry_cap_ms = 20000;  //   StorageOptions::retry_base_ms overrides the base (tests)
  long connect_timeout_s = 10;
  long low_speed_time_s = 60;    // a request that moves no byte this long fails (retriable)
  std::function<void(int level, const std::string&)> log;  // 2 = warning
  std::string profile;            // the shared files' profile; empty: AWS_PROFILE, else "default"
  std::string credential_source;  // which link of the chain gave the keys (never the keys)
};

// The AWS credential chain's environment, a documented default provider (and the only
// environment the S3 storage reads): AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3 /
// AWS_ENDPOINT_URL, AWS_CA_BUNDLE, for the fields still empty; and AWS_MAX_ATTEMPTS.
void apply_environment(ClientConfig& c);
// Then the shared files (s3_profile.cpp): the profile (c.profile, else AWS_PROFILE, else
// "default") of AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials and of AWS_CONFIG_FILE or
// ~/.aws/config ("[profile NAME]"): its static keys when none were found before (an
// explicit c.profile replaces the environment's; keys given as options always win), its
// region and endpoint_url when still empty. A named profile found in neither file, half a
// key pair, or a profile that needs STS/SSO/credential_process fails naming the profile.
void apply_shared_files(ClientConfig& c, bool keys_from_options);

struct Response {
  long status = 0;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
  std::string header(const std::string& name) const;
};

struct Request {
  std::string method = "GET";
  std::string key;               // object key (unencoded); empty: the bucket itself
  Pairs query;
  Pairs headers;
  std::string_view body;         // sent as is (kept by the caller until perform returns)
  std::string payload_sha256;    // hex of body; computed when empty
  const std::atomic<bool>* cancel = nullptr;  // checked during transfers and backoff
  // Statuses the caller handles itself rather than as errors (e.g. 404 on HEAD).
  std::vector<long> accept;
  // The largest answer body taken (XML answers: 16 MiB; a ranged GET: the range). A
  // longer one fails the request (Code::io, not retried) instead of filling memory.
  size_t max_body = 16 << 20;
};

class Client {
 public:
  Client(ClientConfig cfg, std::string bucket);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends the request, retrying what is retriable. Returns a 2xx response or one whose
  // status is in req.accept; throws otherwise.
  Response perform(const Request& req);

  // The URL of a key, for messages ("s3://bucket/key").
  std::string describe(const std::string& key) const { return "s3://" + bucket_ + "/" + key; }
  const std::string& bucket() const { return bucket_; }
  const ClientConfig& config() const { return cfg_; }

  // Builds the request URL and the host header; public for tests.
  std::string url_of(const Request& req, std::string* host, std::string* canonical_uri) const;

 private:
  Response attempt(const Request& req, const std::string& payload_hash, std::string& transport_error,
                   bool& retriable);
  void* take_handle();
  void give_handle(void* h);

  ClientConfig cfg_;
  std::string bucket_;
  std::string scheme_, hostport_;
  bool path_style_ = false;
  std::mutex mu_;
  std::vector<void*> handles_;  // idle CURL easy handles, kept for connection reuse
};

// Parses S3's <Error><Code>..</Code><Message>..</Message></Error>; empty code if none.
struct S3Error {
  std::string code, message;
  std::string request_time, server_time;  // RequestTimeTooSkewed tells both
};

// The AWS SDKs' standard retry mode: is this answer worth another attempt?
// 500/502/503/504, 429, and the throttling and transient error codes.
bool retriable_answer(long status, const std::string& s3code);

// Full-jitter backoff ceiling before attempt n+1 (n >= 1): min(cap, base * 2^(n-1)).
int64_t backoff_ceiling_ms(int n, int64_t base_ms, int64_t cap_ms);
S3Error parse_error(const std::string& xml);

// "2026-11-27T05:00:00.000Z" -> seconds since the epoch; 0 if malformed.
int64_t parse_iso8601(const std::string& s);

}  // namespace mevbackup::s3
