// age-encryption.org/v1 on OpenSSL 3, written from the format's public specification.
#include "mevbackup/age.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <optional>

namespace mevbackup {

namespace {

constexpr std::string_view kIntro = "age-encryption.org/v1";
constexpr std::string_view kX25519Info = "age-encryption.org/v1/X25519";
constexpr std::string_view kScryptLabel = "age-encryption.org/v1/scrypt";
constexpr std::string_view kArmorBegin = "-----BEGIN AGE ENCRYPTED FILE-----";
constexpr std::string_view kArmorEnd = "-----END AGE ENCRYPTED FILE-----";
constexpr size_t kChunk = 64 * 1024;
constexpr size_t kTag = 16;
constexpr size_t kEncChunk = kChunk + kTag;
constexpr size_t kMaxHeader = 1 << 20;

using Key32 = std::array<uint8_t, 32>;
using Key16 = std::array<uint8_t, 16>;

// Wipes a secret when it goes out of scope.
template <class T>
struct Wipe {
  T& v;
  ~Wipe() { OPENSSL_cleanse(v.data(), v.size()); }
};

[[noreturn]] void header_error(const std::string& why) {
  throw Error(Code::corrupt, "age header: " + why);
}
[[noreturn]] void payload_error(const std::string& why) {
  throw Error(Code::corrupt, "age payload: " + why);
}
[[noreturn]] void armor_error(const std::string& why) {
  throw Error(Code::corrupt, "age armor: " + why);
}

// ---- base64 (standard alphabet) ----
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

std::string b64_encode(const uint8_t* p, size_t n, bool pad) {
  std::string s;
  s.reserve((n + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t(p[i]) << 16) | (uint32_t(p[i + 1]) << 8) | p[i + 2];
    for (int k = 18; k >= 0; k -= 6) s += kB64[(v >> k) & 63];
  }
  if (n - i == 1) {
    uint32_t v = uint32_t(p[i]) << 16;
    s += kB64[(v >> 18) & 63];
    s += kB64[(v >> 12) & 63];
    if (pad) s += "==";
  } else if (n - i == 2) {
    uint32_t v = (uint32_t(p[i]) << 16) | (uint32_t(p[i + 1]) << 8);
    s += kB64[(v >> 18) & 63];
    s += kB64[(v >> 12) & 63];
    s += kB64[(v >> 6) & 63];
    if (pad) s += '=';
  }
  return s;
}

// Strict, canonical decoding: unused trailing bits must be zero. Without `pad` no '=' is
// accepted; with it the length must be a multiple of 4 and '=' only at the end.
std::optional<std::vector<uint8_t>> b64_decode(std::string_view s, bool pad) {
  size_t len = s.size();
  if (pad) {
    if (len % 4 != 0) return std::nullopt;
    size_t eq = 0;
    while (eq < 2 && len > 0 && s[len - 1] == '=') --len, ++eq;
  }
  if (len % 4 == 1) return std::nullopt;
  std::vector<uint8_t> out;
  out.reserve(len * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; ++i) {
    int v = b64_value(s[i]);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t(acc >> bits));
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0) return std::nullopt;  // not canonical
  if (pad && (s.size() - len) != (len % 4 == 0 ? 0 : 4 - len % 4)) return std::nullopt;
  return out;
}

// ---- Bech32 (BIP 173 checksum, no length limit, as age) ----
constexpr char kBech32[] = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

uint32_t bech32_polymod(const std::vector<uint8_t>& v) {
  static const uint32_t gen[5] = {0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3};
  uint32_t chk = 1;
  for (uint8_t x : v) {
    uint32_t b = chk >> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ x;
    for (int i = 0; i < 5; ++i)
      if ((b >> i) & 1) chk ^= gen[i];
  }
  return chk;
}

std::vector<uint8_t> hrp_expand(std::string_view hrp) {
  std::vector<uint8_t> v;
  for (char c : hrp) v.push_back(uint8_t(c) >> 5);
  v.push_back(0);
  for (char c : hrp) v.push_back(uint8_t(c) & 31);
  return v;
}

std::string bech32_encode(std::string_view hrp, const uint8_t* data, size_t n) {
  std::vector<uint8_t> five;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; ++i) {
    acc = (acc << 8) | data[i];
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      five.push_back(uint8_t((acc >> bits) & 31));
    }
  }
  if (bits > 0) five.push_back(uint8_t((acc << (5 - bits)) & 31));
  std::vector<uint8_t> v = hrp_expand(hrp);
  v.insert(v.end(), five.begin(), five.end());
  v.insert(v.end(), 6, 0);
  uint32_t mod = bech32_polymod(v) ^ 1;
  std::string s(hrp);
  s += '1';
  for (uint8_t x : five) s += kBech32[x];
  for (int i = 0; i < 6; ++i) s += kBech32[(mod >> (5 * (5 - i))) & 31];
  std::fill(five.begin(), five.end(), 0);
  OPENSSL_cleanse(v.data(), v.size());
  acc = 0;
  return s;
}

// Decodes a Bech32 string whose human-readable part must be `hrp` (compared lowercase).
// Returns an error description (without the string) or fills `out`.
std::string bech32_decode(std::string_view s, std::string_view hrp, std::vector<uint8_t>& out) {
  bool lower = false, upper = false;
  for (char c : s) {
    if (c < 33 || c > 126) return "contains a character outside printable ASCII";
    if (c >= 'a' && c <= 'z') lower = true;
    if (c >= 'A' && c <= 'Z') upper = true;
  }
  if (lower && upper) return "mixes upper and lower case";
  size_t sep = s.rfind('1');
  if (sep == std::string_view::npos || sep == 0 || s.size() - sep - 1 < 6)
    return "is not Bech32 (no separator or too short)";
  std::string h;
  for (size_t i = 0; i < sep; ++i) h += char(std::tolower(static_cast<unsigned char>(s[i])));
  if (h != hrp) return fmt::format("has the wrong prefix (expected \"{}1\")", hrp);
  std::vector<uint8_t> v = hrp_expand(h);
  std::vector<uint8_t> five;
  for (size_t i = sep + 1; i < s.size(); ++i) {
    const char* p = std::strchr(kBech32, std::tolower(static_cast<unsigned char>(s[i])));
    if (!p || !*p) return "contains a character outside the Bech32 alphabet";
    five.push_back(uint8_t(p - kBech32));
  }
  v.insert(v.end(), five.begin(), five.end());
  uint32_t mod = bech32_polymod(v);
  OPENSSL_cleanse(v.data(), v.size());
  if (mod != 1) {
    OPENSSL_cleanse(five.data(), five.size());
    return "has a bad checksum (mistyped or truncated?)";
  }
  five.resize(five.size() - 6);
  uint32_t acc = 0;
  int bits = 0;
  out.clear();
  for (uint8_t x : five) {
    acc = (acc << 5) | x;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t(acc >> bits));
      acc &= (1u << bits) - 1;
    }
  }
  OPENSSL_cleanse(five.data(), five.size());
  if (bits >= 5 || acc != 0) {
    OPENSSL_cleanse(out.data(), out.size());
    return "has invalid padding bits";
  }
  return {};
}

// ---- OpenSSL primitives ----
struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

[[noreturn]] void ossl_fail(const char* what) {
  throw Error(Code::internal, fmt::format("age: OpenSSL {} failed", what));
}

void random_bytes(uint8_t* p, size_t n) {
  if (RAND_bytes(p, int(n)) != 1) ossl_fail("RAND_bytes");
}

Key32 x25519_public(const Key32& secret) {
  Pkey k(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, secret.data(), secret.size()));
  if (!k) ossl_fail("X25519 key");
  Key32 pub{};
  size_t n = pub.size();
  if (EVP_PKEY_get_raw_public_key(k.get(), pub.data(), &n) != 1 || n != 32) ossl_fail("X25519 public key");
  return pub;
}

// The X25519 shared secret; nullopt when it is all zeros (a low-order point).
std::optional<Key32> x25519(const Key32& secret, const uint8_t* peer) {
  Pkey k(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, secret.data(), secret.size()));
  Pkey p(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer, 32));
  if (!k || !p) ossl_fail("X25519 key");
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new(k.get(), nullptr));
  Key32 out{};
  size_t n = out.size();
  // OpenSSL itself refuses an all-zero result: treat any derive failure as low order.
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 || EVP_PKEY_derive_set_peer(ctx.get(), p.get()) != 1 ||
      EVP_PKEY_derive(ctx.get(), out.data(), &n) != 1 || n != 32)
    return std::nullopt;
  uint8_t any = 0;
  for (uint8_t b : out) any |= b;
  if (!any) return std::nullopt;
  return out;
}

Key32 hkdf(const uint8_t* ikm, size_t ikm_n, const uint8_t* salt, size_t salt_n, std::string_view info) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (!kdf) ossl_fail("HKDF fetch");
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (!ctx) ossl_fail("HKDF context");
  OSSL_PARAM params[5];
  int i = 0;
  params[i++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>("SHA256"), 0);
  params[i++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(ikm), ikm_n);
  static uint8_t empty = 0;
  params[i++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                                  salt_n ? const_cast<uint8_t*>(salt) : &empty, salt_n);
  params[i++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()), info.size());
  params[i] = OSSL_PARAM_construct_end();
  Key32 out{};
  int rc = EVP_KDF_derive(ctx, out.data(), out.size(), params);
  EVP_KDF_CTX_free(ctx);
  if (rc != 1) ossl_fail("HKDF");
  return out;
}

// ChaCha20-Poly1305 with a 12-byte nonce; `out` gets n + 16 bytes (ciphertext, tag).
void seal(const Key32& key, const uint8_t nonce[12], const uint8_t* in, size_t n, uint8_t* out) {
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> c(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!c || EVP_EncryptInit_ex(c.get(), EVP_chacha20_poly1305(), nullptr, key.data(), nonce) != 1 ||
      (n && EVP_EncryptUpdate(c.get(), out, &len, in, int(n)) != 1) ||
      EVP_EncryptFinal_ex(c.get(), out + n, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(c.get(), EVP_CTRL_AEAD_GET_TAG, int(kTag), out + n) != 1)
    ossl_fail("ChaCha20-Poly1305 encrypt");
}

// Opens n bytes (ciphertext + tag, n >= 16) into out (n - 16 bytes); false if the tag fails.
// On failure `out` is wiped, so nothing unauthenticated survives.
bool open(const Key32& key, const uint8_t nonce[12], const uint8_t* in, size_t n, uint8_t* out) {
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> c(EVP_CIPHER_CTX_new());
  size_t m = n - kTag;
  int len = 0;
  if (!c || EVP_DecryptInit_ex(c.get(), EVP_chacha20_poly1305(), nullptr, key.data(), nonce) != 1 ||
      EVP_CIPHER_CTX_ctrl(c.get(), EVP_CTRL_AEAD_SET_TAG, int(kTag), const_cast<uint8_t*>(in + m)) != 1)
    ossl_fail("ChaCha20-Poly1305 decrypt");
  if (m && EVP_DecryptUpdate(c.get(), out, &len, in, int(m)) != 1) ossl_fail("ChaCha20-Poly1305 decrypt");
  if (EVP_DecryptFinal_ex(c.get(), out + m, &len) != 1) {
    OPENSSL_cleanse(out, m);
    return false;
  }
  return true;
}

Key32 scrypt_key(const std::string& pass, const uint8_t salt[16], int log_n) {
  std::vector<uint8_t> s(kScryptLabel.begin(), kScryptLabel.end());
  s.insert(s.end(), salt, salt + 16);
  uint64_t n = uint64_t(1) << log_n;
  uint64_t maxmem = 128 * 8 * n + (uint64_t(1) << 24);
  Key32 out{};
  if (EVP_PBE_scrypt(pass.data(), pass.size(), s.data(), s.size(), n, 8, 1, maxmem, out.data(), out.size()) != 1)
    throw Error(Code::no_memory, fmt::format("age: scrypt with work factor {} failed (out of memory?)", log_n));
  return out;
}

Key32 hmac_sha256(const Key32& key, std::string_view data) {
  Key32 out{};
  unsigned int n = 0;
  if (!HMAC(EVP_sha256(), key.data(), int(key.size()), reinterpret_cast<const uint8_t*>(data.data()), data.size(),
            out.data(), &n) || n != 32)
    ossl_fail("HMAC-SHA-256");
  return out;
}

const uint8_t kZeroNonce[12] = {};

// ---- header ----
struct Stanza {
  std::vector<std::string> args;  // args[0] is the type
  std::vector<uint8_t> body;
};

void append_stanza(std::string& h, const Stanza& s) {
  h += "->";
  for (const auto& a : s.args) h += ' ' + a;
  h += '\n';
  std::string b = b64_encode(s.body.data(), s.body.size(), false);
  for (size_t i = 0;; i += 64) {
    std::string_view line = std::string_view(b).substr(std::min(i, b.size()), 64);
    h += line;
    h += '\n';
    if (line.size() < 64) break;
  }
}

bool valid_arg(std::string_view a) {
  if (a.empty()) return false;
  return std::all_of(a.begin(), a.end(), [](char c) { return c >= 33 && c <= 126; });
}

struct Header {
  std::vector<Stanza> stanzas;
  std::string_view mac_input;  // up to and including "---"
  Key32 mac{};
};

// Parses a complete header (ending with the MAC line's '\n').
Header parse_header(std::string_view text) {
  Header h;
  size_t pos = 0;
  auto next_line = [&](std::string_view& line) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) header_error("truncated (a line does not end)");
    line = text.substr(pos, nl - pos);
    pos = nl + 1;
  };
  std::string_view line;
  next_line(line);
  if (line != kIntro) {
    if (line.substr(0, 19) == "age-encryption.org/")
      header_error(fmt::format("unsupported version \"{}\"", std::string(line.substr(19, 16))));
    header_error("not an age file (the first line is not age-encryption.org/v1)");
  }
  for (;;) {
    size_t line_start = pos;
    next_line(line);
    if (line.substr(0, 3) == "---") {
      if (line.size() < 4 || line[3] != ' ') header_error("the MAC line does not start with \"--- \"");
      auto mac = b64_decode(line.substr(4), false);
      if (!mac || mac->size() != 32) header_error("the MAC is not 32 bytes of canonical base64");
      std::copy(mac->begin(), mac->end(), h.mac.begin());
      h.mac_input = text.substr(0, line_start + 3);
      if (pos != text.size()) header_error("data after the MAC line");
      return h;
    }
    if (line.substr(0, 3) != "-> ") header_error("a stanza does not start with \"-> \"");
    Stanza s;
    std::string_view rest = line.substr(3);
    for (;;) {
      size_t sp = rest.find(' ');
      std::string_view a = rest.substr(0, sp);
      if (!valid_arg(a)) header_error("a stanza argument is empty or has a character outside printable ASCII");
      s.args.emplace_back(a);
      if (sp == std::string_view::npos) break;
      rest = rest.substr(sp + 1);
    }
    for (;;) {
      next_line(line);
      if (line.size() > 64) header_error("a stanza body line is longer than 64 columns");
      if (line.substr(0, 3) == "---") header_error("a stanza body does not end with a short line");
      auto part = b64_decode(line, false);
      if (!part) header_error("a stanza body is not canonical unpadded base64");
      s.body.insert(s.body.end(), part->begin(), part->end());
      if (line.size() < 64) break;
    }
    h.stanzas.push_back(std::move(s));
  }
}

// Unwraps the file key from `stanzas` with `id`; nullopt if the identity does not match.
// A stanza of the identity's type that is malformed fails the whole header.
std::optional<Key16> unwrap(const AgeIdentity& id, const std::vector<Stanza>& stanzas) {
  for (const auto& s : stanzas) {
    Key32 wrap{};
    Wipe<Key32> w{wrap};
    if (id.kind == AgeIdentity::Kind::x25519) {
      if (s.args[0] != "X25519") continue;
      if (s.args.size() != 2) header_error("an X25519 stanza must have exactly one argument");
      auto share = b64_decode(s.args[1], false);
      if (!share || share->size() != 32) header_error("an X25519 share is not 32 bytes of canonical base64");
      if (s.body.size() != 32) header_error("an X25519 stanza body is not 32 bytes");
      auto shared = x25519(id.secret_key, share->data());
      if (!shared) header_error("an X25519 share is a low-order point");
      Wipe<Key32> ws{*shared};
      Key32 pub = x25519_public(id.secret_key);
      uint8_t salt[64];
      std::copy(share->begin(), share->end(), salt);
      std::copy(pub.begin(), pub.end(), salt + 32);
      wrap = hkdf(shared->data(), 32, salt, 64, kX25519Info);
    } else {
      if (s.args[0] != "scrypt") continue;
      if (s.args.size() != 3) header_error("an scrypt stanza must have exactly two arguments");
      auto salt = b64_decode(s.args[1], false);
      if (!salt || salt->size() != 16) header_error("an scrypt salt is not 16 bytes of canonical base64");
      const std::string& wf = s.args[2];
      if (wf.empty() || wf.size() > 2 || wf[0] < '1' || wf[0] > '9' ||
          !std::all_of(wf.begin(), wf.end(), [](char c) { return c >= '0' && c <= '9'; }))
        header_error("an scrypt work factor is not a decimal number from 1");
      int log_n = std::stoi(wf);
      if (log_n > id.max_work_factor)
        header_error(fmt::format("an scrypt work factor of {} is above the limit of {}", log_n, id.max_work_factor));
      if (s.body.size() != 32) header_error("an scrypt stanza body is not 32 bytes");
      wrap = scrypt_key(id.passphrase, salt->data(), log_n);
    }
    Key16 key{};
    if (open(wrap, kZeroNonce, s.body.data(), s.body.size(), key.data())) return key;
  }
  return std::nullopt;
}

// The header of a file with `file_key` for `recipients`: the intro, one stanza each, the
// MAC line and its newline.
std::string build_header(const std::vector<AgeRecipient>& recipients, const Key16& file_key) {
  std::string h(kIntro);
  h += '\n';
  for (const auto& r : recipients) {
    Stanza s;
    Key32 wrap{};
    Wipe<Key32> ww{wrap};
    if (r.kind == AgeRecipient::Kind::x25519) {
      Key32 eph{};
      Wipe<Key32> we{eph};
      random_bytes(eph.data(), eph.size());
      Key32 share = x25519_public(eph);
      auto shared = x25519(eph, r.public_key.data());
      if (!shared) throw Error(Code::invalid_argument, "age: a recipient is a low-order X25519 point");
      Wipe<Key32> wsh{*shared};
      uint8_t salt[64];
      std::copy(share.begin(), share.end(), salt);
      std::copy(r.public_key.begin(), r.public_key.end(), salt + 32);
      wrap = hkdf(shared->data(), 32, salt, 64, kX25519Info);
      s.args = {"X25519", b64_encode(share.data(), share.size(), false)};
    } else {
      if (r.work_factor < 1 || r.work_factor > 30)
        throw Error(Code::invalid_argument, fmt::format("age: scrypt work factor {} is out of range 1..30", r.work_factor));
      uint8_t salt[16];
      random_bytes(salt, sizeof salt);
      wrap = scrypt_key(r.passphrase, salt, r.work_factor);
      s.args = {"scrypt", b64_encode(salt, sizeof salt, false), std::to_string(r.work_factor)};
    }
    s.body.resize(32);
    seal(wrap, kZeroNonce, file_key.data(), file_key.size(), s.body.data());
    append_stanza(h, s);
  }
  h += "---";
  Key32 mac_key = hkdf(file_key.data(), file_key.size(), nullptr, 0, "header");
  Wipe<Key32> wm{mac_key};
  Key32 mac = hmac_sha256(mac_key, h);
  h += ' ' + b64_encode(mac.data(), mac.size(), false) + '\n';
  return h;
}

// Opens a parsed header with one of `ids`: the file key, its MAC checked.
Key16 open_file_key(const Header& h, const std::vector<AgeIdentity>& ids) {
  bool scrypt = false;
  for (const auto& s : h.stanzas) scrypt |= s.args[0] == "scrypt";
  if (scrypt && h.stanzas.size() != 1) header_error("an scrypt stanza must be the only stanza");
  std::optional<Key16> key;
  for (const auto& id : ids) {
    key = unwrap(id, h.stanzas);
    if (key) break;
  }
  if (!key)
    throw Error(Code::auth, fmt::format("age: no identity matches any of the file's {} recipient stanza{}",
                                        h.stanzas.size(), h.stanzas.size() == 1 ? "" : "s"));
  Key16 file_key = *key;
  OPENSSL_cleanse(key->data(), key->size());
  Key32 mac_key = hkdf(file_key.data(), 16, nullptr, 0, "header");
  Wipe<Key32> wm{mac_key};
  Key32 mac = hmac_sha256(mac_key, h.mac_input);
  if (CRYPTO_memcmp(mac.data(), h.mac.data(), 32) != 0) {
    OPENSSL_cleanse(file_key.data(), file_key.size());
    throw Error(Code::corrupt, "age header MAC does not verify (the header was altered)");
  }
  return file_key;
}

void stream_nonce(uint8_t nonce[12], uint64_t counter, bool last) {
  for (int i = 0; i < 11; ++i) nonce[i] = i < 3 ? 0 : uint8_t(counter >> (8 * (10 - i)));
  nonce[11] = last ? 1 : 0;
}

// Copies what fits from `pending` (starting at `off`) into `out`; true when all went out.
bool drain(std::vector<uint8_t>& pending, size_t& off, OutBuf& out) {
  size_t n = std::min(pending.size() - off, out.room());
  if (n) std::memcpy(out.p + out.pos, pending.data() + off, n);
  out.pos += n;
  off += n;
  if (off == pending.size()) {
    pending.clear();
    off = 0;
    return true;
  }
  return false;
}

// ---- encryptor ----
class AgeEncryptor final : public Filter {
 public:
  explicit AgeEncryptor(std::vector<AgeRecipient> recipients) {
    if (recipients.empty()) throw Error(Code::invalid_argument, "age: at least one recipient is needed");
    bool scrypt = false;
    for (const auto& r : recipients) scrypt |= r.kind == AgeRecipient::Kind::scrypt;
    if (scrypt && recipients.size() != 1)
      throw Error(Code::invalid_argument, "age: a passphrase recipient must be the only recipient");
    name_ = fmt::format("age encryptor ({} recipient{})", recipients.size(), recipients.size() == 1 ? "" : "s");
    Key16 file_key{};
    Wipe<Key16> wf{file_key};
    random_bytes(file_key.data(), file_key.size());
    std::string h = build_header(recipients, file_key);
    uint8_t nonce[16];
    random_bytes(nonce, sizeof nonce);
    payload_key_ = hkdf(file_key.data(), file_key.size(), nonce, sizeof nonce, "payload");
    pending_.assign(h.begin(), h.end());
    pending_.insert(pending_.end(), nonce, nonce + sizeof nonce);
    buf_.reserve(kChunk);
  }
  ~AgeEncryptor() override {
    OPENSSL_cleanse(payload_key_.data(), payload_key_.size());
    if (!buf_.empty()) OPENSSL_cleanse(buf_.data(), buf_.size());
  }
  const char* name() const override { return name_.c_str(); }

  bool process(InBuf& in, OutBuf& out, bool finish) override {
    for (;;) {
      if (!drain(pending_, off_, out)) return false;
      if (done_) return true;
      size_t take = std::min(kChunk - buf_.size(), in.left());
      buf_.insert(buf_.end(), reinterpret_cast<const uint8_t*>(in.p + in.pos),
                  reinterpret_cast<const uint8_t*>(in.p + in.pos + take));
      in.pos += take;
      if (buf_.size() == kChunk && in.left() > 0) {
        emit(false);  // more follows: this full chunk is not the last
        continue;
      }
      if (finish && in.left() == 0) {
        emit(true);
        done_ = true;
        continue;
      }
      return false;
    }
  }

 private:
  void emit(bool last) {
    uint8_t nonce[12];
    stream_nonce(nonce, counter_++, last);
    pending_.resize(buf_.size() + kTag);
    off_ = 0;
    seal(payload_key_, nonce, buf_.data(), buf_.size(), pending_.data());
    OPENSSL_cleanse(buf_.data(), buf_.size());
    buf_.clear();
  }

  std::string name_;
  Key32 payload_key_{};
  std::vector<uint8_t> buf_;      // plaintext of the chunk being filled
  std::vector<uint8_t> pending_;  // output not yet handed out
  size_t off_ = 0;
  uint64_t counter_ = 0;
  bool done_ = false;
};

// ---- decryptor ----
class AgeDecryptor final : public Filter {
 public:
  explicit AgeDecryptor(std::vector<AgeIdentity> ids) : ids_(std::move(ids)) {
    if (ids_.empty()) throw Error(Code::invalid_argument, "age: at least one identity is needed");
  }
  ~AgeDecryptor() override {
    OPENSSL_cleanse(payload_key_.data(), payload_key_.size());
    if (!out_.empty()) OPENSSL_cleanse(out_.data(), out_.size());
  }
  const char* name() const override { return "age decryptor"; }

  bool process(InBuf& in, OutBuf& out, bool finish) override {
    for (;;) {
      if (!drain(out_, out_off_, out)) return false;
      if (finished_) return true;
      bool progressed = pull(in);
      progressed |= step();
      if (!progressed) {
        if (!finish || in.left() != 0) return false;
        step_final();  // progresses, finishes or throws
      }
    }
  }

 private:
  enum class Mode { detect, binary, armor };
  enum class Armor { before, body, after };

  // Moves input into bin_ (decoding armor); true if anything was consumed.
  bool pull(InBuf& in) {
    size_t want = stage_ == Stage::header ? bin_.size() + 4096 : kEncChunk + 1;
    if (mode_ == Mode::detect) {
      constexpr std::string_view magic = "age-encryption.org/";
      if (!in.left()) return false;
      while (in.left() && detect_.size() < magic.size()) detect_ += char(in.p[in.pos++]);
      if (magic.starts_with(detect_) && detect_.size() < magic.size()) return true;  // undecided
      if (detect_ == magic) {
        mode_ = Mode::binary;
        bin_.insert(bin_.end(), detect_.begin(), detect_.end());
      } else {
        mode_ = Mode::armor;
        for (char c : detect_) armor_byte(c);
      }
      detect_.clear();
      return true;
    }
    if (mode_ == Mode::binary) {
      if (bin_.size() >= want || in.left() == 0) return false;
      size_t take = std::min(want - bin_.size(), in.left());
      bin_.insert(bin_.end(), reinterpret_cast<const uint8_t*>(in.p + in.pos),
                  reinterpret_cast<const uint8_t*>(in.p + in.pos + take));
      in.pos += take;
      return true;
    }
    bool any = false;
    while (bin_.size() < want && in.left()) {
      armor_byte(char(in.p[in.pos++]));
      any = true;
    }
    return any;
  }

  void armor_byte(char c) {
    if (armor_ == Armor::before) {
      if (line_.empty() && (c == ' ' || c == '\t' || c == '\r' || c == '\n')) return;
    } else if (armor_ == Armor::after) {
      if (c == ' ' || c == '\t' || c == '\r' || c == '\n') return;
      armor_error("data after the end line");
    }
    if (c != '\n') {
      if (line_.size() > 80) armor_error("a line is longer than 64 columns");
      line_ += c;
      return;
    }
    armor_line();
  }

  void armor_line() {
    std::string_view l = line_;
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    if (armor_ == Armor::before) {
      if (l != kArmorBegin) armor_error("the file does not start with \"-----BEGIN AGE ENCRYPTED FILE-----\"");
      armor_ = Armor::body;
    } else if (l == kArmorEnd) {
      if (!armor_lines_) armor_error("no data between the begin and end lines");
      armor_ = Armor::after;
    } else {
      if (armor_short_) armor_error("a short line is followed by more data");
      if (l.empty() || l.size() > 64) armor_error("a line is empty or longer than 64 columns");
      auto part = b64_decode(l, true);
      if (!part) armor_error("a line is not canonical padded base64");
      bin_.insert(bin_.end(), part->begin(), part->end());
      armor_short_ = l.size() < 64 || l.back() == '=';
      ++armor_lines_;
    }
    line_.clear();
  }

  enum class Stage { header, nonce, payload, done };

  // Advances on bin_; true if something was decided.
  bool step() {
    if (!out_.empty()) return false;  // hand out the last chunk first
    if (stage_ == Stage::header) {
      std::string_view b(reinterpret_cast<const char*>(bin_.data()), bin_.size());
      size_t m = b.find("\n---");
      size_t end = m == std::string_view::npos ? m : b.find('\n', m + 1);
      if (end == std::string_view::npos) {
        if (bin_.size() > kMaxHeader) header_error("longer than 1 MiB");
        return false;
      }
      open_header(b.substr(0, end + 1));
      bin_.erase(bin_.begin(), bin_.begin() + long(end + 1));
      stage_ = Stage::nonce;
      return true;
    }
    if (stage_ == Stage::nonce) {
      if (bin_.size() < 16) return false;
      payload_key_ = hkdf(file_key_.data(), 16, bin_.data(), 16, "payload");
      OPENSSL_cleanse(file_key_.data(), file_key_.size());
      bin_.erase(bin_.begin(), bin_.begin() + 16);
      stage_ = Stage::payload;
      return true;
    }
    if (stage_ == Stage::payload) {
      if (bin_.size() <= kEncChunk) return false;  // a full chunk with more behind it
      chunk(kEncChunk, false);
      return true;
    }
    // done: the last chunk was read, anything else is trailing data
    if (!bin_.empty()) payload_error("trailing data after the last chunk");
    return false;
  }

  // All input is in: the rest of bin_ is the last chunk.
  void step_final() {
    if (mode_ == Mode::detect) {
      if (detect_.empty()) header_error("the input is empty");
      header_error("not an age file (too short)");
    }
    if (mode_ == Mode::armor) {
      if (!line_.empty()) armor_line();
      if (armor_ == Armor::before) armor_error("no \"-----BEGIN AGE ENCRYPTED FILE-----\" line");
      if (armor_ != Armor::after) armor_error("no \"-----END AGE ENCRYPTED FILE-----\" line");
    }
    if (step()) return;
    switch (stage_) {
      case Stage::header:
        header_error(bin_.empty() ? "the input is empty" : "truncated (no MAC line)");
      case Stage::nonce:
        header_error("the payload nonce is missing or short");
      case Stage::payload:
        if (bin_.empty()) {
          if (counter_ == 0) payload_error("no chunks (the file is truncated)");
          payload_error("the last chunk is missing (the file is truncated)");
        }
        chunk(bin_.size(), true);
        break;
      case Stage::done:
        if (!bin_.empty()) payload_error("trailing data after the last chunk");
        break;
    }
    finished_ = true;
  }

  // Opens the first n bytes of bin_ as a chunk. `must_be_last` when it ends the input;
  // a full chunk that is not known to be last is tried as a middle chunk, then as a last.
  void chunk(size_t n, bool must_be_last) {
    if (stage_ == Stage::done) payload_error("trailing data after the last chunk");
    if (n < kTag) payload_error(fmt::format("chunk {} is shorter than its tag", counter_));
    uint8_t nonce[12];
    out_.resize(n - kTag);
    out_off_ = 0;
    bool last = must_be_last;
    stream_nonce(nonce, counter_, last);
    bool ok = open(payload_key_, nonce, bin_.data(), n, out_.data());
    if (!ok && !last && n == kEncChunk) {
      last = true;
      stream_nonce(nonce, counter_, true);
      ok = open(payload_key_, nonce, bin_.data(), n, out_.data());
    }
    if (!ok) {
      out_.clear();
      payload_error(fmt::format("chunk {} failed authentication (damaged, truncated or forged)", counter_));
    }
    if (last && n == kTag && counter_ > 0) {
      out_.clear();
      payload_error("the last chunk is empty but the payload is not");
    }
    if (!last && n < kEncChunk) payload_error(fmt::format("chunk {} is short", counter_));
    ++counter_;
    bin_.erase(bin_.begin(), bin_.begin() + long(n));
    if (last) {
      stage_ = Stage::done;
      if (!bin_.empty()) {
        OPENSSL_cleanse(out_.data(), out_.size());
        out_.clear();
        payload_error("trailing data after the last chunk");
      }
    }
  }

  void open_header(std::string_view text) {
    Header h = parse_header(text);
    file_key_ = open_file_key(h, ids_);
    for (auto& id : ids_) {
      OPENSSL_cleanse(id.secret_key.data(), id.secret_key.size());
      OPENSSL_cleanse(id.passphrase.data(), id.passphrase.size());
    }
    ids_.clear();
  }

  std::vector<AgeIdentity> ids_;
  Mode mode_ = Mode::detect;
  Armor armor_ = Armor::before;
  bool armor_short_ = false;  // the last line was short or padded: only the end line may follow
  size_t armor_lines_ = 0;
  std::string detect_, line_;
  Stage stage_ = Stage::header;
  std::vector<uint8_t> bin_;  // binary age bytes not yet used
  std::vector<uint8_t> out_;  // verified plaintext not yet handed out
  size_t out_off_ = 0;
  Key16 file_key_{};
  Key32 payload_key_{};
  uint64_t counter_ = 0;
  bool finished_ = false;
};

}  // namespace

AgeRecipient::~AgeRecipient() { OPENSSL_cleanse(passphrase.data(), passphrase.size()); }
AgeIdentity::~AgeIdentity() {
  OPENSSL_cleanse(secret_key.data(), secret_key.size());
  OPENSSL_cleanse(passphrase.data(), passphrase.size());
}
AgeKeyPair::~AgeKeyPair() { OPENSSL_cleanse(secret.data(), secret.size()); }

AgeRecipient parse_age_recipient(std::string_view text, std::string_view what) {
  std::vector<uint8_t> data;
  if (text.substr(0, 4) != "age1")
    throw Error(Code::invalid_argument, fmt::format("{}: \"{}\" is not an age recipient (does not start with age1)",
                                                    what, std::string(text.substr(0, 64))));
  for (char c : text)
    if (c >= 'A' && c <= 'Z')
      throw Error(Code::invalid_argument, fmt::format("{}: an age recipient must be lowercase", what));
  std::string why = bech32_decode(text, "age", data);
  if (!why.empty()) throw Error(Code::invalid_argument, fmt::format("{}: \"{}\" {}", what, std::string(text), why));
  if (data.size() != 32)
    throw Error(Code::invalid_argument,
                fmt::format("{}: \"{}\" holds {} bytes, not a 32-byte X25519 key", what, std::string(text), data.size()));
  AgeRecipient r;
  std::copy(data.begin(), data.end(), r.public_key.begin());
  return r;
}

AgeRecipient age_passphrase_recipient(std::string passphrase, int work_factor) {
  if (passphrase.empty()) throw Error(Code::invalid_argument, "age: the passphrase is empty");
  if (work_factor < 1 || work_factor > 30)
    throw Error(Code::invalid_argument, fmt::format("age: scrypt work factor {} is out of range 1..30", work_factor));
  AgeRecipient r;
  r.kind = AgeRecipient::Kind::scrypt;
  r.passphrase = std::move(passphrase);
  r.work_factor = work_factor;
  return r;
}

std::string format_age_recipient(const std::array<uint8_t, 32>& public_key) {
  return bech32_encode("age", public_key.data(), public_key.size());
}

AgeIdentity parse_age_identity(std::string_view text, std::string_view what) {
  if (text.substr(0, 16) != "AGE-SECRET-KEY-1")
    throw Error(Code::invalid_argument, fmt::format("{}: not an age identity (does not start with AGE-SECRET-KEY-1)", what));
  for (char c : text)
    if (c >= 'a' && c <= 'z')
      throw Error(Code::invalid_argument, fmt::format("{}: an age identity must be uppercase", what));
  std::vector<uint8_t> data;
  std::string why = bech32_decode(text, "age-secret-key-", data);
  if (!why.empty()) throw Error(Code::invalid_argument, fmt::format("{}: the AGE-SECRET-KEY-1 string {}", what, why));
  if (data.size() != 32) {
    OPENSSL_cleanse(data.data(), data.size());
    throw Error(Code::invalid_argument, fmt::format("{}: the key is not 32 bytes", what));
  }
  AgeIdentity id;
  std::copy(data.begin(), data.end(), id.secret_key.begin());
  OPENSSL_cleanse(data.data(), data.size());
  return id;
}

std::vector<AgeIdentity> parse_age_identity_file(std::string_view text) {
  std::vector<AgeIdentity> ids;
  size_t n = 0;
  while (!text.empty()) {
    ++n;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty() || line[0] == '#') continue;
    ids.push_back(parse_age_identity(line, fmt::format("identity file line {}", n)));
  }
  if (ids.empty()) throw Error(Code::invalid_argument, "identity file: no AGE-SECRET-KEY-1 line");
  return ids;
}

AgeIdentity age_passphrase_identity(std::string passphrase, int max_work_factor) {
  if (passphrase.empty()) throw Error(Code::invalid_argument, "age: the passphrase is empty");
  AgeIdentity id;
  id.kind = AgeIdentity::Kind::scrypt;
  id.passphrase = std::move(passphrase);
  id.max_work_factor = max_work_factor;
  return id;
}

std::string format_age_identity(const std::array<uint8_t, 32>& secret_key) {
  std::string s = bech32_encode("age-secret-key-", secret_key.data(), secret_key.size());
  for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string age_identity_recipient(const AgeIdentity& identity) {
  if (identity.kind != AgeIdentity::Kind::x25519)
    throw Error(Code::invalid_argument, "age: a passphrase identity has no recipient string");
  return format_age_recipient(x25519_public(identity.secret_key));
}

AgeKeyPair generate_age_identity() {
  Key32 secret{};
  Wipe<Key32> w{secret};
  random_bytes(secret.data(), secret.size());
  AgeKeyPair kp;
  kp.secret = format_age_identity(secret);
  kp.recipient = format_age_recipient(x25519_public(secret));
  return kp;
}

std::unique_ptr<Filter> make_age_encryptor(std::vector<AgeRecipient> recipients) {
  return std::make_unique<AgeEncryptor>(std::move(recipients));
}

size_t age_header_size(std::string_view data) {
  std::string intro = std::string(kIntro) + "\n";
  if (data.size() < intro.size()) {
    if (intro.compare(0, data.size(), data) != 0) header_error("not a binary age file");
    return 0;
  }
  if (data.substr(0, intro.size()) != intro) header_error("not a binary age file (the first line is not " + std::string(kIntro) + ")");
  size_t mac = data.find("\n---", intro.size() - 1);
  size_t end = mac == std::string_view::npos ? mac : data.find('\n', mac + 1);
  if (end == std::string_view::npos) {
    if (data.size() > kMaxHeader) header_error("longer than 1 MiB");
    return 0;
  }
  return end + 1;
}

std::string age_rekey_header(std::string_view header, const std::vector<AgeIdentity>& identities,
                             const std::vector<AgeRecipient>& recipients) {
  if (identities.empty()) throw Error(Code::invalid_argument, "age: at least one identity is needed");
  if (recipients.empty()) throw Error(Code::invalid_argument, "age: at least one recipient is needed");
  bool scrypt = false;
  for (const auto& r : recipients) scrypt |= r.kind == AgeRecipient::Kind::scrypt;
  if (scrypt && recipients.size() != 1)
    throw Error(Code::invalid_argument, "age: a passphrase recipient must be the only recipient");
  Header h = parse_header(header);
  Key16 file_key = open_file_key(h, identities);
  Wipe<Key16> wf{file_key};
  return build_header(recipients, file_key);
}

std::unique_ptr<Filter> make_age_decryptor(std::vector<AgeIdentity> identities) {
  return std::make_unique<AgeDecryptor>(std::move(identities));
}

}  // namespace mevbackup
