#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <utime.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "../helpers.hpp"

using namespace mevbackup;
using testutil::files_under;
using testutil::FixedClock;
using testutil::random_bytes;
using testutil::TempDir;

namespace {

ArtifactSpec spec(const std::string& prefix = "db") {
  ArtifactSpec s;
  s.kind = "postgres";
  s.dir = "database";
  s.name_prefix = prefix;
  s.extension = ".dump";
  s.format = "pg_dump-custom";
  return s;
}

Manifest add(Repository& repo, FixedClock& clock, const std::string& when, const std::string& prefix = "db") {
  clock.set(when);
  MemorySource src(random_bytes(5000, std::hash<std::string>{}(when)));
  return repo.publish(src, spec(prefix), {}, [](Manifest&) {});
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void flip_byte(const std::string& path) {
  FILE* f = fopen(path.c_str(), "r+b");
  REQUIRE(f);
  fseek(f, 20, SEEK_SET);
  int c = fgetc(f);
  fseek(f, 20, SEEK_SET);
  fputc(c ^ 0x10, f);
  fclose(f);
}

}  // namespace

TEST_CASE("prune deletes what the policy rejects, artifact first and manifest last; dry-run deletes nothing") {
  TempDir dir;
  FixedClock clock("2026-11-01T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  for (int d = 1; d <= 9; ++d) add(repo, clock, fmt::format("2026-11-0{}T02:00:00Z", d));
  // A temporary file of a killed run (the library's own leftover) and a file of someone
  // else's with a backup's name, both long past the grace period.
  const std::string tmp = "database/.db_20261001_000000.dump.gz.tmp-0123456789abcdef";
  const std::string other = "database/db_20261001_000000.dump.gz";
  {
    std::ofstream(dir / tmp) << "left by a killed run";
    std::ofstream(dir / other) << "made by the runbook";
  }
  struct utimbuf old {1759276800, 1759276800};  // 2025-10-01: long past the grace period
  REQUIRE(utime((dir / tmp).c_str(), &old) == 0);
  REQUIRE(utime((dir / other).c_str(), &old) == 0);
  PruneOptions o;
  o.policy.keep_last = 3;
  o.dry_run = true;
  auto before = files_under(dir.path());
  auto res = prune(repo, o, parse_rfc3339("2026-11-10T00:00:00Z"), {});
  CHECK(res.deleted == 0);
  CHECK(files_under(dir.path()) == before);
  size_t would = 0;
  for (auto& d : res.decisions) would += !d.keep;
  CHECK(would == 7);  // 6 old backups + the temporary file
  CHECK(res.foreign == 1);
  auto f = std::find_if(res.decisions.begin(), res.decisions.end(), [&](auto& d) { return d.id == other; });
  REQUIRE(f != res.decisions.end());
  CHECK(f->keep);
  CHECK(f->foreign);
  CHECK(f->reason.rfind("foreign, kept", 0) == 0);

  o.dry_run = false;
  std::vector<std::string> log;
  RunContext ctx;
  ctx.log = [&](LogLevel, const std::string& m) { log.push_back(m); };
  res = prune(repo, o, parse_rfc3339("2026-11-10T00:00:00Z"), ctx);
  CHECK(res.deleted == 7);
  auto left = repo.list();
  REQUIRE(left.size() == 3);
  CHECK(left[0].id == "db_20261107_020000");
  CHECK(files_under(dir.path()).size() == 7);  // 3 backups (artifact + manifest) and the foreign file
  CHECK(slurp(dir / other) == "made by the runbook");
  CHECK(log.size() == 11);
  CHECK(std::any_of(log.begin(), log.end(), [](auto& l) { return l.find("delete db_20261101_020000: matches no keep rule") == 0; }));
  CHECK(std::any_of(log.begin(), log.end(), [&](auto& l) { return l.find("keep " + other + ": foreign, kept") == 0; }));
}

TEST_CASE("is_own_leftover: only temporary names, name claims and unfinished uploads are the library's") {
  CHECK(is_own_leftover({"database/.x.dump.gz.tmp-00ff00ff00ff00ff", 1, 0, {}}));
  CHECK(is_own_leftover({"database/x.dump.gz", 0, 0, "upload-1"}));
  CHECK(is_own_leftover({"database/.x.dump.gz.claim-0123456789abcdef", 1, 0, {}}));  // an S3 name claim
  CHECK_FALSE(is_own_leftover({"database/x.dump.gz", 1, 0, {}}));
  CHECK_FALSE(is_own_leftover({"notes.txt", 1, 0, {}}));
  CHECK_FALSE(is_own_leftover({"database/x.dump.gz.tmp-00ff00ff00ff00ff", 1, 0, {}}));  // not hidden
  CHECK_FALSE(is_own_leftover({".hidden/notes.txt", 1, 0, {}}));
}

TEST_CASE("verify passes intact backups, fails a flipped byte naming the backup, and records both") {
  TempDir dir;
  FixedClock clock("2026-11-01T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  Manifest a = add(repo, clock, "2026-11-01T02:00:00Z");
  Manifest b = add(repo, clock, "2026-11-02T02:00:00Z");
  flip_byte(dir / b.path);
  clock.set("2026-11-03T00:00:00Z");
  auto res = verify(repo, "all", {}, {});
  REQUIRE(res.size() == 2);
  CHECK(res[0].id == a.id);
  CHECK(res[0].verification.ok);
  CHECK(res[0].verification.verified_at == "2026-11-03T00:00:00Z");
  CHECK(res[1].id == b.id);
  CHECK_FALSE(res[1].verification.ok);
  CHECK((res[1].verification.message.find("corrupt") != std::string::npos ||
         res[1].verification.message.find("SHA-256") != std::string::npos ||
         res[1].verification.message.find("gzip") != std::string::npos));
  auto cat = repo.catalog();
  REQUIRE(cat.backups.size() == 2);
  CHECK(cat.backups[0].verification->ok);
  CHECK_FALSE(cat.backups[1].verification->ok);
  // Re-verifying replaces the record.
  clock.set("2026-11-04T00:00:00Z");
  verify(repo, a.id, {}, {});
  CHECK(repo.catalog().backups[0].verification->verified_at == "2026-11-04T00:00:00Z");
  // Retention now skips the failed newest one: the good one is "the last".
  PruneOptions o;
  auto pr = prune(repo, o, parse_rfc3339("2026-11-05T00:00:00Z"), {});
  CHECK(pr.deleted == 1);
  auto left = repo.list();
  REQUIRE(left.size() == 1);
  CHECK(left[0].id == a.id);
  CHECK(files_under(dir.path()).size() == 3);  // artifact, manifest, verification record
}

TEST_CASE("check: OK, WARNING past max-age, CRITICAL past twice, perfdata; a missing repository is down") {
  TempDir dir;
  FixedClock clock("2026-11-27T02:00:00Z");
  Repository repo(make_local_storage(dir / "repo"), clock);
  CheckOptions o;
  o.max_age = std::chrono::hours(25);
  // A mistyped repository is not an empty one: CRITICAL, and mevbackup_repository_up 0.
  auto missing = check(repo, o, parse_rfc3339("2026-11-27T03:00:00Z"), {});
  CHECK(missing.status == CheckStatus::critical);
  CHECK(missing.summary.find("does not exist") != std::string::npos);
  CHECK(missing.prometheus.find("mevbackup_repository_up 0\n") != std::string::npos);
  std::filesystem::create_directories(dir / "repo");
  auto empty = check(repo, o, parse_rfc3339("2026-11-27T03:00:00Z"), {});
  CHECK(empty.status == CheckStatus::critical);
  CHECK(empty.summary.find("no backups") != std::string::npos);
  CHECK(empty.prometheus.find("mevbackup_repository_up 1\n") != std::string::npos);

  add(repo, clock, "2026-11-27T02:00:00Z");
  auto ok = check(repo, o, parse_rfc3339("2026-11-27T03:00:00Z"), {});
  CHECK(ok.status == CheckStatus::ok);
  CHECK(ok.summary == "MEVBACKUP OK - postgres/db: OK newest 1h00m ago (warning 1d01h, critical 2d02h) | "
                      "age=3600s;90000;180000;0 size=" + std::to_string(repo.list()[0].size) + "B;;;0");
  CHECK(check(repo, o, parse_rfc3339("2026-11-28T03:00:00Z"), {}).status == CheckStatus::ok);  // 25h: not past
  CHECK(check(repo, o, parse_rfc3339("2026-11-28T04:00:00Z"), {}).status == CheckStatus::warning);  // 26h
  auto stale = check(repo, o, parse_rfc3339("2026-11-29T05:00:00Z"), {});  // 51h
  CHECK(stale.status == CheckStatus::critical);
  CHECK(stale.summary.rfind("MEVBACKUP CRITICAL - postgres/db: CRITICAL newest 2d03h ago (warning 1d01h, critical 2d02h) | "
                            "age=183600s;90000;180000;0 ", 0) == 0);
  CHECK(stale.details["groups"][0]["age_seconds"] == 51 * 3600);
  CheckOptions own = o;
  own.warning = std::chrono::hours(2);
  own.critical = std::chrono::hours(3);
  CHECK(check(repo, own, parse_rfc3339("2026-11-27T03:30:00Z"), {}).status == CheckStatus::ok);
  CHECK(check(repo, own, parse_rfc3339("2026-11-27T04:30:00Z"), {}).status == CheckStatus::warning);
  CHECK(check(repo, own, parse_rfc3339("2026-11-27T05:30:00Z"), {}).summary.find("age=12600s;7200;10800;0") !=
        std::string::npos);
  own.critical = std::chrono::hours(1);
  CHECK_THROWS_WITH_AS(check(repo, own, parse_rfc3339("2026-11-27T03:30:00Z"), {}),
                       "critical (1h00m) must not be shorter than warning (2h00m)", Error);

  // Prometheus exposition: every sample line is `name{labels} value`, with HELP/TYPE first.
  std::regex sample(R"(^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+]+$)");
  std::istringstream in(stale.prometheus);
  std::string line;
  size_t samples = 0;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) continue;
    CHECK_MESSAGE(std::regex_match(line, sample), line);
    ++samples;
  }
  CHECK(samples >= 6);
  CHECK(stale.prometheus.find("mevbackup_last_success_timestamp_seconds{kind=\"postgres\",source=\"db\"} 1795744800") !=
        std::string::npos);
  CHECK(stale.prometheus.find("mevbackup_backups{kind=\"postgres\",source=\"db\"} 1\n") != std::string::npos);
  CHECK(stale.prometheus.find("_total") == std::string::npos);  // gauges only: no counter suffix
  CHECK(stale.prometheus.find("mevbackup_wal_") == std::string::npos);  // no WAL archive here

  CheckOptions redis_only = o;
  redis_only.kind = "redis";
  CHECK(check(repo, redis_only, parse_rfc3339("2026-11-27T03:00:00Z"), {}).status == CheckStatus::critical);

  // A repository path that is a file cannot be read.
  testutil::TempDir d2;
  auto file_repo = make_local_storage(d2.path());
  file_repo->write_small("f", "x");
  Repository broken(make_local_storage(d2 / "f"), clock);
  auto unk = check(broken, o, parse_rfc3339("2026-11-27T03:00:00Z"), {});
  CHECK(unk.status == CheckStatus::unknown);
  CHECK(unk.summary.find("UNKNOWN") != std::string::npos);
  CHECK(unk.prometheus.find("mevbackup_repository_up 0\n") != std::string::npos);
}

TEST_CASE("check: a backup dated in the future is WARNING and does not count for freshness") {
  TempDir dir;
  FixedClock clock("2026-11-27T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  add(repo, clock, "2026-11-25T02:00:00Z");
  Manifest future = add(repo, clock, "2026-11-27T02:00:00Z");
  CheckOptions o;
  o.max_age = std::chrono::hours(25);
  // Seen from 2026-11-26T00:00: the newest one lies 26 h ahead; the one before is 22 h old.
  auto r = check(repo, o, parse_rfc3339("2026-11-26T00:00:00Z"), {});
  CHECK(r.status == CheckStatus::warning);
  CHECK(r.summary.find("newest backup is dated in the future: " + future.id + " finished 2026-11-27T02:00:00Z") !=
        std::string::npos);
  CHECK(r.details["groups"][0]["newest_id"] == "db_20261125_020000");
  CHECK(r.details["groups"][0]["age_seconds"] == 22 * 3600);
  CHECK(r.prometheus.find("mevbackup_future_dated_backups{kind=\"postgres\",source=\"db\"} 1\n") != std::string::npos);
  // Within the skew allowance (5 min) it is simply the newest.
  CHECK(check(repo, o, parse_rfc3339("2026-11-27T01:56:00Z"), {}).status == CheckStatus::ok);
  // Only future-dated backups: nothing counts, CRITICAL.
  TempDir d2;
  Repository only(make_local_storage(d2.path()), clock);
  add(only, clock, "2026-11-27T02:00:00Z");
  auto c = check(only, o, parse_rfc3339("2026-11-20T00:00:00Z"), {});
  CHECK(c.status == CheckStatus::critical);
  CHECK(c.summary.find("no backup dated before now") != std::string::npos);
}

TEST_CASE("check: the WAL archive's newest object has a series of its own") {
  TempDir dir;
  FixedClock clock("2026-11-27T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  add(repo, clock, "2026-11-27T02:00:00Z");
  repo.storage().write_small("wal/000000010000000000000001", "segment");
  repo.storage().write_small("wal/000000010000000000000002", "segment");
  struct utimbuf t1 {1795744800, 1795744800}, t2 {1795748400, 1795748400};  // 02:00 and 03:00
  REQUIRE(utime((dir / "wal/000000010000000000000001").c_str(), &t1) == 0);
  REQUIRE(utime((dir / "wal/000000010000000000000002").c_str(), &t2) == 0);
  CheckOptions o;
  auto r = check(repo, o, parse_rfc3339("2026-11-27T04:00:00Z"), {});
  CHECK(r.prometheus.find("# TYPE mevbackup_wal_last_archived_timestamp_seconds gauge\n"
                          "mevbackup_wal_last_archived_timestamp_seconds 1795748400\n") != std::string::npos);
  CHECK(r.summary.find(" wal_age=3600s;;;0") != std::string::npos);
}

TEST_CASE("write_file_atomically replaces the file whole, mode 0644") {
  TempDir dir;
  std::string p = dir / "metrics.prom";
  write_file_atomically(p, "a 1\n");
  write_file_atomically(p, "a 2\n");
  CHECK(testutil::slurp(p) == "a 2\n");
  CHECK(testutil::mode_of(p) == 0644);
  CHECK(files_under(dir.path()) == std::vector<std::string>{"metrics.prom"});
  CHECK_THROWS_AS(write_file_atomically(dir / "no/such/dir/x", "y"), Error);
}

namespace {

// A TCP port on 127.0.0.1 where nothing listens (bound, then closed): connections are refused.
int refused_port() {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(s >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  close(s);
  return ntohs(a.sin_port);
}

}  // namespace

TEST_CASE("prune never deletes through a link planted in the repository") {
  TempDir dir;
  std::string outside = dir / "precious";
  auto other = make_local_storage(outside);
  for (auto k : {"db_20200101_000000.dump.gz", "deep/file", ".x.tmp-0123"}) other->write_small(k, "keep me");
  struct utimbuf old {1577836800, 1577836800};  // 2020: long past any grace period
  for (auto k : {"db_20200101_000000.dump.gz", "deep/file", ".x.tmp-0123"})
    REQUIRE(utime((outside + "/" + k).c_str(), &old) == 0);
  FixedClock clock("2026-11-01T02:00:00Z");
  Repository repo(make_local_storage(dir / "repo"), clock);
  add(repo, clock, "2026-11-01T02:00:00Z");
  REQUIRE(symlink(outside.c_str(), (dir / "repo/attic").c_str()) == 0);
  REQUIRE(symlink(outside.c_str(), (dir / "repo/database/attic").c_str()) == 0);
  PruneOptions o;
  auto res = prune(repo, o, parse_rfc3339("2026-11-10T00:00:00Z"), {});
  CHECK(res.deleted == 0);
  CHECK(res.decisions.size() == 1);  // the one backup; nothing behind the links was looked at
  CHECK(files_under(outside) == std::vector<std::string>{".x.tmp-0123", "db_20200101_000000.dump.gz", "deep/file"});
  auto v = verify(repo, "all", {}, {});
  REQUIRE(v.size() == 1);
  CHECK(v[0].verification.ok);
}

TEST_CASE("verify with the restore-test server down records nothing and throws; the good backups survive prune") {
  TempDir dir;
  FixedClock clock("2026-11-01T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  Manifest a = add(repo, clock, "2026-11-01T02:00:00Z");
  Manifest b = add(repo, clock, "2026-11-02T02:00:00Z");
  clock.set("2026-11-02T03:00:00Z");
  for (auto& r : verify(repo, "all", {}, {})) CHECK(r.verification.ok);
  std::string record_a = testutil::slurp(dir / (a.path + Verification::kSuffix));
  VerifyOptions vo;
  vo.restore_test_conninfo =
      fmt::format("host=127.0.0.1 port={} user=nobody dbname=postgres connect_timeout=5", refused_port());
  clock.set("2026-11-03T00:00:00Z");
  try {
    verify(repo, "all", vo, {});
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::connection);
    CHECK(std::string(e.what()).find("could not verify " + a.id) == 0);
    CHECK(std::string(e.what()).find("not a fault of the backup: nothing recorded") != std::string::npos);
  }
  CHECK(testutil::slurp(dir / (a.path + Verification::kSuffix)) == record_a);  // still the good record
  auto cat = repo.catalog();
  REQUIRE(cat.backups.size() == 2);
  CHECK(cat.backups[0].verification->ok);
  CHECK(cat.backups[1].verification->ok);
  Manifest c = add(repo, clock, "2026-11-03T02:00:00Z");
  PruneOptions o;
  o.policy.keep_last = 1;
  prune(repo, o, parse_rfc3339("2026-11-04T00:00:00Z"), {});
  std::vector<std::string> left;
  for (auto& m : repo.list()) left.push_back(m.id);
  CHECK(left == std::vector<std::string>{b.id, c.id});  // the newest good one, and the last
}

TEST_CASE("a backup that verified good and later failed is kept by prune until a newer one verifies good") {
  TempDir dir;
  FixedClock clock("2026-11-01T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  Manifest a = add(repo, clock, "2026-11-01T02:00:00Z");
  clock.set("2026-11-01T03:00:00Z");
  REQUIRE(verify(repo, a.id, {}, {})[0].verification.ok);
  Verification failed;
  failed.verified_at = "2026-11-02T00:00:00Z";
  failed.message = "restore: pg_restore exited 1";
  repo.record_verification(a, failed);
  auto rec = repo.catalog().backups[0].verification;
  REQUIRE(rec);
  CHECK_FALSE(rec->ok);
  CHECK(rec->last_ok_at == "2026-11-01T03:00:00Z");
  failed.verified_at = "2026-11-03T00:00:00Z";
  repo.record_verification(a, failed);  // a second failure keeps when it was last good
  CHECK(repo.catalog().backups[0].verification->last_ok_at == "2026-11-01T03:00:00Z");
  Manifest b = add(repo, clock, "2026-11-03T02:00:00Z");
  PruneOptions o;
  o.policy.keep_last = 1;
  prune(repo, o, parse_rfc3339("2026-11-04T00:00:00Z"), {});
  CHECK(repo.list().size() == 2);
  clock.set("2026-11-04T01:00:00Z");
  REQUIRE(verify(repo, b.id, {}, {})[0].verification.ok);
  prune(repo, o, parse_rfc3339("2026-11-04T02:00:00Z"), {});
  auto left = repo.list();
  REQUIRE(left.size() == 1);
  CHECK(left[0].id == b.id);
}

TEST_CASE("restore stops as soon as the output passes the manifest's payload size (a decompression bomb)") {
  TempDir dir;
  FixedClock clock("2026-11-01T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  Manifest m = add(repo, clock, "2026-11-01T02:00:00Z");
  // The artifact swapped for 64 MiB of zeros (64 KiB gzipped); its stored size and
  // SHA-256 made to match, the payload size left at what the manifest declared.
  repo.storage().remove(m.path);
  MemorySource bomb(std::vector<std::byte>(64 << 20));
  StoredDigest d = store_compressed(repo.storage(), m.path, bomb, Compression::gzip, 1, {}, "test");
  Manifest hostile = m;
  hostile.size = d.size;
  hostile.sha256 = d.sha256;
  repo.storage().remove(m.key());
  repo.storage().write_small(m.key(), hostile.to_string());

  struct Counting final : Sink {
    uint64_t n = 0;
    bool committed = false;
    void write(Bytes b) override { n += b.size(); }
    void commit() override { committed = true; }
    void abort() noexcept override {}
  } sink;
  try {
    repo.restore_stream(hostile, sink, {});
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::corrupt);
    CHECK(std::string(e.what()).find(fmt::format("the payload of {} is larger than the {} bytes its manifest declares; "
                                                 "stopped after ",
                                                 m.path, m.payload_size)) == 0);
  }
  CHECK(sink.n <= m.payload_size);
  CHECK_FALSE(sink.committed);
  auto v = verify(repo, m.id, {}, {});
  CHECK_FALSE(v[0].verification.ok);
  CHECK(v[0].verification.message.find("larger than the 5000 bytes its manifest declares") != std::string::npos);
}
