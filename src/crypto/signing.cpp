// Ed25519 signatures of manifests (signing.hpp), on OpenSSL 3.
#include "mevbackup/signing.hpp"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include <fmt/format.h>

#include "mevbackup/encryption.hpp"  // read_private_file
#include "mevbackup/error.hpp"

namespace mevbackup {

namespace {

using Pkey = std::shared_ptr<void>;

Pkey wrap(EVP_PKEY* k) {
  return Pkey(k, [](void* p) { EVP_PKEY_free(static_cast<EVP_PKEY*>(p)); });
}
EVP_PKEY* raw(const Pkey& p) { return static_cast<EVP_PKEY*>(p.get()); }

std::string key_id_of(EVP_PKEY* k) {
  unsigned char pub[32];
  size_t n = sizeof pub;
  if (EVP_PKEY_get_raw_public_key(k, pub, &n) != 1 || n != 32)
    throw Error(Code::internal, "cannot read the Ed25519 public key");
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(pub, n, digest);
  std::string out;
  for (int i = 0; i < 8; ++i) out += fmt::format("{:02x}", digest[i]);
  return out;
}

void require_ed25519(EVP_PKEY* k, const std::string& what) {
  if (EVP_PKEY_id(k) != EVP_PKEY_ED25519) {
    EVP_PKEY_free(k);
    throw Error(Code::invalid_argument, fmt::format("{} is not an Ed25519 key (openssl genpkey -algorithm ed25519)", what));
  }
}

std::string bio_text(BIO* b) {
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  return std::string(p, static_cast<size_t>(n));
}

std::string b64(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

bool unb64(const std::string& text, std::string& out) {
  if (text.empty() || text.size() % 4) return false;
  if (text.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != std::string::npos)
    return false;
  out.assign(text.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return false;
  size_t pad = text.size() >= 2 && text[text.size() - 1] == '=' ? (text[text.size() - 2] == '=' ? 2 : 1) : 0;
  out.resize(static_cast<size_t>(n) - pad);
  return true;
}

}  // namespace

SigningKey SigningKey::from_pem(const std::string& pem, const std::string& what) {
  BIO* b = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (!b) throw std::bad_alloc();
  EVP_PKEY* k = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  if (!k)
    throw Error(Code::invalid_argument,
                fmt::format("{} is not a PEM private key (openssl genpkey -algorithm ed25519)", what));
  require_ed25519(k, what);
  SigningKey s;
  s.pkey_ = wrap(k);
  s.key_id_ = key_id_of(k);
  return s;
}

SigningKey SigningKey::from_pem_file(const std::string& path) {
  std::string pem = read_private_file(path, "signing key file");
  try {
    SigningKey k = from_pem(pem, fmt::format("signing key file {}", path));
    OPENSSL_cleanse(pem.data(), pem.size());
    return k;
  } catch (...) {
    OPENSSL_cleanse(pem.data(), pem.size());
    throw;
  }
}

SigningKey SigningKey::generate() {
  EVP_PKEY* k = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (!k) throw Error(Code::internal, "cannot generate an Ed25519 key");
  SigningKey s;
  s.pkey_ = wrap(k);
  s.key_id_ = key_id_of(k);
  return s;
}

std::string SigningKey::private_pem() const {
  BIO* b = BIO_new(BIO_s_secmem());
  if (!b) b = BIO_new(BIO_s_mem());
  if (!b || PEM_write_bio_PrivateKey(b, raw(pkey_), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    BIO_free(b);
    throw Error(Code::internal, "cannot write the signing key");
  }
  std::string out = bio_text(b);
  BIO_free(b);
  return out;
}

std::string SigningKey::public_pem() const {
  BIO* b = BIO_new(BIO_s_mem());
  if (!b || PEM_write_bio_PUBKEY(b, raw(pkey_)) != 1) {
    BIO_free(b);
    throw Error(Code::internal, "cannot write the verify key");
  }
  std::string out = bio_text(b);
  BIO_free(b);
  return out;
}

std::string SigningKey::sign(const std::string& message) const {
  EVP_MD_CTX* c = EVP_MD_CTX_new();
  std::string sig(64, '\0');
  size_t n = sig.size();
  bool ok = c && EVP_DigestSignInit(c, nullptr, nullptr, nullptr, raw(pkey_)) == 1 &&
            EVP_DigestSign(c, reinterpret_cast<unsigned char*>(sig.data()), &n,
                           reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
  EVP_MD_CTX_free(c);
  if (!ok || n != 64) throw Error(Code::internal, "Ed25519 signing failed");
  return sig;
}

VerifyKey VerifyKey::from_pem(const std::string& pem, const std::string& what) {
  BIO* b = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (!b) throw std::bad_alloc();
  EVP_PKEY* k = PEM_read_bio_PUBKEY(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  if (!k) {
    // A private key file holds its public half too.
    b = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    if (!b) throw std::bad_alloc();
    k = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
    BIO_free(b);
  }
  if (!k) throw Error(Code::invalid_argument, fmt::format("{} is not a PEM public key (openssl pkey -pubout)", what));
  require_ed25519(k, what);
  VerifyKey v;
  unsigned char pub[32];
  size_t n = sizeof pub;
  if (EVP_PKEY_get_raw_public_key(k, pub, &n) != 1) {
    EVP_PKEY_free(k);
    throw Error(Code::invalid_argument, fmt::format("{}: cannot read its public key", what));
  }
  EVP_PKEY_free(k);
  EVP_PKEY* p = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, pub, n);
  if (!p) throw std::bad_alloc();
  v.pkey_ = wrap(p);
  v.key_id_ = key_id_of(p);
  return v;
}

VerifyKey VerifyKey::from_pem_file(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw sys_error(errno, fmt::format("open verify key file {}", path));
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0 && text.size() < (1u << 20)) text.append(buf, n);
  std::fclose(f);
  return from_pem(text, fmt::format("verify key file {}", path));
}

bool VerifyKey::verify(const std::string& message, const std::string& signature) const {
  if (signature.size() != 64) return false;
  EVP_MD_CTX* c = EVP_MD_CTX_new();
  bool ok = c && EVP_DigestVerifyInit(c, nullptr, nullptr, nullptr, raw(pkey_)) == 1 &&
            EVP_DigestVerify(c, reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                             reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
  EVP_MD_CTX_free(c);
  return ok;
}

const char* signature_state_name(SignatureState s) {
  switch (s) {
    case SignatureState::good: return "good";
    case SignatureState::bad: return "bad";
    case SignatureState::unsigned_: return "unsigned";
    default: return "unchecked";
  }
}

std::string signed_bytes(const nlohmann::json& manifest) {
  nlohmann::json j = manifest;
  if (j.is_object()) j.erase("signature");
  return j.dump();  // compact; nlohmann::json keeps object keys sorted
}

void sign_manifest(nlohmann::json& manifest, const SigningKey& key) {
  std::string sig = key.sign(signed_bytes(manifest));
  manifest["signature"] = {{"algorithm", "ed25519"}, {"key_id", key.key_id()}, {"value", b64(sig)}};
}

std::shared_ptr<const Signing> load_signing(const std::string& key_file, const std::vector<std::string>& verify_key_files) {
  auto s = std::make_shared<Signing>();
  if (!key_file.empty()) s->key = std::make_shared<SigningKey>(SigningKey::from_pem_file(key_file));
  for (auto& f : verify_key_files) s->verify_keys.push_back(VerifyKey::from_pem_file(f));
  if (!s->key && s->verify_keys.empty()) return nullptr;
  return s;
}

SignatureState check_manifest_signature(const nlohmann::json& manifest, const std::vector<VerifyKey>& keys,
                                        std::string* why) {
  auto say = [&](SignatureState s, const std::string& w) {
    if (why) *why = w;
    return s;
  };
  auto it = manifest.is_object() ? manifest.find("signature") : manifest.end();
  if (it == manifest.end()) return say(SignatureState::unsigned_, "the manifest is not signed");
  const nlohmann::json& s = *it;
  if (!s.is_object() || s.value("algorithm", "") != "ed25519" || !s.contains("value") || !s["value"].is_string())
    return say(SignatureState::bad, "its signature is not an Ed25519 signature record");
  std::string sig;
  if (!unb64(s["value"].get<std::string>(), sig) || sig.size() != 64)
    return say(SignatureState::bad, "its signature is not 64 bytes of base64");
  std::string msg = signed_bytes(manifest);
  for (auto& k : keys)
    if (k.verify(msg, sig)) return say(SignatureState::good, "");
  std::string id = s.contains("key_id") && s["key_id"].is_string() ? s["key_id"].get<std::string>() : "?";
  bool known = false;
  for (auto& k : keys) known = known || k.key_id() == id;
  return say(SignatureState::bad, known ? fmt::format("its signature (key {}) does not verify: the manifest was changed "
                                                      "after it was signed",
                                                      id)
                                        : fmt::format("it is signed by key {}, not by a verify key given", id));
}

}  // namespace mevbackup
