// Encryption of artifacts at rest, in the age format (age.hpp; docs/encryption.md).
//
// A repository operation encrypts what it stores when its RunContext carries recipients
// (public keys only: the backup host needs no secret), and decrypts what it reads with
// the RunContext's identities. Compression happens before encryption; the manifest
// records that the artifact is encrypted and to which recipients (never identities), and
// its checksums cover the stored, encrypted bytes.
//
// Key files: an identity file (age-keygen's format) or a passphrase file that group or
// others may access is refused, as ssh refuses such private keys. A passphrase comes
// only from a file, or a file descriptor through /dev/fd/N, never argv or the environment.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mevbackup/age.hpp"
#include "mevbackup/manifest.hpp"
#include "mevbackup/stream.hpp"

namespace mevbackup {

struct Encryption {
  std::vector<AgeRecipient> recipients;  // new artifacts are encrypted to these; none: plaintext
  std::vector<std::string> recipient_names;  // as the manifest records them: "age1...", or "scrypt"
  std::vector<AgeIdentity> identities;   // artifacts read are decrypted with these
  bool encrypts() const { return !recipients.empty(); }

  // "age1..." (invalid_argument naming `what` when its checksum or form is wrong).
  void add_recipient(const std::string& text, const std::string& what = "recipient");
  // A recipients file as `age -R` reads it: one "age1..." per line, '#' comments, blank
  // lines. Throws naming the file and line.
  void add_recipients_file(const std::string& path);
  // An identity file as age-keygen writes it; refused (permission) when group or others
  // have access to it.
  void add_identity_file(const std::string& path);
  // The first line of a passphrase file (or /dev/fd/N): backups are encrypted with it
  // (scrypt, then the only recipient) and reads try it as an identity.
  void set_passphrase_file(const std::string& path);
};

// The keys a repository is opened with, as files and public keys.
struct EncryptionKeys {
  std::vector<std::string> recipients;  // "age1..."
  std::string recipients_file;
  std::vector<std::string> identity_files;
  std::string passphrase_file;
};
// Reads them into an Encryption; nullptr when none is named. `what` names the recipients
// list in messages ("mevb_repo_opts.recipients" -> "mevb_repo_opts.recipients[2]").
std::shared_ptr<const Encryption> load_encryption(const EncryptionKeys& keys, const std::string& what);

// Reads a file holding secrets, at most 1 MiB. A regular file that group or others may
// access is refused (Error(permission)); pipes (/dev/fd/N) are read as they are. `what`
// names the file in messages ("identity file").
std::string read_private_file(const std::string& path, const std::string& what);

// Creates `path` with `content` and `mode` (0600 for a key), never over an existing file
// (Error(exists)), synced to disk; nothing remains when it fails.
void write_new_file(const std::string& path, const std::string& content, unsigned mode);
// A new age identity in age-keygen's format at `path` (0600); returns its recipient.
std::string generate_identity_file(const std::string& path);

// The filter that encrypts new artifacts for `e` (nullptr when `e` is null or has no
// recipients), and the record the manifest keeps of it.
std::unique_ptr<Filter> artifact_encryptor(const Encryption* e);
void record_encryption(Manifest& m, const Encryption* e);

// The filter that decrypts the artifact `m` describes (nullptr when it is not
// encrypted). Throws auth naming the artifact and its recipients when `e` has no identity.
std::unique_ptr<Filter> artifact_decryptor(const Manifest& m, const Encryption* e);

// Watches the first stored bytes of an artifact whose manifest says it is not encrypted,
// and fails (corrupt) when they are an age file: a manifest claiming "encrypted": false
// for an encrypted artifact is refused with that message, not a codec error.
class PlaintextCheck final : public Observer {
 public:
  explicit PlaintextCheck(std::string path) : path_(std::move(path)) {}
  void update(Bytes data) override;
  void finish() override;

 private:
  void check();
  std::string path_;
  std::string head_;
  bool done_ = false;
};

}  // namespace mevbackup
