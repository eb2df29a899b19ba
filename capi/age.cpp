// The age filters of the C API (mevb_filter_new_age_*) and key generation.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <cstring>

#include "mevbackup/age.hpp"
#include "mevbackup/encryption.hpp"
#include "mevbackup/signing.hpp"
#include "stream_internal.hpp"

using namespace mevb_capi;

namespace {

// Wipes a string holding a secret when it goes out of scope.
struct WipeString {
  std::string& s;
  ~WipeString() { OPENSSL_cleanse(s.data(), s.size()); }
};

mevb_filter* new_decryptor(std::string_view identities_text) {
  auto f = std::make_unique<mevb_filter>();
  f->label = "age decryptor";
  f->filter = make_age_decryptor(parse_age_identity_file(identities_text));
  return f.release();
}

}  // namespace

int mevb_filter_new_age_encrypt(mevb_filter** out, const char* const* recipients, size_t n) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    if (n == 0) throw invalid("age encryptor: at least one recipient is needed");
    require(recipients, "recipients");
    std::vector<AgeRecipient> rs;
    for (size_t i = 0; i < n; ++i) {
      std::string what = fmt::format("recipient {}", i + 1);
      require(recipients[i], what.c_str());
      rs.push_back(parse_age_recipient(recipients[i], what));
    }
    auto f = std::make_unique<mevb_filter>();
    f->label = fmt::format("age encryptor ({} recipient{})", n, n == 1 ? "" : "s");
    f->filter = make_age_encryptor(std::move(rs));
    *out = f.release();
  });
}

int mevb_filter_new_age_decrypt(mevb_filter** out, const char* identities_text) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(identities_text, "identities_text");
    *out = new_decryptor(identities_text);
  });
}

int mevb_filter_new_age_decrypt_file(mevb_filter** out, const char* path) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(path, "path");
    std::string text = read_private_file(path, "identity file");
    WipeString w{text};
    try {
      *out = new_decryptor(text);
    } catch (const Error& e) {
      throw Error(e.code(), fmt::format("{}: {}", path, e.what()), e.retriable());
    }
  });
}

int mevb_age_generate(char* secret, size_t secret_size, char* recipient, size_t recipient_size) {
  return guard([&] {
    require(secret, "secret");
    require(recipient, "recipient");
    if (secret_size < MEVB_AGE_SECRET_SIZE)
      throw invalid(fmt::format("secret buffer of {} bytes is too small: {} needed", secret_size, MEVB_AGE_SECRET_SIZE));
    if (recipient_size < MEVB_AGE_RECIPIENT_SIZE)
      throw invalid(
          fmt::format("recipient buffer of {} bytes is too small: {} needed", recipient_size, MEVB_AGE_RECIPIENT_SIZE));
    AgeKeyPair kp = generate_age_identity();
    std::memcpy(secret, kp.secret.c_str(), kp.secret.size() + 1);
    std::memcpy(recipient, kp.recipient.c_str(), kp.recipient.size() + 1);
  });
}

int mevb_key_generate_identity(const char* identity_path, char* recipient, size_t recipient_size) {
  return guard([&] {
    require(identity_path, "identity_path");
    require(recipient, "recipient");
    if (recipient_size < MEVB_AGE_RECIPIENT_SIZE)
      throw invalid(
          fmt::format("recipient buffer of {} bytes is too small: {} needed", recipient_size, MEVB_AGE_RECIPIENT_SIZE));
    std::string r = generate_identity_file(identity_path);
    std::memcpy(recipient, r.c_str(), r.size() + 1);
  });
}

int mevb_key_generate_signing(const char* signing_key_path, const char* verify_key_path, char* key_id,
                              size_t key_id_size) {
  return guard([&] {
    require(signing_key_path, "signing_key_path");
    require(verify_key_path, "verify_key_path");
    require(key_id, "key_id");
    if (key_id_size < MEVB_KEY_ID_SIZE)
      throw invalid(fmt::format("key_id buffer of {} bytes is too small: {} needed", key_id_size, MEVB_KEY_ID_SIZE));
    if (std::string(signing_key_path) == verify_key_path)
      throw invalid("the signing key and the verify key need two files");
    SigningKey k = SigningKey::generate();
    std::string pem = k.private_pem();
    WipeString w{pem};
    write_new_file(signing_key_path, pem, 0600);
    try {
      write_new_file(verify_key_path, k.public_pem(), 0644);
    } catch (...) {
      ::unlink(signing_key_path);
      throw;
    }
    std::memcpy(key_id, k.key_id().c_str(), k.key_id().size() + 1);
  });
}
