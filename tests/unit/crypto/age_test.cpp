#include <doctest/doctest.h>

#include <openssl/evp.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "../helpers.hpp"
#include "mevbackup/age.hpp"

using namespace mevbackup;
using testutil::random_bytes;

namespace {

// Drives a filter with input slices of `in_step` bytes and an output buffer of `out_size`;
// what came out is in `out` even when process() throws.
void drive(Filter& f, const std::string& in, size_t in_step, size_t out_size, std::string& out) {
  std::vector<std::byte> buf(out_size);
  size_t fed = 0;
  for (;;) {
    size_t n = std::min(in_step, in.size() - fed);
    bool last = fed + n == in.size();
    InBuf ib{reinterpret_cast<const std::byte*>(in.data()) + fed, n, 0};
    for (int guard = 0;; ++guard) {
      REQUIRE(guard < 10000000);
      OutBuf ob{buf.data(), buf.size(), 0};
      bool done = f.process(ib, ob, last);
      out.append(reinterpret_cast<const char*>(buf.data()), ob.pos);
      if (last ? done : (ib.left() == 0 && ob.pos < ob.n)) break;
    }
    fed += n;
    if (last) return;
  }
}

std::string run(Filter& f, const std::string& in, size_t in_step = 1 << 20, size_t out_size = 1 << 20) {
  std::string out;
  drive(f, in, in_step, out_size, out);
  return out;
}

std::string encrypt(const std::vector<AgeRecipient>& r, const std::string& plain, size_t step = 1 << 20,
                    size_t out_size = 1 << 20) {
  auto f = make_age_encryptor(r);
  return run(*f, plain, step, out_size);
}

std::string decrypt(const std::vector<AgeIdentity>& ids, const std::string& enc, size_t step = 1 << 20,
                    size_t out_size = 1 << 20) {
  auto f = make_age_decryptor(ids);
  return run(*f, enc, step, out_size);
}

std::string sha256_hex(const std::string& s) {
  unsigned char md[32];
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), md, &n, EVP_sha256(), nullptr);
  return fmt::format("{:02x}", fmt::join(md, md + 32, ""));
}

std::string plain_of(size_t n, uint64_t seed = 7) { return testutil::to_string(random_bytes(n, seed, false)); }

// What a failure was, in the testkit's words.
std::string outcome_of(const Error& e) {
  std::string m = e.what();
  if (e.code() == Code::auth) return "no match";
  if (e.code() != Code::corrupt) return "unexpected code " + std::string(code_name(e.code())) + ": " + m;
  if (m.starts_with("age header MAC")) return "HMAC failure";
  if (m.starts_with("age header:")) return "header failure";
  if (m.starts_with("age payload:")) return "payload failure";
  if (m.starts_with("age armor:")) return "armor failure";
  return "unexpected message: " + m;
}

struct KeyPair {
  AgeIdentity id;
  AgeRecipient r;
};
KeyPair fresh() {
  AgeKeyPair kp = generate_age_identity();
  return {parse_age_identity(kp.secret), parse_age_recipient(kp.recipient)};
}

}  // namespace

TEST_CASE("age testkit: every vector gives its expected outcome") {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (auto& e : fs::directory_iterator(MEVB_AGE_TESTKIT_DIR)) {
    std::string n = e.path().filename().string();
    if (n != "LICENSE" && n != "README.md") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 110);
  for (const auto& p : files) {
    std::string all = testutil::slurp(p.string());
    size_t sep = all.find("\n\n");
    REQUIRE(sep != std::string::npos);
    std::string head = all.substr(0, sep + 1), body = all.substr(sep + 2);
    std::string expect, payload;
    std::vector<AgeIdentity> ids;
    for (size_t pos = 0; pos < head.size();) {
      size_t nl = head.find('\n', pos);
      std::string line = head.substr(pos, nl - pos);
      pos = nl + 1;
      size_t colon = line.find(": ");
      std::string k = line.substr(0, colon), v = line.substr(colon + 2);
      if (k == "expect") expect = v;
      if (k == "payload") payload = v;
      if (k == "identity") ids.push_back(parse_age_identity(v));
      if (k == "passphrase") ids.push_back(age_passphrase_identity(v));
    }
    std::string got;
    // Whole, and in 7-byte pieces with a 3-byte output buffer.
    for (size_t step : {size_t(1) << 20, size_t(7)}) {
      std::string out;
      try {
        out = decrypt(ids, body, step, step == 7 ? 3 : 1 << 20);
        got = sha256_hex(out) == payload ? "success" : "success with the wrong payload";
      } catch (const Error& e) {
        got = outcome_of(e);
      }
      INFO(p.filename().string(), " in pieces of ", step);
      CHECK(got == expect);
    }
  }
}

TEST_CASE("age round trips: sizes, recipients, piece sizes") {
  KeyPair a = fresh(), b = fresh(), c = fresh();
  for (size_t n : {size_t(0), size_t(1), size_t(65535), size_t(65536), size_t(65537), size_t(3 * 1024 * 1024 + 17)}) {
    std::string plain = plain_of(n, n);
    for (int nr : {1, 3}) {
      std::vector<AgeRecipient> rs{a.r};
      if (nr == 3) rs = {b.r, c.r, a.r};
      for (size_t step : {size_t(1), size_t(4093), size_t(1 << 20)}) {
        if (step == 1 && n > 70000) continue;  // 1-byte pieces of 3 MiB: covered by the smaller sizes
        INFO("size ", n, " recipients ", nr, " step ", step);
        std::string enc = encrypt(rs, plain, step, step == 1 ? 1 : 4099);
        // One chunk per started 64 KiB (one empty chunk for an empty file), 16 bytes of tag each.
        size_t chunks = n == 0 ? 1 : (n + 65535) / 65536;
        CHECK(enc.size() > n + chunks * 16 + 16);
        CHECK(enc.substr(0, 22) == "age-encryption.org/v1\n");
        CHECK(decrypt({a.id}, enc, step == 1 ? 1 : 5011, step == 1 ? 1 : 777) == plain);
        if (nr == 3) {
          CHECK(decrypt({c.id}, enc) == plain);
          CHECK(decrypt({b.id}, enc) == plain);
        }
      }
    }
  }
}

TEST_CASE("age: a passphrase recipient round-trips, a wrong passphrase does not match") {
  std::string plain = plain_of(70000);
  std::string enc = encrypt({age_passphrase_recipient("correct horse", 10)}, plain);
  CHECK(enc.find("\n-> scrypt ") != std::string::npos);
  CHECK(decrypt({age_passphrase_identity("correct horse")}, enc) == plain);
  CHECK_THROWS_WITH_AS(decrypt({age_passphrase_identity("wrong")}, enc), doctest::Contains("no identity matches"),
                       Error);
  KeyPair a = fresh();
  CHECK_THROWS_WITH_AS(make_age_encryptor({a.r, age_passphrase_recipient("x", 10)}),
                       doctest::Contains("passphrase recipient must be the only"), Error);
}

TEST_CASE("age: a flipped bit anywhere in header or payload fails") {
  KeyPair a = fresh(), b = fresh();
  std::string plain = plain_of(65536 + 100, 3);
  std::string enc = encrypt({a.r, b.r}, plain);
  // Every byte of the header and nonce, and a spread of payload positions (both chunks, both tags).
  size_t header_end = enc.find("\n---") + 1;
  header_end = enc.find('\n', header_end) + 1 + 16;
  std::vector<size_t> positions;
  for (size_t i = 0; i < header_end; ++i) positions.push_back(i);
  for (size_t i = header_end; i < enc.size(); i += 997) positions.push_back(i);
  positions.push_back(header_end + 65536 + 15);
  positions.push_back(enc.size() - 1);
  for (size_t i : positions) {
    for (int bit : {0, 5}) {
      std::string bad = enc;
      bad[i] = char(bad[i] ^ (1 << bit));
      bool failed = false;
      try {
        decrypt({a.id}, bad);
      } catch (const Error& e) {
        failed = e.code() == Code::corrupt || e.code() == Code::auth;
      }
      INFO("byte ", i, " bit ", bit);
      CHECK(failed);
    }
  }
}

TEST_CASE("age: truncation at a chunk boundary or anywhere fails") {
  KeyPair a = fresh();
  std::string plain = plain_of(3 * 65536, 9);
  std::string enc = encrypt({a.r}, plain);
  size_t payload = enc.find('\n', enc.find("\n---") + 1) + 1 + 16;
  for (size_t cut : {payload, payload + 65552, payload + 2 * 65552, payload + 2 * 65552 + 1, enc.size() - 1,
                     payload - 1, size_t(10)}) {
    INFO("cut at ", cut, " of ", enc.size());
    CHECK_THROWS_AS(decrypt({a.id}, enc.substr(0, cut)), Error);
  }
  CHECK_THROWS_WITH_AS(decrypt({a.id}, enc.substr(0, payload + 65552)), doctest::Contains("age payload:"), Error);
  CHECK_THROWS_WITH_AS(decrypt({a.id}, enc + "x"), doctest::Contains("trailing data"), Error);
}

TEST_CASE("age: nothing of a chunk whose tag fails is emitted") {
  KeyPair a = fresh();
  std::string plain = plain_of(65536 + 5000, 11);
  std::string enc = encrypt({a.r}, plain);
  size_t payload = enc.find('\n', enc.find("\n---") + 1) + 1 + 16;
  std::string bad = enc;
  bad[payload + 65552 + 100] ^= 1;  // inside the second chunk
  for (size_t step : {size_t(1), size_t(65552), size_t(1 << 20)}) {
    auto f = make_age_decryptor({a.id});
    std::string out;
    CHECK_THROWS_WITH_AS(drive(*f, bad, step, 4096, out), doctest::Contains("chunk 1 failed authentication"), Error);
    CHECK(out.size() <= 65536);
    CHECK(out == plain.substr(0, out.size()));
  }
}

TEST_CASE("age: recipient and identity strings") {
  AgeKeyPair kp = generate_age_identity();
  CHECK(kp.recipient.starts_with("age1"));
  CHECK(kp.secret.starts_with("AGE-SECRET-KEY-1"));
  CHECK(age_identity_recipient(parse_age_identity(kp.secret)) == kp.recipient);
  CHECK(format_age_recipient(parse_age_recipient(kp.recipient).public_key) == kp.recipient);
  // A testkit identity and its recipient, as age-keygen -y gives.
  AgeIdentity tk = parse_age_identity("AGE-SECRET-KEY-1XMWWC06LY3EE5RYTXM9MFLAZ2U56JJJ36S0MYPDRWSVLUL66MV4QX3S7F6");
  CHECK(age_identity_recipient(tk).starts_with("age1"));

  std::string bad = kp.recipient;
  bad[10] = bad[10] == 'q' ? 'p' : 'q';
  CHECK_THROWS_WITH_AS(parse_age_recipient(bad, "recipient 2"), doctest::Contains("recipient 2"), Error);
  CHECK_THROWS_WITH_AS(parse_age_recipient(bad, "recipient 2"), doctest::Contains("bad checksum"), Error);
  CHECK_THROWS_WITH_AS(parse_age_recipient("ssh-ed25519 AAAA"), doctest::Contains("does not start with age1"), Error);
  std::string upper = kp.recipient;
  for (char& ch : upper) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  CHECK_THROWS_AS(parse_age_recipient(upper), Error);

  std::string bad_secret = kp.secret;
  bad_secret[20] = bad_secret[20] == 'Q' ? 'P' : 'Q';
  try {
    parse_age_identity(bad_secret, "identity file line 3");
    FAIL("accepted a bad checksum");
  } catch (const Error& e) {
    CHECK(e.code() == Code::invalid_argument);
    std::string m = e.what();
    CHECK(m.find("identity file line 3") != std::string::npos);
    CHECK(m.find("bad checksum") != std::string::npos);
    CHECK(m.find(bad_secret.substr(16)) == std::string::npos);  // never echoes the secret
  }
}

TEST_CASE("age: identity files as age-keygen writes them") {
  AgeKeyPair a = generate_age_identity(), b = generate_age_identity();
  std::string text = "# created: 2026-01-01T00:00:00Z\n# public key: " + a.recipient + "\n" + a.secret +
                     "\n\n# second\r\n" + b.secret + "\r\n";
  auto ids = parse_age_identity_file(text);
  REQUIRE(ids.size() == 2);
  CHECK(age_identity_recipient(ids[1]) == b.recipient);
  CHECK_THROWS_WITH_AS(parse_age_identity_file("# only comments\n\n"), doctest::Contains("no AGE-SECRET-KEY-1"),
                       Error);
  CHECK_THROWS_WITH_AS(parse_age_identity_file("# x\n" + a.secret + "\nnot a key\n"),
                       doctest::Contains("identity file line 3"), Error);
  // A file decrypts with whichever of its identities matches.
  std::string enc = encrypt({parse_age_recipient(b.recipient)}, "hello");
  CHECK(decrypt(ids, enc) == "hello");
}
