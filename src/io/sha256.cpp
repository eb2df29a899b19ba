#include <openssl/evp.h>

#include "mevbackup/digest.hpp"

namespace mevbackup {

struct Sha256::Impl {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Impl() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  if (!impl_->ctx || EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr) != 1)
    throw Error(Code::internal, "SHA-256: cannot initialise OpenSSL digest");
}
Sha256::~Sha256() = default;

void Sha256::update(Bytes data) {
  if (EVP_DigestUpdate(impl_->ctx, data.data(), data.size()) != 1)
    throw Error(Code::internal, "SHA-256: digest update failed");
}

void Sha256::finish() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(impl_->ctx, md, &len) != 1) throw Error(Code::internal, "SHA-256: digest final failed");
  static const char* hexd = "0123456789abcdef";
  hex_.clear();
  for (unsigned i = 0; i < len; ++i) {
    hex_.push_back(hexd[md[i] >> 4]);
    hex_.push_back(hexd[md[i] & 15]);
  }
}

std::string Sha256::of(Bytes data) {
  Sha256 h;
  h.update(data);
  h.finish();
  return h.hex();
}

}  // namespace mevbackup
