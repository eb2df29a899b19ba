// The repository lock (issue 9, scenario 13) and repository-level fault tests under the
// four-point rule: scenario 3 (write/fsync/rename failing at publication, through the
// Fs seam) and scenario 11 (retention after 40 days without new backups, failed
// verifications present).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <utime.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "../helpers.hpp"
#include "mevbackup/digest.hpp"
#include "mevbackup/lock.hpp"
#include "mevbackup/maintenance.hpp"

using namespace mevbackup;
using testutil::files_under;
using testutil::FixedClock;
using testutil::random_bytes;
using testutil::TempDir;

namespace {

LockOptions quick(int ttl = 30) {
  LockOptions o;
  o.ttl = std::chrono::seconds(ttl);
  o.refresh = std::chrono::seconds(ttl);
  return o;
}

std::vector<std::string> lock_files(const TempDir& dir) {
  std::vector<std::string> out;
  for (auto& f : files_under(dir.path()))
    if (f.rfind("locks/", 0) == 0) out.push_back(f);
  return out;
}

std::string host() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

// A lock object as another run would have left it.
void plant(const TempDir& dir, const std::string& id, const std::string& kind, const std::string& h, long pid,
           int64_t age_seconds) {
  auto st = make_local_storage(dir.path());
  int64_t t = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                  .count() - age_seconds;
  nlohmann::json j = {{"id", id}, {"kind", kind}, {"host", h}, {"pid", pid}, {"created", t}, {"refreshed", t}};
  std::string key = "locks/" + id + "-00000000.json";
  st->write_small(key, j.dump());
  struct utimbuf old {static_cast<time_t>(t), static_cast<time_t>(t)};
  REQUIRE(utime((dir / key).c_str(), &old) == 0);
}

Code code_of(const std::function<void()>& f, std::string* msg = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (msg) *msg = e.what();
    return e.code();
  }
  return Code::ok;
}

long dead_pid() {
  pid_t p = fork();
  if (p == 0) _exit(0);
  int st;
  waitpid(p, &st, 0);
  return p;
}

ArtifactSpec spec() {
  ArtifactSpec s;
  s.kind = "postgres";
  s.dir = "database";
  s.name_prefix = "db";
  s.extension = ".dump";
  s.format = "pg_dump-custom";
  return s;
}

Manifest add(Repository& repo, FixedClock& clock, const std::string& when) {
  clock.set(when);
  MemorySource src(random_bytes(5000, std::hash<std::string>{}(when)));
  return repo.publish(src, spec(), {}, [](Manifest&) {});
}

// Every regular file of the repository and its bytes: point (2) compares these.
std::map<std::string, std::string> contents(const TempDir& dir) {
  std::map<std::string, std::string> m;
  for (auto& f : files_under(dir.path())) m[f] = testutil::slurp(dir / f);
  return m;
}

// Points (2), (3), (4) of issue 9 after a fault: earlier backups byte for byte
// unchanged, every artifact has its manifest and vice versa, nothing temporary left
// under a final name, verify passes on everything.
void check_repository_intact(Repository& repo, const TempDir& dir, const std::map<std::string, std::string>& before) {
  auto now = contents(dir);
  for (auto& [k, v] : before) {
    if (k.rfind("locks/", 0) == 0) continue;
    REQUIRE(now.count(k));
    CHECK(now.at(k) == v);
  }
  for (auto& [k, v] : now) {
    CAPTURE(k);
    CHECK(k.find("/.") == std::string::npos);  // no temporary file
    if (k.rfind("locks/", 0) == 0) continue;
    bool manifest = k.size() > 14 && k.compare(k.size() - 14, 14, ".manifest.json") == 0;
    bool record = k.find(".verify.json") != std::string::npos;
    if (manifest) CHECK(now.count(k.substr(0, k.size() - 14)));
    else if (!record) CHECK(now.count(k + ".manifest.json"));
  }
  CHECK(repo.catalog().incomplete.empty());
  VerifyOptions vo;
  vo.record = false;
  for (auto& r : verify(repo, "all", vo, {})) {
    CAPTURE(r.id);
    CHECK(r.verification.ok);
  }
}

// Fails writes, fsyncs or renames of files under `match` only (not the lock's).
class FaultyFs final : public Fs {
 public:
  enum class Fail { none, write, fsync, rename };
  Fail fail = Fail::none;
  int err = ENOSPC;
  std::string match = "/database/";
  std::map<int, std::string> paths;

  int open(const char* path, int flags, mode_t mode) override {
    int fd = Fs::open(path, flags, mode);
    if (fd >= 0) paths[fd] = path;
    return fd;
  }
  int close(int fd) override {
    paths.erase(fd);
    return Fs::close(fd);
  }
  ssize_t write(int fd, const void* b, size_t n) override {
    if (fail == Fail::write && hit(fd)) return errno = err, -1;
    return Fs::write(fd, b, n);
  }
  int fsync(int fd) override {
    if (fail == Fail::fsync && hit(fd)) return errno = err, -1;
    return Fs::fsync(fd);
  }
  int rename_noreplace(const char* a, const char* b) override {
    if (fail == Fail::rename && std::string(b).find(match) != std::string::npos) return errno = err, -1;
    return Fs::rename_noreplace(a, b);
  }

 private:
  bool hit(int fd) { return paths.count(fd) && paths[fd].find(match) != std::string::npos; }
};

}  // namespace

TEST_CASE("lock: shared locks coexist, exclusive excludes everything, the message names the holder") {
  TempDir dir;
  auto a = make_local_storage(dir.path()), b = make_local_storage(dir.path());
  {
    RepositoryLock s1(*a, LockKind::shared, {}, quick());
    RepositoryLock s2(*b, LockKind::shared, {}, quick());
    CHECK(lock_files(dir).size() == 2);
    std::string msg;
    auto c = make_local_storage(dir.path());
    CHECK(code_of([&] { RepositoryLock x(*c, LockKind::exclusive, {}, quick()); }, &msg) == Code::locked);
    CHECK(msg.find("is locked") != std::string::npos);
    CHECK(msg.find("shared lock is held by " + host() + " pid " + std::to_string(getpid())) != std::string::npos);
    CHECK(lock_files(dir).size() == 2);  // the loser took its own object back
  }
  CHECK(lock_files(dir).empty());
  {
    RepositoryLock x(*a, LockKind::exclusive, {}, quick());
    std::string msg;
    CHECK(code_of([&] { RepositoryLock s(*b, LockKind::shared, {}, quick()); }, &msg) == Code::locked);
    CHECK(msg.find("exclusive lock is held by") != std::string::npos);
    CHECK(code_of([&] { RepositoryLock s(*b, LockKind::exclusive, {}, quick()); }) == Code::locked);
    // Nested requests through the same storage are covered by the held lock.
    RepositoryLock nested(*a, LockKind::shared, {}, quick());
    CHECK(lock_files(dir).size() == 1);
  }
  CHECK(lock_files(dir).empty());
  CHECK(std::string(code_name(Code::locked)) == "repository locked");
  CHECK(static_cast<int>(Code::locked) == 18);
}

TEST_CASE("lock: an abandoned lock (TTL passed, or its process gone) is ignored, and removed by an exclusive locker") {
  TempDir dir;
  auto st = make_local_storage(dir.path());
  plant(dir, "aaaa", "exclusive", "elsewhere", 4242, 100);
  plant(dir, "bbbb", "exclusive", host(), dead_pid(), 0);
  auto locks = list_locks(*st, quick(30));
  REQUIRE(locks.size() == 2);
  for (auto& l : locks) CHECK(l.stale);
  { RepositoryLock s(*st, LockKind::shared, {}, quick(30)); }
  CHECK(lock_files(dir).size() == 2);  // a shared locker leaves them
  std::vector<std::string> log;
  {
    RepositoryLock x(*st, LockKind::exclusive, [&](LogLevel, const std::string& m) { log.push_back(m); }, quick(30));
  }
  CHECK(lock_files(dir).empty());
  REQUIRE(log.size() == 2);
  CHECK(log[0].find("not refreshed for") != std::string::npos);
  CHECK(log[1].find("no longer runs") != std::string::npos);
  // Within the TTL, a lock of another host holds.
  plant(dir, "cccc", "exclusive", "elsewhere", 4242, 5);
  CHECK(code_of([&] { RepositoryLock s(*st, LockKind::shared, {}, quick(30)); }) == Code::locked);
  CHECK(code_of([&] { RepositoryLock s(*st, LockKind::shared, {}, quick(3)); }) == Code::ok);
}

namespace {

// The storage's clock `offset` seconds off this host's: every mtime it reports is shifted.
class SkewedStorage final : public Storage {
 public:
  SkewedStorage(std::unique_ptr<Storage> inner, int64_t offset) : in_(std::move(inner)), off_(offset) {}
  std::unique_ptr<Sink> put(const std::string& k) override { return in_->put(k); }
  std::unique_ptr<Source> get(const std::string& k) override { return in_->get(k); }
  std::vector<ObjectInfo> list(const std::string& p) override { return shift(in_->list(p)); }
  std::vector<ObjectInfo> list_unfinished(const std::string& p) override { return shift(in_->list_unfinished(p)); }
  std::optional<ObjectInfo> stat(const std::string& k) override {
    auto o = in_->stat(k);
    if (o) o->mtime += off_;
    return o;
  }
  void remove(const std::string& k) override { in_->remove(k); }
  std::string describe() const override { return in_->describe(); }

 private:
  std::vector<ObjectInfo> shift(std::vector<ObjectInfo> v) {
    for (auto& o : v) o.mtime += off_;
    return v;
  }
  std::unique_ptr<Storage> in_;
  int64_t off_;
};

std::string host_tag_of(const std::string& h) {
  Sha256 sha;
  sha.update(Bytes(reinterpret_cast<const std::byte*>(h.data()), h.size()));
  sha.finish();
  return sha.hex().substr(0, 12);
}

}  // namespace

TEST_CASE("lock: staleness is judged by the storage's clock, so a host whose clock is ahead keeps a live lock") {
  TempDir dir;
  // The storage (and the holder on another host) are two hours behind this host.
  const int64_t skew = -7200;
  plant(dir, "dddd", "exclusive", "elsewhere", 4242, -skew);  // refreshed "now" by the holder's clock
  SkewedStorage st(make_local_storage(dir.path()), skew);
  std::string msg;
  CHECK(code_of([&] { RepositoryLock x(st, LockKind::exclusive, {}, quick(30)); }, &msg) == Code::locked);
  CHECK(msg.find("held by elsewhere pid 4242") != std::string::npos);
  CHECK(lock_files(dir) == std::vector<std::string>{"locks/dddd-00000000.json"});
}

TEST_CASE("lock: a lock temporary file of a process gone from this host is removed at once, a live one's is kept") {
  TempDir dir;
  auto st = make_local_storage(dir.path());
  const std::string tag = host_tag_of(host());
  const std::string dead = ".0123456789abcdef-" + tag + "-" + std::to_string(dead_pid()) + "-00000000.json.tmp-1";
  const std::string live = ".0123456789abcdef-" + tag + "-" + std::to_string(getppid()) + "-00000003.json.tmp-2";
  const std::string other = ".0123456789abcdef-000000000000-" + std::to_string(dead_pid()) + "-00000000.json.tmp-3";
  mkdir((dir / "locks").c_str(), 0700);
  for (auto& n : {dead, live, other}) std::ofstream(dir / ("locks/" + n)) << "{";
  { RepositoryLock x(*st, LockKind::exclusive, {}, quick(30)); }
  auto left = lock_files(dir);
  std::sort(left.begin(), left.end());
  std::vector<std::string> want{"locks/" + other, "locks/" + live};
  std::sort(want.begin(), want.end());
  CHECK(left == want);
}

TEST_CASE("lock: a waiting locker gets the lock once the holder lets go; refresh replaces the object") {
  TempDir dir;
  auto a = make_local_storage(dir.path()), b = make_local_storage(dir.path());
  auto held = std::make_unique<RepositoryLock>(*a, LockKind::exclusive, LogFn{}, quick());
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    held.reset();
  });
  LockOptions w = quick();
  w.wait = std::chrono::seconds(10);
  w.refresh = std::chrono::seconds(1);
  {
    RepositoryLock s(*b, LockKind::shared, {}, w);
    t.join();
    auto first = lock_files(dir);
    REQUIRE(first.size() == 1);
    // A refresh writes the next object, then removes the previous one: wait for one new.
    auto second = lock_files(dir);
    for (int i = 0; i < 80 && (second == first || second.size() != 1); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      second = lock_files(dir);
    }
    REQUIRE(second.size() == 1);
    CHECK(second != first);
    CHECK(first[0].substr(0, 22) == second[0].substr(0, 22));  // same id, next sequence number
    CHECK(testutil::mode_of(dir / second[0]) == 0600);
  }
  CHECK(lock_files(dir).empty());
}

TEST_CASE("lock: a holder whose refreshes keep failing loses the lock; the run it guards stops with Code::locked") {
  TempDir dir;
  FaultyFs fs;
  fs.match = "/locks/";
  auto st = make_local_storage(dir.path(), fs);
  LockOptions o = quick(2);
  o.refresh = std::chrono::seconds(1);
  std::vector<std::string> log;
  std::mutex log_mu;
  CancelToken user;
  RunContext ctx;
  ctx.cancel = &user;
  {
    RepositoryLock l(*st, LockKind::shared, [&](LogLevel, const std::string& m) {
      std::lock_guard<std::mutex> g(log_mu);
      log.push_back(m);
    }, o);
    RunContext guarded = l.guard(ctx);
    REQUIRE(guarded.cancel != nullptr);
    CHECK(guarded.cancel != &user);
    CHECK_NOTHROW(guarded.cancel->check());
    fs.fail = FaultyFs::Fail::write;  // from now on no lock object can be written
    for (int i = 0; i < 200 && !guarded.cancel->cancelled(); ++i)  // lost after ~1 s; 10 s for slow builds
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    REQUIRE(guarded.cancel->cancelled());
    CHECK_FALSE(user.cancelled());  // the caller's own token is not touched
    std::string msg;
    CHECK(code_of([&] { guarded.cancel->check(); }, &msg) == Code::locked);
    CHECK(msg.find("lost the shared lock") != std::string::npos);
    CHECK(msg.find("could not be refreshed") != std::string::npos);
    fs.fail = FaultyFs::Fail::none;
  }
  std::lock_guard<std::mutex> g(log_mu);
  // The failures are logged; the loss itself is the guarded run's error, not said twice.
  REQUIRE_FALSE(log.empty());
  bool failures_logged = false;
  for (auto& m : log) {
    CHECK(m.find("lost the") == std::string::npos);
    if (m.find("refreshing lock") != std::string::npos && m.find("failed") != std::string::npos) failures_logged = true;
  }
  CHECK(failures_logged);
}

TEST_CASE("lock: an unguarded holder whose refreshes keep failing is told in the log") {
  TempDir dir;
  FaultyFs fs;
  fs.match = "/locks/";
  auto st = make_local_storage(dir.path(), fs);
  LockOptions o = quick(2);
  o.refresh = std::chrono::seconds(1);
  std::vector<std::pair<LogLevel, std::string>> log;
  std::mutex log_mu;
  auto lost = [&] {
    std::lock_guard<std::mutex> g(log_mu);
    for (auto& [lvl, m] : log)
      if (lvl == LogLevel::error && m.find("lost the shared lock") != std::string::npos) return true;
    return false;
  };
  {
    RepositoryLock l(*st, LockKind::shared, [&](LogLevel lvl, const std::string& m) {
      std::lock_guard<std::mutex> g(log_mu);
      log.emplace_back(lvl, m);
    }, o);
    fs.fail = FaultyFs::Fail::write;
    for (int i = 0; i < 200 && !lost(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    fs.fail = FaultyFs::Fail::none;
  }
  CHECK(lost());
}

TEST_CASE("cancel token: a child trips with its parent, a reason is thrown as given") {
  CancelToken parent;
  CancelToken child(&parent);
  CHECK_NOTHROW(child.check());
  parent.cancel();
  CHECK(child.cancelled());
  CHECK(code_of([&] { child.check(); }) == Code::cancelled);
  CancelToken t;
  t.cancel(Code::locked, "first reason");
  t.cancel(Code::io, "second reason");
  std::string msg;
  CHECK(code_of([&] { t.check(); }, &msg) == Code::locked);
  CHECK(msg.find("first reason") != std::string::npos);
  t.reset();
  CHECK_NOTHROW(t.check());
}

TEST_CASE("lock: prune and publish back out with Code::locked and change nothing; the catalog ignores locks/") {
  TempDir dir;
  FixedClock clock("2026-11-01T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  for (int d = 1; d <= 5; ++d) add(repo, clock, fmt::format("2026-11-0{}T02:00:00Z", d));
  auto before = contents(dir);
  auto other = make_local_storage(dir.path());
  {
    RepositoryLock backup_running(*other, LockKind::shared);
    CHECK(repo.catalog().incomplete.empty());
    CHECK(repo.list().size() == 5);
    PruneOptions o;
    o.policy.keep_last = 1;
    std::string msg;
    CHECK(code_of([&] { prune(repo, o, parse_rfc3339("2026-11-10T00:00:00Z"), {}); }, &msg) == Code::locked);
    CHECK(msg.find(dir.path()) != std::string::npos);
    o.dry_run = true;  // a dry run only reads
    CHECK(prune(repo, o, parse_rfc3339("2026-11-10T00:00:00Z"), {}).deleted == 0);
  }
  {
    RepositoryLock prune_running(*other, LockKind::exclusive);
    CHECK(code_of([&] { add(repo, clock, "2026-11-09T02:00:00Z"); }) == Code::locked);
    MemorySink sink;
    CHECK(code_of([&] { repo.restore_stream(repo.list().back(), sink, {}); }) == Code::locked);
    CHECK(code_of([&] { verify(repo, "all", {}, {}); }) == Code::locked);
  }
  auto after = contents(dir);
  CHECK(after == before);  // nothing written, nothing deleted, no verification recorded as failed
  check_repository_intact(repo, dir, before);
}

TEST_CASE("scenario 3: write, fsync or rename failing at publication: four points") {
  using F = FaultyFs::Fail;
  for (auto [fail, err, code] : {std::tuple{F::write, ENOSPC, Code::no_space}, std::tuple{F::write, EIO, Code::io},
                                 std::tuple{F::fsync, EIO, Code::io}, std::tuple{F::rename, EACCES, Code::permission},
                                 std::tuple{F::rename, EIO, Code::io}}) {
    CAPTURE(static_cast<int>(fail));
    CAPTURE(err);
    TempDir dir;
    FaultyFs fs;
    FixedClock clock("2026-11-01T02:00:00Z");
    Repository repo(make_local_storage(dir.path(), fs), clock);
    add(repo, clock, "2026-11-01T02:00:00Z");
    add(repo, clock, "2026-11-02T02:00:00Z");
    auto before = contents(dir);
    fs.fail = fail;
    fs.err = err;
    std::string msg;
    CHECK(code_of([&] { add(repo, clock, "2026-11-03T02:00:00Z"); }, &msg) == code);  // (1)
    CHECK(msg.find("database/") != std::string::npos);                                // names the file
    CHECK(msg.find(std::strerror(err)) != std::string::npos);                          // and the cause
    fs.fail = F::none;
    CHECK(contents(dir) == before);                                                  // (2), (3)
    check_repository_intact(repo, dir, before);                                      // (4)
    CHECK(repo.list().size() == 2);
  }
}

TEST_CASE("scenario 11: prune 40 days after the last backup, failed verifications present: four points") {
  TempDir dir;
  FixedClock clock("2026-09-01T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  std::vector<Manifest> ms;
  for (int d = 0; d < 30; ++d) {
    auto t = parse_rfc3339("2026-09-01T02:00:00Z") + std::chrono::hours(24) * d;
    ms.push_back(add(repo, clock, format_rfc3339(t)));
  }
  // The newest three were verified and failed (a restore test that broke), one in the
  // middle is known good.
  for (size_t i = ms.size() - 3; i < ms.size(); ++i) {
    Verification v;
    v.verified_at = "2026-10-01T03:00:00Z";
    v.ok = false;
    v.message = "restore test failed";
    repo.record_verification(ms[i], v);
  }
  Verification good;
  good.verified_at = "2026-10-01T03:00:00Z";
  good.ok = true;
  repo.record_verification(ms[10], good);
  auto before = contents(dir);
  PruneOptions o;
  o.policy.keep_days = 14;  // every backup is older than that: the runbook would delete them all
  o.policy.keep_last = 3;
  TimePoint now = parse_rfc3339("2026-11-09T02:00:00Z");  // 40 days after the last one
  auto res = prune(repo, o, now, {});
  auto left = repo.catalog().backups;
  size_t usable = 0;
  bool good_kept = false;
  for (auto& e : left) {
    if (!e.verification || e.verification->ok) ++usable;
    good_kept = good_kept || e.manifest.id == ms[10].id;
  }
  CHECK(usable >= 3);  // the keep_last usable backups survive the stale age rule
  CHECK(good_kept);    // the newest known-good one too
  CHECK(res.deleted > 0);
  // (2): what survives is byte for byte what it was; (3), (4) on the repository.
  std::map<std::string, std::string> kept_before;
  auto now_files = contents(dir);
  for (auto& [k, v] : before)
    if (now_files.count(k)) kept_before[k] = v;
  for (auto& e : left) CHECK(kept_before.count(e.manifest.path));
  check_repository_intact(repo, dir, kept_before);
}
