// AWS Signature Version 4: canonical request, string to sign, signature, as the AWS
// documentation specifies, with OpenSSL's SHA-256 and HMAC. Pure functions: no clock,
// no network, so the published test vectors pin them down.
//
// S3 differs from the generic algorithm in two ways that matter here: the canonical
// URI is the path encoded once (no normalisation, no double encoding), and every
// request carries the payload hash in x-amz-content-sha256 (a hex SHA-256 or the
// literal UNSIGNED-PAYLOAD), which is also the last line of the canonical request.
#pragma once

#include <ctime>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mevbackup::s3 {

inline constexpr const char* kUnsignedPayload = "UNSIGNED-PAYLOAD";
inline constexpr const char* kEmptySha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;  // never logged, never in a message
  std::string session_token;      // optional (temporary credentials)
};

using Pairs = std::vector<std::pair<std::string, std::string>>;

struct SigningInput {
  std::string method;         // "GET", "PUT", ...
  std::string canonical_uri;  // the path as sent, already percent-encoded
  Pairs query;                // decoded names and values, any order
  Pairs headers;              // as sent (any case, any order, duplicates allowed)
  std::string payload_hash;   // hex SHA-256 of the body, or kUnsignedPayload
  std::string amz_date;       // YYYYMMDDTHHMMSSZ
  std::string region;
  std::string service;
};

struct Signed {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signed_headers;  // "host;x-amz-date"
  std::string signature;       // hex
  std::string authorization;   // the Authorization header's value
};

// Every header in `in.headers` is signed.
Signed sign_v4(const SigningInput& in, const Credentials& creds);

// The S3 way: adds x-amz-date, x-amz-content-sha256 (= in.payload_hash) and, with
// temporary credentials, x-amz-security-token to in.headers, then signs. Returns the
// headers to send, Authorization included.
Pairs sign_s3(SigningInput in, const Credentials& creds, Signed* out = nullptr);

// RFC 3986 unreserved characters pass; everything else is %XX (uppercase).
// '/' passes unless encode_slash.
std::string uri_encode(std::string_view s, bool encode_slash);
std::string canonical_query(const Pairs& query);

std::string sha256_hex(std::string_view data);
std::string hmac_sha256(std::string_view key, std::string_view data);  // raw bytes
std::string to_hex(std::string_view raw);
std::string base64(std::string_view raw);
std::string md5_base64(std::string_view data);  // Content-MD5
std::string md5_raw(std::string_view data);     // 16 bytes

// YYYYMMDDTHHMMSSZ of a UTC time.
std::string amz_date(std::time_t t);

}  // namespace mevbackup::s3
