// Signed manifests (Ed25519, OpenSSL): the backup host signs each manifest it writes
// with its signing key; a restore, verify, drill or prune given the verify key (the
// public half) refuses manifests that are unsigned or whose signature does not verify.
// Encryption alone cannot tell a planted backup from a real one: anyone holding the
// recipients' public keys can encrypt (docs/encryption.md, threat model).
//
// The signature is the manifest's member "signature": {"algorithm": "ed25519", "key_id":
// the first 16 hex digits of the SHA-256 of the raw public key, "value": base64}. It
// covers the manifest as compact JSON with sorted keys and without that member, which
// stock tools reproduce (docs/trust.md):
//   jq -cjS 'del(.signature)' M.manifest.json > signed.bin
//   jq -rj .signature.value M.manifest.json | base64 -d > sig.bin
//   openssl pkeyutl -verify -pubin -inkey verify.pem -rawin -in signed.bin -sigfile sig.bin
//
// Keys are PEM files as `openssl genpkey -algorithm ed25519` writes them (PKCS#8) and
// `openssl pkey -pubout` (SubjectPublicKeyInfo). A signing key file group or others may
// access is refused (read_private_file).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mevbackup {

class SigningKey {
 public:
  static SigningKey from_pem_file(const std::string& path);  // mode 600, PKCS#8 Ed25519
  static SigningKey from_pem(const std::string& pem, const std::string& what);
  static SigningKey generate();
  std::string private_pem() const;  // PKCS#8
  std::string public_pem() const;   // SubjectPublicKeyInfo
  const std::string& key_id() const { return key_id_; }
  std::string sign(const std::string& message) const;  // raw 64-byte signature

 private:
  std::shared_ptr<void> pkey_;  // EVP_PKEY*
  std::string key_id_;
};

class VerifyKey {
 public:
  static VerifyKey from_pem_file(const std::string& path);  // a public key, or a private one (its public half)
  static VerifyKey from_pem(const std::string& pem, const std::string& what);
  const std::string& key_id() const { return key_id_; }
  bool verify(const std::string& message, const std::string& signature) const;

 private:
  std::shared_ptr<void> pkey_;
  std::string key_id_;
};

// What the repository does with manifests: signs those it writes (when `key` is set),
// and checks those it reads against `verify_keys` (when there are any).
struct Signing {
  std::shared_ptr<const SigningKey> key;
  std::vector<VerifyKey> verify_keys;
  bool enforced() const { return !verify_keys.empty(); }
};

// The signing key file and verify key files a repository is opened with; nullptr when
// none is named.
std::shared_ptr<const Signing> load_signing(const std::string& key_file, const std::vector<std::string>& verify_key_files);

enum class SignatureState { unchecked, good, bad, unsigned_ };
const char* signature_state_name(SignatureState s);  // "unchecked", "good", "bad", "unsigned"

// The bytes a signature covers: `manifest` without "signature", compact, keys sorted.
std::string signed_bytes(const nlohmann::json& manifest);
// Adds (replaces) the "signature" member.
void sign_manifest(nlohmann::json& manifest, const SigningKey& key);
// Checks the "signature" member against the keys: good when one of them verifies it.
// `why` (optional) says what is wrong otherwise.
SignatureState check_manifest_signature(const nlohmann::json& manifest, const std::vector<VerifyKey>& keys,
                                        std::string* why = nullptr);

}  // namespace mevbackup
