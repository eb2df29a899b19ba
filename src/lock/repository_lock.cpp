// The repository lock (lock.hpp): lock objects under locks/, written through Storage.
#include "mevbackup/lock.hpp"

#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "../io/subprocess.hpp"
#include "mevbackup/digest.hpp"

namespace mevbackup {

namespace {

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string stamp(int64_t t) { return format_rfc3339(std::chrono::system_clock::from_time_t(static_cast<std::time_t>(t))); }

std::string random_id() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> g(mu);
  return fmt::format("{:016x}", rng());
}

// A short tag of a host name, safe in a key (host names may hold anything).
std::string host_tag(const std::string& host) {
  Sha256 h;
  h.update(Bytes(reinterpret_cast<const std::byte*>(host.data()), host.size()));
  h.finish();
  return h.hex().substr(0, 12);
}

// A lock id names its writer: <random>-<host tag>-<pid>. A temporary file of a lock
// write (local storage: ".<id>-<seq>.json.tmp-<random>") then tells whose it is, so
// that the one of a killed process of this host can go at once, not after the TTL.
std::string new_lock_id(const std::string& host, long pid) {
  return fmt::format("{}-{}-{}", random_id(), host_tag(host), pid);
}

// The pid of the writer of a lock temporary file of this host; 0 when the name does not
// say (another host, an older name, not a lock write).
long temp_writer_on_this_host(const std::string& key, const std::string& tag) {
  auto slash = key.rfind('/');
  std::string name = key.substr(slash == std::string::npos ? 0 : slash + 1);
  if (name.empty() || name[0] != '.') return 0;
  // .<random>-<tag>-<pid>-<seq>.json.tmp-...
  auto parts_end = name.find(".json");
  if (parts_end == std::string::npos) return 0;
  std::string stem = name.substr(1, parts_end - 1);
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    auto dash = stem.find('-', start);
    parts.push_back(stem.substr(start, dash == std::string::npos ? std::string::npos : dash - start));
    if (dash == std::string::npos) break;
    start = dash + 1;
  }
  if (parts.size() != 4 || parts[1] != tag) return 0;
  const std::string& pid = parts[2];
  if (pid.empty() || pid.size() > 10 || pid.find_first_not_of("0123456789") != std::string::npos) return 0;
  return std::strtol(pid.c_str(), nullptr, 10);
}

const char* kind_name(LockKind k) { return k == LockKind::exclusive ? "exclusive" : "shared"; }

// Locks this process holds, per Storage object: nested requests are covered by them,
// and a process never conflicts with its own locks.
struct Held {
  int shared = 0, exclusive = 0;
  std::set<std::string> ids;
};
std::mutex g_registry_mu;
std::map<const Storage*, Held> g_registry;

}  // namespace

std::vector<LockInfo> list_locks(Storage& storage, const LockOptions& opts, const LogFn& log, int64_t storage_now) {
  std::vector<LockInfo> out;
  const std::string host = this_host();
  const int64_t now = storage_now > 0 ? storage_now : now_seconds();
  for (auto& obj : storage.list(kLockDir)) {
    if (obj.key.size() < 5 || obj.key.compare(obj.key.size() - 5, 5, ".json") != 0) continue;
    LockInfo l;
    l.key = obj.key;
    try {
      auto j = nlohmann::json::parse(storage.read_small(obj.key, 64 << 10));
      l.id = j.at("id").get<std::string>();
      l.kind = j.at("kind").get<std::string>();
      l.host = j.value("host", "");
      l.pid = j.value("pid", 0L);
      l.created = j.value("created", int64_t{0});
      l.refreshed = std::max<int64_t>(j.value("refreshed", int64_t{0}), obj.mtime);
      if (l.kind != "shared" && l.kind != "exclusive") throw Error(Code::corrupt, "unknown lock kind \"" + l.kind + "\"");
    } catch (const Error& e) {
      if (e.code() == Code::not_found) continue;  // released meanwhile
      if (log) log(LogLevel::warning, fmt::format("ignoring lock object {}: {}", obj.key, e.what()));
      continue;
    } catch (const std::exception& e) {
      if (log) log(LogLevel::warning, fmt::format("ignoring lock object {}: {}", obj.key, e.what()));
      continue;
    }
    int64_t age = now - l.refreshed;
    if (age > opts.ttl.count()) {
      l.stale = true;
      l.stale_reason = fmt::format("not refreshed for {} s (TTL {} s)", age, opts.ttl.count());
    } else if (l.host == host && l.pid > 0) {
      bool gone = false;
      if (l.pid == static_cast<long>(::getpid())) {
        std::lock_guard<std::mutex> g(g_registry_mu);
        bool mine = false;
        for (auto& [s, h] : g_registry) mine = mine || h.ids.count(l.id);
        gone = !mine;  // an earlier process with our pid
      } else {
        gone = process_gone(l.pid);
      }
      if (gone) {
        l.stale = true;
        l.stale_reason = fmt::format("process {} no longer runs on {}", l.pid, host);
      }
    }
    out.push_back(std::move(l));
  }
  return out;
}

struct RepositoryLock::Impl {
  Storage& storage;
  LockKind kind;
  LogFn log;
  LockOptions opts;
  bool nested = false, active = false;
  std::string id, host, key;
  long pid = 0;
  int64_t created = 0;
  int seq = 0;
  std::thread refresher;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  int refresh_failures = 0;
  std::string refresh_error;
  std::chrono::steady_clock::time_point last_written;  // the lock object was last written then
  std::unique_ptr<CancelToken> guard_token;             // of guard(): tripped when the lock is lost

  Impl(Storage& s, LockKind k, LogFn l, LockOptions o) : storage(s), kind(k), log(std::move(l)), opts(o) {}

  std::string key_for(int n) const { return fmt::format("{}{}-{:08d}.json", kLockDir, id, n); }
  std::string record() const {
    int64_t now = now_seconds();
    nlohmann::json j = {{"id", id},           {"kind", kind_name(kind)}, {"host", host},
                        {"pid", pid},         {"created", created},      {"created_at", stamp(created)},
                        {"refreshed", now},   {"refreshed_at", stamp(now)}, {"tool", "libmevbackup"}};
    return j.dump(2) + "\n";
  }

  void acquire();
  void refresh_loop();
  void release() noexcept;
};

void RepositoryLock::Impl::acquire() {
  host = this_host();
  pid = static_cast<long>(::getpid());
  id = new_lock_id(host, pid);
  created = now_seconds();
  {
    std::lock_guard<std::mutex> g(g_registry_mu);
    g_registry[&storage].ids.insert(id);
  }
  auto forget_id = [&] {
    std::lock_guard<std::mutex> g(g_registry_mu);
    auto it = g_registry.find(&storage);
    if (it == g_registry.end()) return;
    it->second.ids.erase(id);
    if (it->second.ids.empty() && !it->second.shared && !it->second.exclusive) g_registry.erase(it);
  };
  auto deadline = std::chrono::steady_clock::now() + opts.wait;
  for (;;) {
    key = key_for(seq);
    try {
      storage.write_small(key, record());
    } catch (const Error& e) {
      forget_id();
      // A read-only repository can still be restored from and verified, unlocked.
      if (kind == LockKind::shared && e.code() == Code::permission) {
        if (log)
          log(LogLevel::warning, fmt::format("cannot write the shared lock {} in {}: {}; going on without a lock", key,
                                             storage.describe(), e.what()));
        return;
      }
      if (kind == LockKind::shared) throw;  // the operation would fail the same way: its own message
      throw Error(e.code(), fmt::format("cannot take the exclusive lock of {}: {}", storage.describe(), e.what()),
                  e.retriable());
    }
    last_written = std::chrono::steady_clock::now();
    std::optional<LockInfo> conflict;
    std::vector<LockInfo> stale;
    int64_t storage_now = 0;
    try {
      // The storage's clock: what it says of the object just written.
      if (auto own = storage.stat(key)) storage_now = own->mtime;
      std::set<std::string> mine;
      {
        std::lock_guard<std::mutex> g(g_registry_mu);
        mine = g_registry[&storage].ids;
      }
      for (auto& l : list_locks(storage, opts, log, storage_now)) {
        if (mine.count(l.id)) continue;
        if (l.stale) {
          stale.push_back(l);
          continue;
        }
        if ((kind == LockKind::exclusive || l.kind == "exclusive") && !conflict) conflict = l;
      }
    } catch (...) {
      try {
        storage.remove(key);
      } catch (...) {
      }
      forget_id();
      throw;
    }
    if (!conflict) {
      if (kind == LockKind::exclusive) {
        for (auto& l : stale) {
          if (log) log(LogLevel::info, fmt::format("removing abandoned {} lock {} of {} pid {}: {}", l.kind, l.key, l.host, l.pid, l.stale_reason));
          try {
            storage.remove(l.key);
          } catch (const Error& e) {
            if (log) log(LogLevel::warning, fmt::format("cannot remove abandoned lock {}: {}", l.key, e.what()));
          }
        }
        // Temporary files of lock writes that never committed (a killed process): one
        // whose writer no longer runs on this host goes at once, any other after the TTL.
        try {
          int64_t now = storage_now > 0 ? storage_now : now_seconds();
          const std::string tag = host_tag(host);
          for (auto& o : storage.list_unfinished(kLockDir)) {
            long writer = temp_writer_on_this_host(o.key, tag);
            bool dead = writer > 0 && writer != pid && process_gone(writer);
            if (dead || now - o.mtime > opts.ttl.count()) storage.remove_unfinished(o);
          }
        } catch (const Error&) {
        }
      }
      active = true;
      {
        std::lock_guard<std::mutex> g(g_registry_mu);
        auto& h = g_registry[&storage];
        (kind == LockKind::exclusive ? h.exclusive : h.shared)++;
      }
      refresher = std::thread([this] { refresh_loop(); });
      return;
    }
    try {
      storage.remove(key);
    } catch (...) {
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      forget_id();
      int64_t age = now_seconds() - conflict->refreshed;
      throw Error(Code::locked,
                  fmt::format("repository {} is locked: cannot take {} lock while {} {} lock is held by {} pid {} since "
                              "{} (lock {}, refreshed {} s ago; it is abandoned after {} s without refresh)",
                              storage.describe(), kind == LockKind::exclusive ? "an exclusive" : "a shared",
                              conflict->kind == "exclusive" ? "an" : "a", conflict->kind, conflict->host, conflict->pid,
                              stamp(conflict->created), conflict->key, age < 0 ? 0 : age, opts.ttl.count()));
    }
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(std::chrono::milliseconds(500), deadline - now));
  }
}

void RepositoryLock::Impl::refresh_loop() {
  std::unique_lock<std::mutex> lk(mu);
  while (!stop) {
    if (cv.wait_for(lk, opts.refresh, [&] { return stop; })) break;
    lk.unlock();
    std::string next = key_for(seq + 1);
    bool written = false;
    try {
      storage.write_small(next, record());
      written = true;
      last_written = std::chrono::steady_clock::now();
      std::string old = key;
      key = next;
      ++seq;
      storage.remove(old);
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> g(mu);
      ++refresh_failures;
      refresh_error = e.what();
    }
    lk.lock();
    // The next refresh would come after the TTL: others may then take this lock for
    // abandoned (a prune could delete what this run reads or writes). Stop the run.
    auto unrefreshed = std::chrono::steady_clock::now() - last_written;
    if (!written && unrefreshed + opts.refresh >= opts.ttl) {
      std::string why = fmt::format("lost the {} lock {} of {}: it could not be refreshed for {} s (TTL {} s; {} "
                                    "failure(s), last: {}); the run is stopped so that no other run takes the "
                                    "repository from under it",
                                    kind_name(kind), key, storage.describe(),
                                    std::chrono::duration_cast<std::chrono::seconds>(unrefreshed).count(),
                                    opts.ttl.count(), refresh_failures, refresh_error);
      // A guarded run fails with this message; an unguarded holder can only be told.
      if (guard_token)
        guard_token->cancel(Code::locked, why);
      else if (log)
        log(LogLevel::error, why);
      break;  // nothing to keep alive any more
    }
  }
}

void RepositoryLock::Impl::release() noexcept {
  if (!active) return;
  {
    std::lock_guard<std::mutex> g(mu);
    stop = true;
  }
  cv.notify_all();
  if (refresher.joinable()) refresher.join();
  try {
    storage.remove(key);
  } catch (const std::exception& e) {
    if (log) log(LogLevel::warning, fmt::format("cannot remove lock {}: {}", key, e.what()));
  }
  if (refresh_failures && log)
    log(LogLevel::warning, fmt::format("refreshing lock {} failed {} time(s); last: {}", key, refresh_failures, refresh_error));
  std::lock_guard<std::mutex> g(g_registry_mu);
  auto it = g_registry.find(&storage);
  if (it != g_registry.end()) {
    (kind == LockKind::exclusive ? it->second.exclusive : it->second.shared)--;
    it->second.ids.erase(id);
    if (it->second.ids.empty() && !it->second.shared && !it->second.exclusive) g_registry.erase(it);
  }
  active = false;
}

RepositoryLock::RepositoryLock(Storage& storage, LockKind kind, const LogFn& log)
    : RepositoryLock(storage, kind, log, LockOptions{}) {}

RepositoryLock::RepositoryLock(Storage& storage, LockKind kind, const RunContext& ctx)
    : RepositoryLock(storage, kind, ctx.log, ctx.lock) {}

RepositoryLock::RepositoryLock(Storage& storage, LockKind kind, const LogFn& log, const LockOptions& opts)
    : impl_(std::make_unique<Impl>(storage, kind, log, opts)) {
  if (opts.disabled) return;
  {
    std::lock_guard<std::mutex> g(g_registry_mu);
    auto it = g_registry.find(&storage);
    if (it != g_registry.end() && (it->second.exclusive > 0 || (kind == LockKind::shared && it->second.shared > 0))) {
      (kind == LockKind::exclusive ? it->second.exclusive : it->second.shared)++;
      impl_->nested = true;
      return;
    }
  }
  impl_->acquire();
}

RunContext RepositoryLock::guard(const RunContext& ctx) {
  RunContext out = ctx;
  if (!impl_ || impl_->nested || !impl_->active) return out;  // the outer lock (or none) guards it
  std::lock_guard<std::mutex> g(impl_->mu);
  if (!impl_->guard_token) impl_->guard_token = std::make_unique<CancelToken>(ctx.cancel);
  out.cancel = impl_->guard_token.get();
  return out;
}

RepositoryLock::~RepositoryLock() {
  if (!impl_) return;
  if (impl_->nested) {
    std::lock_guard<std::mutex> g(g_registry_mu);
    auto it = g_registry.find(&impl_->storage);
    if (it != g_registry.end()) (impl_->kind == LockKind::exclusive ? it->second.exclusive : it->second.shared)--;
    return;
  }
  impl_->release();
}

}  // namespace mevbackup
