// The age file format (age-encryption.org/v1) as a Filter pair: files the stock `age`
// tool decrypts, and `age` files (binary or ASCII-armored) this library decrypts.
//
// Recipients are X25519 public keys ("age1...") or one scrypt passphrase; identities are
// X25519 secret keys ("AGE-SECRET-KEY-1...", as age-keygen writes them) or a passphrase.
// Built on OpenSSL 3: X25519, HKDF-SHA-256, ChaCha20-Poly1305, scrypt, HMAC-SHA-256.
//
// Secrets (secret keys, passphrases, file keys) are wiped when the objects holding them
// are destroyed and never appear in an error message.
// Errors: Error(invalid_argument) for a bad recipient or identity string, naming its
// position; while decrypting, Error(corrupt) for a damaged, truncated or forged file and
// Error(auth) when no identity given opens the file.
// Thread safety: values are plain data; a filter is used by one thread at a time.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mevbackup/stream.hpp"

namespace mevbackup {

struct AgeRecipient {
  enum class Kind { x25519, scrypt };
  Kind kind = Kind::x25519;
  std::array<uint8_t, 32> public_key{};  // x25519
  std::string passphrase;                // scrypt
  int work_factor = 18;                  // scrypt: log2 of N, as age's default
  AgeRecipient() = default;
  AgeRecipient(const AgeRecipient&) = default;
  AgeRecipient& operator=(const AgeRecipient&) = default;
  ~AgeRecipient();
};

struct AgeIdentity {
  enum class Kind { x25519, scrypt };
  Kind kind = Kind::x25519;
  std::array<uint8_t, 32> secret_key{};  // x25519
  std::string passphrase;                // scrypt
  int max_work_factor = 22;              // scrypt: files asking more are refused (as age)
  AgeIdentity() = default;
  AgeIdentity(const AgeIdentity&) = default;
  AgeIdentity& operator=(const AgeIdentity&) = default;
  ~AgeIdentity();
};

// "age1..." (Bech32, lowercase). `what` names the string in messages ("recipient 2").
AgeRecipient parse_age_recipient(std::string_view text, std::string_view what = "recipient");
AgeRecipient age_passphrase_recipient(std::string passphrase, int work_factor = 18);
std::string format_age_recipient(const std::array<uint8_t, 32>& public_key);

// "AGE-SECRET-KEY-1..." (Bech32, uppercase). Messages never echo the string.
AgeIdentity parse_age_identity(std::string_view text, std::string_view what = "identity");
// An identity file as age-keygen writes it: '#' comments, blank lines, one key per line.
// Throws invalid_argument naming the line when a line is not a key, or when there is none.
std::vector<AgeIdentity> parse_age_identity_file(std::string_view text);
AgeIdentity age_passphrase_identity(std::string passphrase, int max_work_factor = 22);
std::string format_age_identity(const std::array<uint8_t, 32>& secret_key);
// The recipient ("age1...") of an X25519 identity.
std::string age_identity_recipient(const AgeIdentity& identity);

struct AgeKeyPair {
  std::string secret;     // "AGE-SECRET-KEY-1..."
  std::string recipient;  // "age1..."
  AgeKeyPair() = default;
  AgeKeyPair(const AgeKeyPair&) = default;
  AgeKeyPair& operator=(const AgeKeyPair&) = default;
  ~AgeKeyPair();
};
// A fresh X25519 identity from the OpenSSL CSPRNG.
AgeKeyPair generate_age_identity();

// Encrypts to every recipient (at least one; a scrypt recipient must be the only one).
// Streams with two 64 KiB buffers whatever the input size.
std::unique_ptr<Filter> make_age_encryptor(std::vector<AgeRecipient> recipients);
// Rekeying: the bytes of a binary age file are its header, then the payload (nonce and
// chunks), which depends only on the file key. age_header_size() is the length of the
// header at the start of `data` (through the MAC line's newline), or 0 when `data` does
// not hold all of it yet; Error(corrupt) when it is no binary age file or the header runs
// past 1 MiB. age_rekey_header() opens `header` with one of `identities` (checking its MAC)
// and returns a header carrying the same file key to `recipients`: followed by the old
// payload it is the same file, encrypted to the new recipients. Error(auth) when no
// identity opens it.
size_t age_header_size(std::string_view data);
std::string age_rekey_header(std::string_view header, const std::vector<AgeIdentity>& identities,
                             const std::vector<AgeRecipient>& recipients);

// Decrypts binary or ASCII-armored age. Plaintext of a chunk leaves only after the chunk's
// tag verified; a stream cut short, trailing data, or a damaged header fails.
std::unique_ptr<Filter> make_age_decryptor(std::vector<AgeIdentity> identities);

}  // namespace mevbackup
