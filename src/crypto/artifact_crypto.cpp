// Encryption of artifacts: the RunContext's keys, the manifest's record, the filters.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <cerrno>
#include <ctime>
#include <cstring>

#include <fmt/format.h>

#include "mevbackup/encryption.hpp"
#include "mevbackup/error.hpp"

namespace mevbackup {

namespace {

struct WipeString {
  std::string& s;
  ~WipeString() { OPENSSL_cleanse(s.data(), s.size()); }
};

constexpr std::string_view kAgeMagic = "age-encryption.org/v1\n";
constexpr std::string_view kArmorMagic = "-----BEGIN AGE ENCRYPTED FILE-----";

}  // namespace

std::string read_private_file(const std::string& path, const std::string& what) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) throw sys_error(errno, fmt::format("open {} {}", what, path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw sys_error(e, fmt::format("stat {} {}", what, path));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw Error(Code::invalid_argument, fmt::format("{} {} is a directory", what, path));
  }
  if (S_ISREG(st.st_mode) && (st.st_mode & 077)) {
    ::close(fd);
    throw Error(Code::permission,
                fmt::format("{} {} has mode {:04o}: group and others must have no access (chmod 600)", what, path,
                            unsigned(st.st_mode & 07777)));
  }
  std::string text;
  text.reserve(64 * 1024);  // one buffer: no reallocation leaves an unwiped copy behind
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      OPENSSL_cleanse(buf, sizeof buf);
      OPENSSL_cleanse(text.data(), text.size());
      throw sys_error(e, fmt::format("read {} {}", what, path));
    }
    if (n == 0) break;
    if (text.size() + size_t(n) > text.capacity()) {
      if (text.size() + size_t(n) > (1u << 20)) {
        ::close(fd);
        OPENSSL_cleanse(buf, sizeof buf);
        OPENSSL_cleanse(text.data(), text.size());
        throw Error(Code::invalid_argument, fmt::format("{} {} is larger than 1 MiB", what, path));
      }
      std::string bigger;
      bigger.reserve(1u << 20);
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

void write_new_file(const std::string& path, const std::string& content, unsigned mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) {
    int e = errno;
    if (e == EEXIST) throw Error(Code::exists, fmt::format("{} already exists: refusing to replace a key file", path));
    throw sys_error(e, fmt::format("create {}", path));
  }
  bool ok = ::fchmod(fd, mode) == 0;  // exactly `mode`, whatever the umask
  size_t done = 0;
  while (ok && done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += size_t(n);
  }
  int e = errno;
  ok = ok && ::fsync(fd) == 0;
  if (!ok) e = errno;
  ok = ::close(fd) == 0 && ok;
  if (!ok) {
    ::unlink(path.c_str());
    throw sys_error(e, fmt::format("write {}", path));
  }
}

std::string generate_identity_file(const std::string& path) {
  AgeKeyPair kp = generate_age_identity();
  std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::string text = fmt::format("# created: {}\n# public key: {}\n{}\n", stamp, kp.recipient, kp.secret);
  WipeString w{text};
  write_new_file(path, text, 0600);
  return kp.recipient;
}

void Encryption::add_recipient(const std::string& text, const std::string& what) {
  AgeRecipient r = parse_age_recipient(text, what);
  for (auto& have : recipients)
    if (have.kind == AgeRecipient::Kind::scrypt)
      throw Error(Code::invalid_argument, "a passphrase cannot be combined with other recipients (as age)");
  recipients.push_back(r);
  recipient_names.push_back(format_age_recipient(r.public_key));
}

void Encryption::add_recipients_file(const std::string& path) {
  // Public keys: no permission check, but the same reader (bounded, no symlink tricks).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) throw sys_error(errno, fmt::format("open recipients file {}", path));
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      throw sys_error(e, fmt::format("read recipients file {}", path));
    }
    if (n == 0) break;
    text.append(buf, size_t(n));
    if (text.size() > (1u << 20)) {
      ::close(fd);
      throw Error(Code::invalid_argument, fmt::format("recipients file {} is larger than 1 MiB", path));
    }
  }
  ::close(fd);
  size_t line_no = 0, found = 0, pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() + 1 : nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t b = line.find_first_not_of(" \t"), e = line.find_last_not_of(" \t");
    line = b == std::string::npos ? "" : line.substr(b, e - b + 1);
    if (line.empty() || line[0] == '#') continue;
    add_recipient(line, fmt::format("recipients file {} line {}", path, line_no));
    ++found;
  }
  if (!found) throw Error(Code::invalid_argument, fmt::format("recipients file {} holds no recipient", path));
}

void Encryption::add_identity_file(const std::string& path) {
  std::string text = read_private_file(path, "identity file");
  WipeString w{text};
  try {
    for (auto& id : parse_age_identity_file(text)) identities.push_back(std::move(id));
  } catch (const Error& e) {
    throw Error(e.code(), fmt::format("identity file {}: {}", path, e.what()));
  }
}

std::shared_ptr<const Encryption> load_encryption(const EncryptionKeys& keys, const std::string& what) {
  auto e = std::make_shared<Encryption>();
  for (size_t i = 0; i < keys.recipients.size(); ++i)
    e->add_recipient(keys.recipients[i], fmt::format("{}[{}]", what, i));
  if (!keys.recipients_file.empty()) e->add_recipients_file(keys.recipients_file);
  for (auto& f : keys.identity_files) e->add_identity_file(f);
  if (!keys.passphrase_file.empty()) e->set_passphrase_file(keys.passphrase_file);
  if (e->recipients.empty() && e->identities.empty()) return nullptr;
  return e;
}

void Encryption::set_passphrase_file(const std::string& path) {
  std::string text = read_private_file(path, "passphrase file");
  WipeString w{text};
  std::string pass = text.substr(0, text.find('\n'));
  WipeString wp{pass};
  if (!pass.empty() && pass.back() == '\r') pass.pop_back();
  if (pass.empty()) throw Error(Code::invalid_argument, fmt::format("passphrase file {} holds no passphrase", path));
  if (!recipients.empty())
    throw Error(Code::invalid_argument, "a passphrase cannot be combined with other recipients (as age)");
  recipients.push_back(age_passphrase_recipient(pass));
  recipient_names.push_back("scrypt");
  identities.push_back(age_passphrase_identity(pass));
}

std::unique_ptr<Filter> artifact_encryptor(const Encryption* e) {
  if (!e || !e->encrypts()) return nullptr;
  return make_age_encryptor(e->recipients);
}

void record_encryption(Manifest& m, const Encryption* e) {
  if (!e || !e->encrypts()) {
    m.encryption.clear();
    m.recipients.clear();
    return;
  }
  m.encryption = "age";
  m.recipients = e->recipient_names;
}

std::unique_ptr<Filter> artifact_decryptor(const Manifest& m, const Encryption* e) {
  if (m.encryption.empty()) return nullptr;
  if (m.encryption != "age")
    throw Error(Code::unsupported, fmt::format("artifact {} is encrypted as \"{}\"; this library reads age", m.path,
                                               m.encryption));
  if (!e || e->identities.empty()) {
    std::string to;
    for (auto& r : m.recipients) to += (to.empty() ? "" : ", ") + r;
    throw Error(Code::auth, fmt::format("backup {} is encrypted (age, {}) to {}: an identity is needed to read it "
                                        "(--identity FILE)",
                                        m.id, m.path, to.empty() ? "unknown recipients" : to));
  }
  return make_age_decryptor(e->identities);
}

void PlaintextCheck::update(Bytes data) {
  if (done_) return;
  size_t want = kArmorMagic.size() - head_.size();
  head_.append(reinterpret_cast<const char*>(data.data()), std::min(want, data.size()));
  if (head_.size() >= kArmorMagic.size()) check();
}

void PlaintextCheck::finish() {
  if (!done_) check();
}

void PlaintextCheck::check() {
  done_ = true;
  auto starts = [&](std::string_view magic) { return head_.compare(0, magic.size(), magic) == 0; };
  if (head_.size() >= kAgeMagic.size() && starts(kAgeMagic))
    throw Error(Code::corrupt, fmt::format("artifact {} is age-encrypted but its manifest says it is not encrypted; "
                                           "refusing it",
                                           path_));
  if (starts(kArmorMagic))
    throw Error(Code::corrupt, fmt::format("artifact {} is age-encrypted (armored) but its manifest says it is not "
                                           "encrypted; refusing it",
                                           path_));
}

}  // namespace mevbackup
