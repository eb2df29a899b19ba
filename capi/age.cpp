// The age filters of the C API (mevb_filter_new_age_*) and key generation.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <cstring>

#include "mevbackup/age.hpp"
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

// Reads an identity file that only its owner may read (as ssh does with private keys).
std::string read_private_file(const char* path) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) throw sys_error(errno, fmt::format("open identity file {}", path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw sys_error(e, fmt::format("stat identity file {}", path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw invalid(fmt::format("identity file {} is not a regular file", path));
  }
  if (st.st_mode & 077) {
    ::close(fd);
    throw Error(Code::permission,
                fmt::format("identity file {} has mode {:04o}: group and others must have no access (chmod 600)", path,
                            unsigned(st.st_mode & 07777)));
  }
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      OPENSSL_cleanse(buf, sizeof buf);
      OPENSSL_cleanse(text.data(), text.size());
      throw sys_error(e, fmt::format("read identity file {}", path));
    }
    if (n == 0) break;
    if (text.size() + size_t(n) > (1u << 20)) {
      ::close(fd);
      OPENSSL_cleanse(buf, sizeof buf);
      OPENSSL_cleanse(text.data(), text.size());
      throw invalid(fmt::format("identity file {} is larger than 1 MiB", path));
    }
    // Grow by hand so that no reallocation leaves an unwiped copy behind.
    if (text.capacity() < text.size() + size_t(n)) {
      std::string bigger;
      bigger.reserve(2 * (text.size() + size_t(n)));
      bigger = text;
      OPENSSL_cleanse(text.data(), text.size());
      text.swap(bigger);
    }
    text.append(buf, size_t(n));
  }
  OPENSSL_cleanse(buf, sizeof buf);
  ::close(fd);
  return text;
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
    std::string text = read_private_file(path);
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
