// Encrypted artifacts in a repository: publish encrypts after compression, the manifest
// records it, read_artifact decrypts with the identity and refuses what it cannot trust.
#include <doctest/doctest.h>

#include <chrono>
#include <fstream>

#include "../helpers.hpp"
#include "mevbackup/encryption.hpp"

using namespace mevbackup;
using testutil::FixedClock;
using testutil::random_bytes;
using testutil::TempDir;

namespace {

ArtifactSpec export_spec() {
  ArtifactSpec s;
  s.kind = "export";
  s.dir = "export";
  s.name_prefix = "svc";
  s.extension = ".jsonl";
  s.format = "jsonl";
  return s;
}

std::shared_ptr<Encryption> keys(const AgeKeyPair& kp, bool with_identity) {
  auto e = std::make_shared<Encryption>();
  e->add_recipient(kp.recipient);
  if (with_identity) e->identities.push_back(parse_age_identity(kp.secret));
  return e;
}

void write_mode(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream(path) << text;
  ::chmod(path.c_str(), mode);
}

}  // namespace

TEST_CASE("an encrypted artifact: .age name, manifest record, checksums of the stored bytes, round trip") {
  TempDir dir;
  FixedClock clock("2026-12-01T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  AgeKeyPair kp = generate_age_identity();
  auto data = random_bytes(300000);
  RunContext ctx;
  ctx.encryption = keys(kp, false);  // the backup host: public key only
  MemorySource src(data);
  Manifest m = repo.publish(src, export_spec(), ctx, {});
  CHECK(m.path == "export/svc_20261201_020000.jsonl.gz.age");
  CHECK(m.encryption == "age");
  CHECK(m.recipients == std::vector<std::string>{kp.recipient});
  std::string stored = testutil::slurp(dir / m.path);
  CHECK(stored.rfind("age-encryption.org/v1\n", 0) == 0);
  CHECK(m.size == stored.size());
  CHECK(m.sha256 == Sha256::of(Bytes(reinterpret_cast<const std::byte*>(stored.data()), stored.size())));
  CHECK(m.payload_sha256 == Sha256::of(Bytes(data.data(), data.size())));
  Manifest again = Manifest::parse(m.to_string(), "test");
  CHECK(again.encryption == "age");
  CHECK(again.recipients == m.recipients);
  CHECK(m.to_json()["encrypted"] == true);

  SUBCASE("without an identity the read fails naming the backup and its recipient; the sink is not committed") {
    MemorySink sink;
    RunContext r;
    r.encryption = keys(kp, false);
    try {
      read_artifact(repo.storage(), m, sink, r);
      FAIL("read without identity");
    } catch (const Error& e) {
      CHECK(e.code() == Code::auth);
      CHECK(std::string(e.what()).find(kp.recipient) != std::string::npos);
      CHECK(std::string(e.what()).find(m.id) != std::string::npos);
    }
    CHECK(!sink.committed);
  }
  SUBCASE("with the identity it comes back as it was") {
    MemorySink sink;
    RunContext r;
    r.encryption = keys(kp, true);
    read_artifact(repo.storage(), m, sink, r);
    CHECK(sink.committed);
    CHECK(sink.data == data);
  }
  SUBCASE("another identity is refused (auth)") {
    MemorySink sink;
    RunContext r;
    r.encryption = keys(generate_age_identity(), true);
    CHECK_THROWS_AS(read_artifact(repo.storage(), m, sink, r), Error);
    CHECK(!sink.committed);
  }
  SUBCASE("a manifest saying it is not encrypted is refused with that message") {
    Manifest lie = m;
    lie.encryption.clear();
    lie.recipients.clear();
    MemorySink sink;
    try {
      read_artifact(repo.storage(), lie, sink, {});
      FAIL("read of a mislabelled artifact");
    } catch (const Error& e) {
      CHECK(e.code() == Code::corrupt);
      CHECK(std::string(e.what()).find("age-encrypted but its manifest says it is not encrypted") !=
            std::string::npos);
    }
    CHECK(!sink.committed);
  }
}

TEST_CASE("a plaintext manifest without the field is not encrypted; \"encrypted\": true needs a format") {
  nlohmann::json j = nlohmann::json::parse(R"({"manifest_version":1,"id":"a","kind":"postgres","path":"database/a.dump.gz",
    "format":"pg_dump-custom","compression":"gzip","size":1,"sha256":"0000000000000000000000000000000000000000000000000000000000000000",
    "payload_size":1,"payload_sha256":"x","started_at":"t","finished_at":"t","source_name":"a"})");
  CHECK(Manifest::from_json(j, "m").encryption.empty());
  j["encrypted"] = true;
  CHECK_THROWS_WITH_AS(Manifest::from_json(j, "m"), doctest::Contains("\"encryption\" does not name its format"),
                       Error);
  j["encrypted"] = "yes";
  CHECK_THROWS_WITH_AS(Manifest::from_json(j, "m"), doctest::Contains("not true or false"), Error);
}

TEST_CASE("key files: identities others may read, bad recipients and empty files are refused, naming them") {
  TempDir dir;
  AgeKeyPair kp = generate_age_identity();
  std::string id = dir.path() + "/id.txt";
  write_mode(id, "# created by test\n" + kp.secret + "\n", 0640);
  Encryption e;
  try {
    e.add_identity_file(id);
    FAIL("group-readable identity accepted");
  } catch (const Error& err) {
    CHECK(err.code() == Code::permission);
    CHECK(std::string(err.what()).find("0640") != std::string::npos);
    CHECK(std::string(err.what()).find(kp.secret) == std::string::npos);
  }
  ::chmod(id.c_str(), 0600);
  e.add_identity_file(id);
  CHECK(e.identities.size() == 1);
  CHECK(age_identity_recipient(e.identities[0]) == kp.recipient);

  std::string rf = dir.path() + "/recipients.txt";
  write_mode(rf, "# team\n\n" + kp.recipient + "\n  " + generate_age_identity().recipient + "  \n", 0644);
  e.add_recipients_file(rf);
  CHECK(e.recipients.size() == 2);
  write_mode(rf, kp.recipient + "\nage1notakey\n", 0644);
  CHECK_THROWS_WITH_AS(e.add_recipients_file(rf), doctest::Contains("line 2"), Error);
  write_mode(rf, "# nothing\n", 0644);
  CHECK_THROWS_WITH_AS(e.add_recipients_file(rf), doctest::Contains("holds no recipient"), Error);
  std::string broken = kp.recipient;
  broken.back() = broken.back() == 'q' ? 'p' : 'q';
  CHECK_THROWS_AS(Encryption{}.add_recipient(broken), Error);

  std::string pf = dir.path() + "/pass";
  write_mode(pf, "\n", 0600);
  CHECK_THROWS_WITH_AS(Encryption{}.set_passphrase_file(pf), doctest::Contains("holds no passphrase"), Error);
  write_mode(pf, "hunter2 but longer\n", 0600);
  Encryption with_pass;
  with_pass.set_passphrase_file(pf);
  CHECK(with_pass.recipient_names == std::vector<std::string>{"scrypt"});
  CHECK_THROWS_WITH_AS(with_pass.add_recipient(kp.recipient), doctest::Contains("cannot be combined"), Error);
}

TEST_CASE("FilterSource pulls bytes through a filter, and refuses trailing data after the filter's end") {
  AgeKeyPair kp = generate_age_identity();
  auto data = random_bytes(200000, 7);
  // Encrypt with a pipeline, decrypt with a pull-side FilterSource.
  MemorySource plain(data);
  MemorySink enc_sink;
  std::vector<AgeRecipient> rs{parse_age_recipient(kp.recipient)};
  auto enc = make_age_encryptor(rs);
  Pipeline(plain).then(*enc).run(enc_sink);
  Sha256 raw_sha;
  auto make = [&](std::vector<std::byte> bytes) {
    return FilterSource(std::make_unique<MemorySource>(std::move(bytes), 1000),
                        make_age_decryptor({parse_age_identity(kp.secret)}), {&raw_sha});
  };
  {
    FilterSource fs = make(enc_sink.data);
    std::vector<std::byte> out, buf(777);
    while (size_t n = fs.read(MutBytes(buf.data(), buf.size()))) out.insert(out.end(), buf.begin(), buf.begin() + n);
    CHECK(out == data);
    CHECK(raw_sha.hex() == Sha256::of(Bytes(enc_sink.data.data(), enc_sink.data.size())));
  }
  auto longer = enc_sink.data;
  longer.push_back(std::byte{'x'});
  FilterSource bad = make(longer);
  std::vector<std::byte> buf(4096);
  CHECK_THROWS_AS(([&] { while (bad.read(MutBytes(buf.data(), buf.size()))) {} }()), Error);
  PeekSource peek(std::make_unique<MemorySource>(enc_sink.data, 5), 22);
  CHECK(peek.head() == "age-encryption.org/v1\n");
  std::vector<std::byte> all, b2(100);
  while (size_t n = peek.read(MutBytes(b2.data(), b2.size()))) all.insert(all.end(), b2.begin(), b2.begin() + n);
  CHECK(all == enc_sink.data);
}

TEST_CASE("rates parse with units, and nonsense is refused naming it") {
  CHECK(parse_rate("20MiB/s") == 20ull * 1048576);
  CHECK(parse_rate("500KiB/s") == 500ull * 1024);
  CHECK(parse_rate("1.5MB/s") == 1500000);
  CHECK(parse_rate("1000000") == 1000000);
  CHECK(parse_rate("2G") == 2000000000ull);
  for (const char* bad : {"0", "fast", "", "-1MiB/s", "1.2.3", "10 MiB/s", "5 parsecs", "0.1", ".", ".MiB/s", "/s"})
    CHECK_THROWS_WITH_AS(parse_rate(bad), doctest::Contains("is not a rate above 0"), Error);
  CHECK_THROWS_AS(make_throttle(0), Error);
}

TEST_CASE("a throttle holds the long-run rate and passes the bytes unchanged") {
  auto data = random_bytes(3 * 1048576, 11, false);
  MemorySource src(data);
  MemorySink sink;
  auto t = make_throttle(2 * 1048576);
  auto start = std::chrono::steady_clock::now();
  Pipeline(src).then(*t).run(sink);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(sink.data == data);
  // 3 MiB at 2 MiB/s from an empty bucket: 1.5 s, less at most one bucket (0.2 MiB).
  CHECK(secs >= 1.35);
  CHECK(secs < 6.0);  // loose: a loaded machine is slower, never faster
}

TEST_CASE("age_rekey_header: the same payload opens with the new identity only; a forged header is refused") {
  AgeKeyPair a = generate_age_identity(), b = generate_age_identity();
  auto data = random_bytes(150000, 5);
  MemorySource plain(data);
  MemorySink enc;
  auto e = make_age_encryptor({parse_age_recipient(a.recipient)});
  Pipeline(plain).then(*e).run(enc);
  std::string file = testutil::to_string(enc.data);
  CHECK(age_header_size(file.substr(0, 10)) == 0);  // not all of it yet
  size_t hs = age_header_size(file);
  REQUIRE(hs > 0);
  CHECK(file.substr(hs - 1, 1) == "\n");
  std::string hdr = age_rekey_header(file.substr(0, hs), {parse_age_identity(a.secret)}, {parse_age_recipient(b.recipient)});
  std::string rekeyed = hdr + file.substr(hs);
  auto decrypt = [](const std::string& bytes, const AgeKeyPair& k) {
    std::vector<std::byte> v(reinterpret_cast<const std::byte*>(bytes.data()),
                             reinterpret_cast<const std::byte*>(bytes.data()) + bytes.size());
    MemorySource s(std::move(v));
    MemorySink out;
    auto d = make_age_decryptor({parse_age_identity(k.secret)});
    Pipeline(s).then(*d).run(out);
    return out.data;
  };
  CHECK(decrypt(rekeyed, b) == data);
  CHECK_THROWS_AS(decrypt(rekeyed, a), Error);
  CHECK_THROWS_AS(age_rekey_header(file.substr(0, hs), {parse_age_identity(b.secret)}, {parse_age_recipient(a.recipient)}),
                  Error);
  std::string forged = file.substr(0, hs);
  forged[hs - 5] = forged[hs - 5] == 'A' ? 'B' : 'A';  // the MAC
  CHECK_THROWS_AS(age_rekey_header(forged, {parse_age_identity(a.secret)}, {parse_age_recipient(b.recipient)}), Error);
  CHECK_THROWS_WITH_AS(age_header_size("PK\x03\x04 not age"), doctest::Contains("not a binary age file"), Error);
}
