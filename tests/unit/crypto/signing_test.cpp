// Ed25519 manifest signatures: what is covered, what breaks them, key files.
#include <doctest/doctest.h>

#include <fstream>

#include "../helpers.hpp"
#include "mevbackup/encryption.hpp"
#include "mevbackup/signing.hpp"

using namespace mevbackup;
using testutil::FixedClock;
using testutil::TempDir;

TEST_CASE("a manifest signature covers every member but itself, whatever the key order") {
  SigningKey k = SigningKey::generate();
  VerifyKey v = VerifyKey::from_pem(k.public_pem(), "test key");
  CHECK(v.key_id() == k.key_id());
  CHECK(k.key_id().size() == 16);
  nlohmann::json m = {{"id", "a"}, {"size", 10}, {"source", {{"z", 1}, {"a", "x"}}}, {"future_field", true}};
  sign_manifest(m, k);
  CHECK(m["signature"]["algorithm"] == "ed25519");
  CHECK(m["signature"]["key_id"] == k.key_id());
  CHECK(check_manifest_signature(m, {v}) == SignatureState::good);
  // Re-parsed from its pretty form (another member order on disk): still good.
  CHECK(check_manifest_signature(nlohmann::json::parse(m.dump(2)), {v}) == SignatureState::good);
  std::string why;
  nlohmann::json edited = m;
  edited["future_field"] = false;  // a field this version does not know is covered too
  CHECK(check_manifest_signature(edited, {v}, &why) == SignatureState::bad);
  CHECK(why.find("changed after it was signed") != std::string::npos);
  nlohmann::json stripped = m;
  stripped.erase("signature");
  CHECK(check_manifest_signature(stripped, {v}, &why) == SignatureState::unsigned_);
  SigningKey other = SigningKey::generate();
  nlohmann::json resigned = edited;
  sign_manifest(resigned, other);
  CHECK(check_manifest_signature(resigned, {v}, &why) == SignatureState::bad);
  CHECK(why.find(other.key_id()) != std::string::npos);
  // Either of two verify keys will do (rotation).
  CHECK(check_manifest_signature(resigned, {v, VerifyKey::from_pem(other.public_pem(), "o")}) == SignatureState::good);
  nlohmann::json garbage = m;
  garbage["signature"]["value"] = "!!!";
  CHECK(check_manifest_signature(garbage, {v}) == SignatureState::bad);
}

TEST_CASE("a repository with verify keys passes over unsigned manifests and refuses them by name") {
  TempDir dir;
  FixedClock clock("2026-12-01T02:00:00Z");
  SigningKey k = SigningKey::generate();
  auto signer = std::make_shared<Signing>();
  signer->key = std::make_shared<SigningKey>(k);
  Repository repo(make_local_storage(dir.path()), clock);
  ArtifactSpec spec;
  spec.kind = "export";
  spec.dir = "export";
  spec.name_prefix = "svc";
  repo.set_signing(signer);
  MemorySource a(testutil::random_bytes(1000, 1));
  Manifest good = repo.publish(a, spec, {}, {});
  CHECK(!good.signature_record.is_null());
  repo.set_signing(nullptr);  // a writer without the key
  clock.set("2026-12-01T03:00:00Z");
  MemorySource b(testutil::random_bytes(1000, 2));
  Manifest planted = repo.publish(b, spec, {}, {});

  auto checker = std::make_shared<Signing>();
  checker->verify_keys.push_back(VerifyKey::from_pem(k.public_pem(), "k"));
  repo.set_signing(checker);
  auto listed = repo.list();
  REQUIRE(listed.size() == 2);
  CHECK(listed[0].signature == SignatureState::good);
  CHECK(listed[1].signature == SignatureState::unsigned_);
  CHECK(repo.find("latest", "export").id == good.id);
  CHECK_THROWS_WITH_AS(repo.find(planted.id, "export"), doctest::Contains("not signed"), Error);
}

TEST_CASE("signing key files: PEM Ed25519 only, private ones mode 600, new files never replace old") {
  TempDir dir;
  SigningKey k = SigningKey::generate();
  std::string path = dir.path() + "/sk.pem";
  write_new_file(path, k.private_pem(), 0600);
  CHECK(SigningKey::from_pem_file(path).key_id() == k.key_id());
  CHECK(VerifyKey::from_pem_file(path).key_id() == k.key_id());  // a private file holds its public half
  CHECK_THROWS_WITH_AS(write_new_file(path, "x", 0600), doctest::Contains("already exists"), Error);
  ::chmod(path.c_str(), 0644);
  CHECK_THROWS_WITH_AS(SigningKey::from_pem_file(path), doctest::Contains("chmod 600"), Error);
  CHECK_THROWS_WITH_AS(SigningKey::from_pem("nope", "key X"), doctest::Contains("key X is not a PEM private key"), Error);
  std::string ident = dir.path() + "/id.txt";
  std::string recipient = generate_identity_file(ident);
  Encryption e;
  e.add_identity_file(ident);
  CHECK(age_identity_recipient(e.identities.at(0)) == recipient);
}
