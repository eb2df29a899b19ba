#include "sigv4.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <algorithm>
#include <map>

#include "mevbackup/error.hpp"

namespace mevbackup::s3 {

std::string to_hex(std::string_view raw) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char c : raw) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  return to_hex(std::string_view(reinterpret_cast<char*>(md), sizeof md));
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
            data.size(), md, &len))
    throw Error(Code::internal, "HMAC-SHA256 failed");
  return std::string(reinterpret_cast<char*>(md), len);
}

std::string base64(std::string_view raw) {
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(raw.data()), static_cast<int>(raw.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string md5_raw(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(data.data(), data.size(), md, &len, EVP_md5(), nullptr))
    throw Error(Code::internal, "MD5 failed");
  return std::string(reinterpret_cast<char*>(md), len);
}

std::string md5_base64(std::string_view data) { return base64(md5_raw(data)); }

std::string uri_encode(std::string_view s, bool encode_slash) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (unsigned char c : s) {
    bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                      c == '.' || c == '_' || c == '~';
    if (unreserved || (c == '/' && !encode_slash)) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += digits[c >> 4];
      out += digits[c & 15];
    }
  }
  return out;
}

std::string canonical_query(const Pairs& query) {
  // Sorted by encoded name, then encoded value, by byte (not by locale).
  std::vector<std::pair<std::string, std::string>> enc;
  enc.reserve(query.size());
  for (auto& [k, v] : query) enc.emplace_back(uri_encode(k, true), uri_encode(v, true));
  std::sort(enc.begin(), enc.end());
  std::string out;
  for (auto& [k, v] : enc) {
    if (!out.empty()) out += '&';
    out += k;
    out += '=';
    out += v;
  }
  return out;
}

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// Trims the value and squeezes runs of blanks into one space (the spec's Trimall).
std::string trimall(std::string_view v) {
  std::string out;
  bool blank = false;
  for (char c : v) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      blank = true;
      continue;
    }
    if (blank && !out.empty()) out += ' ';
    blank = false;
    out += c;
  }
  return out;
}

}  // namespace

Signed sign_v4(const SigningInput& in, const Credentials& creds) {
  // Headers: lower-case names, sorted; values of repeated names joined by ',' in order.
  std::map<std::string, std::string> hdrs;
  for (auto& [name, value] : in.headers) {
    auto key = lower(trimall(name));
    auto it = hdrs.find(key);
    if (it == hdrs.end()) hdrs.emplace(key, trimall(value));
    else it->second += "," + trimall(value);
  }
  Signed s;
  std::string canonical_headers;
  for (auto& [k, v] : hdrs) {
    canonical_headers += k + ":" + v + "\n";
    if (!s.signed_headers.empty()) s.signed_headers += ';';
    s.signed_headers += k;
  }
  s.canonical_request = in.method + "\n" + in.canonical_uri + "\n" + canonical_query(in.query) + "\n" +
                        canonical_headers + "\n" + s.signed_headers + "\n" + in.payload_hash;
  if (in.amz_date.size() != 16) throw Error(Code::internal, "SigV4: malformed x-amz-date");
  std::string day = in.amz_date.substr(0, 8);
  std::string scope = day + "/" + in.region + "/" + in.service + "/aws4_request";
  s.string_to_sign = "AWS4-HMAC-SHA256\n" + in.amz_date + "\n" + scope + "\n" + sha256_hex(s.canonical_request);
  std::string key = hmac_sha256("AWS4" + creds.secret_access_key, day);
  key = hmac_sha256(key, in.region);
  key = hmac_sha256(key, in.service);
  key = hmac_sha256(key, "aws4_request");
  s.signature = to_hex(hmac_sha256(key, s.string_to_sign));
  s.authorization = "AWS4-HMAC-SHA256 Credential=" + creds.access_key_id + "/" + scope +
                    ", SignedHeaders=" + s.signed_headers + ", Signature=" + s.signature;
  return s;
}

Pairs sign_s3(SigningInput in, const Credentials& creds, Signed* out) {
  in.headers.emplace_back("x-amz-date", in.amz_date);
  in.headers.emplace_back("x-amz-content-sha256", in.payload_hash);
  if (!creds.session_token.empty()) in.headers.emplace_back("x-amz-security-token", creds.session_token);
  Signed s = sign_v4(in, creds);
  in.headers.emplace_back("Authorization", s.authorization);
  if (out) *out = std::move(s);
  return std::move(in.headers);
}

std::string amz_date(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[20];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

}  // namespace mevbackup::s3
