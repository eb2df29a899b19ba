// The repository lock, as restic does it over plain object storage (no
// compare-and-swap): every run writes its own lock object under locks/ through the
// Storage interface, then lists locks/ and backs out with Code::locked when a
// conflicting live lock exists. Exclusive conflicts with everything, shared only with
// exclusive. Two runs racing can both back out; neither can both proceed.
//
// A held lock is refreshed by a background thread (a new object is written, then the
// old one removed). A lock not refreshed within its TTL is abandoned; so is a lock of a
// process that no longer exists on this host. A holder whose refreshes keep failing
// until the next one would come after the TTL has lost its lock: the run it guards
// (guard()) is cancelled with Code::locked, before a prune elsewhere could take the
// repository from under it. Abandoned locks are ignored by everyone
// and removed by the next exclusive locker.
//
// Timing comes from LockOptions (RunContext::lock), never from the environment; the CLI
// and the Python bindings fill it from MEVBACKUP_LOCK_TTL (a lock not refreshed that long
// is abandoned; 1800 s), MEVBACKUP_LOCK_REFRESH (TTL/6, at least 1 s), MEVBACKUP_LOCK_WAIT
// (retry a conflicting lock that long before failing; 0) and MEVBACKUP_NO_LOCK=1 (no lock).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mevbackup/repository.hpp"
#include "mevbackup/storage.hpp"

namespace mevbackup {

enum class LockKind { shared, exclusive };

// LockOptions (ttl, refresh, wait, disabled) live in repository.hpp, in every RunContext.

// One lock as stored in locks/<id>-<seq>.json.
struct LockInfo {
  std::string key;  // the storage key it was read from
  std::string id;
  std::string kind;  // "shared" | "exclusive"
  std::string host;
  long pid = 0;
  int64_t created = 0;    // seconds since the epoch
  int64_t refreshed = 0;  // seconds since the epoch (the later of the record's time and the object's)
  bool stale = false;     // abandoned: not refreshed within the TTL, or its process is gone
  std::string stale_reason;
};

inline constexpr const char* kLockDir = "locks/";

// Every lock in the repository (unreadable lock objects are logged and skipped).
// Ages are counted from `now` (seconds since the epoch) in the storage's clock: a locker
// passes the mtime of the lock object it has just written, so that a host whose clock
// is off does not take live locks for abandoned ones. 0: this host's clock.
std::vector<LockInfo> list_locks(Storage& storage, const LockOptions& opts, const LogFn& log = {}, int64_t now = 0);

class RepositoryLock {
 public:
  // Takes the lock or throws Error(Code::locked) naming the holder. Within one process,
  // a lock already held on the same Storage object covers a nested request of the same
  // or a weaker kind. A shared lock that cannot be written for lack of permission (a
  // read-only repository) is logged as a warning and the operation goes on unlocked;
  // any other failure to write a lock throws the storage's error.
  // The default LockOptions: the library reads no MEVBACKUP_LOCK_* variable itself.
  RepositoryLock(Storage& storage, LockKind kind, const LogFn& log = {});
  RepositoryLock(Storage& storage, LockKind kind, const LogFn& log, const LockOptions& opts);
  // For a run: ctx.log and ctx.lock.
  RepositoryLock(Storage& storage, LockKind kind, const RunContext& ctx);
  ~RepositoryLock();
  RepositoryLock(const RepositoryLock&) = delete;

  // `ctx` for the run this lock protects: its cancel token also trips, with
  // Error(locked) naming the lock, when the lock is lost (ctx's own token still works).
  // Valid while the lock lives.
  RunContext guard(const RunContext& ctx);
  RepositoryLock& operator=(const RepositoryLock&) = delete;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mevbackup
