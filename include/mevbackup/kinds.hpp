// Kinds of backup: what each brings to the catalog, verify, prune and sync, so that
// none of those names a kind. A service area registers its own kinds
// (src/postgres/kinds.cpp: postgres and basebackup with its WAL archive,
// src/redis/kind.cpp, src/files/kind.cpp); a kind nobody registered (a user kind such
// as "export", put through Repository::publish) gets the defaults: a directory of its
// own name, no other objects, checksums only.
//
// Stability: part of the C++ API (source-compatible within a minor version); the C ABI
// (capi/mevbackup.h) is the stable one.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "mevbackup/manifest.hpp"
#include "mevbackup/repository.hpp"
#include "mevbackup/stream.hpp"

namespace mevbackup {

struct VerifyOptions;

// A check verify records: a name, whether it passed, what it found. A failed check
// fails the verification (corrupt).
using VerifyCheckFn = std::function<void(const std::string& name, bool ok, const std::string& detail)>;

// A check of the decompressed payload as verify streams it (an RDB's structure).
class PayloadCheck : public Observer {
 public:
  virtual std::string name() const = 0;
  // After the stream: what was found (throws corrupt when the payload is wrong).
  virtual std::string result(const RunContext& ctx) = 0;
};

struct BackupKind {
  std::string name;       // "postgres"
  std::string directory;  // "database": where its backups live in a repository
  // The backup's other stored objects besides its artifact (Manifest::extra_parts):
  // copied by sync, deleted by prune, checked by verify. Only keys beside the artifact.
  std::function<std::vector<Manifest::Part>(const Manifest&)> extra_parts;
  // Whether `key`, an object without a manifest of its own, belongs to a complete backup
  // of this kind (one whose manifest is among `keys`, the listing): not a leftover.
  std::function<bool(const std::string& key, const std::set<std::string>& keys)> owns;
  // Key prefixes of this kind's objects that are neither backups nor leftovers (the WAL
  // archive's "wal/"): the catalog skips them.
  std::vector<std::string> private_prefixes;
  // A check of the payload while verify reads it; null for none.
  std::function<std::unique_ptr<PayloadCheck>(const Manifest&)> payload_check;
  // Verify's checks after the artifact's (base backup parts and WAL continuity, a member list).
  std::function<void(Repository&, const Manifest&, const RunContext&, const VerifyCheckFn&)> verify;
  // A restore test (a restore into a scratch target, with checks), when the options ask
  // for one: returns the checks ({"check","ok","detail"} objects), empty when none ran.
  std::function<nlohmann::json(Repository&, const Manifest&, const VerifyOptions&, const RunContext&)> restore_test;
  // Prune's own retention for the kind once the kept backups are known (WAL older than
  // the oldest base backup kept). `kept`: this kind's backups that stay.
  std::function<void(Storage&, const std::vector<Manifest>& kept, bool dry_run, const LogFn&)> after_prune;
};

// Adds (or replaces) a kind. Thread safety: register before concurrent use.
void register_kind(BackupKind kind);
// The registered kind, or the defaults for an unregistered valid name ([a-z][a-z0-9_-]*,
// at most 64 characters); invalid_argument naming the kind otherwise.
const BackupKind& backup_kind(const std::string& name);
// The registered kind, or null (never throws: for names read from a manifest).
const BackupKind* find_kind(const std::string& name);
// Every registered kind, by name.
std::vector<const BackupKind*> registered_kinds();

}  // namespace mevbackup
