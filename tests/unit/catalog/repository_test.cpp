#include <doctest/doctest.h>

#include "../helpers.hpp"

using namespace mevbackup;
using testutil::files_under;
using testutil::FixedClock;
using testutil::random_bytes;
using testutil::TempDir;

namespace {

ArtifactSpec pg_spec() {
  ArtifactSpec s;
  s.kind = "postgres";
  s.dir = "database";
  s.name_prefix = "mev_protection";
  s.extension = ".dump";
  s.format = "pg_dump-custom";
  return s;
}

class BrokenSource final : public Source {
 public:
  size_t read(MutBytes buf) override {
    if (n_++ > 3) throw Error(Code::dump_failed, "pg_dump exited with status 1");
    std::memset(buf.data(), 'z', buf.size());
    return buf.size();
  }

 private:
  int n_ = 0;
};

}  // namespace

TEST_CASE("publish names the artifact as the runbook did and writes the manifest beside it") {
  TempDir dir;
  FixedClock clock("2026-11-27T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  auto data = random_bytes(500000);
  MemorySource src(data);
  Manifest m = repo.publish(src, pg_spec(), {}, [](Manifest& m) { m.source["extra"] = 1; });
  CHECK(m.id == "mev_protection_20261127_020000");
  CHECK(m.path == "database/mev_protection_20261127_020000.dump.gz");
  CHECK(files_under(dir.path()) == std::vector<std::string>{"database/mev_protection_20261127_020000.dump.gz",
                                                            "database/mev_protection_20261127_020000.dump.gz.manifest.json"});
  std::string stored = testutil::slurp(dir / m.path);
  CHECK(m.size == stored.size());
  CHECK(m.sha256 == Sha256::of(Bytes(reinterpret_cast<const std::byte*>(stored.data()), stored.size())));
  CHECK(m.payload_size == data.size());
  CHECK(m.payload_sha256 == Sha256::of(Bytes(data.data(), data.size())));
  CHECK(m.source["extra"] == 1);

  // Same second: a distinct name; the first backup is untouched.
  MemorySource src2(random_bytes(1000, 9));
  Manifest m2 = repo.publish(src2, pg_spec(), {}, {});
  CHECK(m2.id == "mev_protection_20261127_020000_1");
  CHECK(testutil::slurp(dir / m.path) == stored);

  // Restore stream gives back the payload.
  MemorySink out;
  repo.restore_stream(m, out, {});
  CHECK(out.committed);
  CHECK(out.data == data);
}

TEST_CASE("a failed source leaves nothing, and earlier backups are untouched") {
  TempDir dir;
  FixedClock clock("2026-11-27T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  MemorySource ok(random_bytes(1000));
  repo.publish(ok, pg_spec(), {}, {});
  auto before = files_under(dir.path());
  clock.set("2026-11-28T02:00:00Z");
  BrokenSource bad;
  CHECK_THROWS_WITH_AS(repo.publish(bad, pg_spec(), {}, {}), "pg_dump exited with status 1", Error);
  CHECK(files_under(dir.path()) == before);
  CHECK(repo.list().size() == 1);
}

TEST_CASE("the catalog reads manifests only: an artifact without one is not a backup") {
  TempDir dir;
  FixedClock clock("2026-11-27T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  repo.storage().write_small("database/orphan_20261101_000000.dump.gz", "not a backup");
  repo.storage().write_small("database/broken_20261101_000000.dump.gz.manifest.json", "{oops");
  MemorySource a(random_bytes(100));
  repo.publish(a, pg_spec(), {}, {});
  clock.set("2026-11-28T02:00:00Z");
  MemorySource b(random_bytes(100, 5));
  repo.publish(b, pg_spec(), {}, {});
  std::vector<std::string> warnings;
  auto list = repo.list("postgres", [&](LogLevel, const std::string& m) { warnings.push_back(m); });
  REQUIRE(list.size() == 2);
  CHECK(list[0].id == "mev_protection_20261127_020000");
  CHECK(list[1].id == "mev_protection_20261128_020000");
  CHECK(warnings.size() == 1);
  CHECK(warnings[0].find("broken_20261101_000000") != std::string::npos);
  CHECK(repo.find("latest", "postgres").id == "mev_protection_20261128_020000");
  CHECK(repo.find("mev_protection_20261127_020000", "postgres").id == "mev_protection_20261127_020000");
  CHECK_THROWS_WITH_AS(repo.find("nope", "postgres"),
                       ("no postgres backup \"nope\" in " + dir.path()).c_str(), Error);
  CHECK(repo.list("redis").empty());
}

TEST_CASE("latest is ambiguous across sources unless one is named") {
  TempDir dir;
  FixedClock clock("2026-11-27T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  auto spec = pg_spec();
  MemorySource a(random_bytes(100));
  repo.publish(a, spec, {}, {});
  spec.name_prefix = "other";
  MemorySource b(random_bytes(100));
  repo.publish(b, spec, {}, {});
  CHECK_THROWS_AS(repo.find("latest", "postgres"), Error);
  CHECK(repo.find("latest", "postgres", "other").id == "other_20261127_020000");
}

TEST_CASE("restore_stream refuses an artifact whose bytes differ from the manifest") {
  TempDir dir;
  FixedClock clock("2026-11-27T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  MemorySource src(random_bytes(200000, 3, false));
  Manifest m = repo.publish(src, pg_spec(), {}, {});
  // Flip one byte in place (same size): only the checksum can tell.
  FILE* f = fopen((dir / m.path).c_str(), "r+b");
  REQUIRE(f);
  fseek(f, 100, SEEK_SET);
  int c = fgetc(f);
  fseek(f, 100, SEEK_SET);
  fputc(c ^ 1, f);
  fclose(f);
  MemorySink out;
  try {
    repo.restore_stream(m, out, {});
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::corrupt);
  }
  CHECK_FALSE(out.committed);
  CHECK(out.aborted);
}

TEST_CASE("bad name prefixes are refused before anything is written") {
  TempDir dir;
  Repository repo(make_local_storage(dir.path()));
  auto spec = pg_spec();
  for (auto p : {"", "../x", "a/b", ".hidden", "sp ace"}) {
    spec.name_prefix = p;
    MemorySource src(random_bytes(10));
    CHECK_THROWS_AS(repo.publish(src, spec, {}, {}), Error);
  }
  CHECK(files_under(dir.path()).empty());
}

TEST_CASE("the catalog keeps summaries of large manifests; find and load read the whole one") {
  TempDir dir;
  FixedClock clock("2026-11-27T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  const int tables = 60000;  // row counts per table: about 5 MiB of manifest each
  for (int i = 0; i < 3; ++i) {
    clock.set(fmt::format("2026-11-2{}T02:00:00Z", 5 + i));
    MemorySource src(random_bytes(1000, i));
    repo.publish(src, pg_spec(), {}, [&](Manifest& m) {
      m.source["server_version"] = "15.4";
      nlohmann::json t = nlohmann::json::array();
      for (int k = 0; k < tables; ++k) t.push_back({{"schema", "public"}, {"table", fmt::format("t{}", k)}, {"rows", k}});
      m.source["tables"] = std::move(t);
    });
  }
  REQUIRE(std::filesystem::file_size(dir / "database/mev_protection_20261125_020000.dump.gz.manifest.json") > (4u << 20));
  Catalog cat = repo.catalog();
  REQUIRE(cat.backups.size() == 3);
  for (auto& e : cat.backups) {
    CHECK_FALSE(e.manifest.source.contains("tables"));
    CHECK(e.manifest.source.value("server_version", "") == "15.4");
    // What a listing needs is all there.
    CHECK(e.manifest.path.rfind("database/mev_protection_2026112", 0) == 0);
    CHECK(e.manifest.sha256.size() == 64);
  }
  // Kept in memory: a few KiB per backup, not the parsed tables (tens of MiB each).
  size_t held = 0;
  for (auto& e : cat.backups) held += e.manifest.source.dump().size() + e.manifest.to_string().size();
  CHECK(held < 16 * 1024);
  Manifest full = repo.find("latest", "postgres");
  CHECK(full.source["tables"].size() == tables);
  CHECK(repo.load(cat.backups[0].manifest).source["tables"].size() == tables);
  CHECK(repo.list().back().source.contains("tables") == false);
}

namespace {

std::vector<std::byte> pull_all(Source& s, size_t chunk) {
  std::vector<std::byte> out, buf(chunk);
  for (size_t n; (n = s.read(MutBytes(buf.data(), buf.size()))) > 0;) out.insert(out.end(), buf.begin(), buf.begin() + n);
  return out;
}

void flip_byte(const std::string& path, long at) {
  FILE* f = fopen(path.c_str(), "r+b");
  REQUIRE(f);
  fseek(f, at, SEEK_SET);
  int c = fgetc(f);
  fseek(f, at, SEEK_SET);
  fputc(c ^ 1, f);
  fclose(f);
}

}  // namespace

TEST_CASE("artifact_source pulls the payload with the checks of restore_stream") {
  TempDir dir;
  FixedClock clock("2026-11-27T02:00:00Z");
  Repository repo(make_local_storage(dir.path()), clock);
  auto payload = random_bytes(300000, 5, false);
  MemorySource src(payload);
  Manifest m = repo.publish(src, pg_spec(), {}, {});

  SUBCASE("a sound artifact, any read size") {
    for (size_t chunk : {size_t{1} << 20, size_t{4096}, size_t{7}}) {
      auto s = artifact_source(repo.storage(), m, {});
      CHECK(pull_all(*s, chunk) == payload);
      CHECK(s->read(MutBytes()) == 0);
    }
  }
  SUBCASE("one byte changed in place: corrupt at the end, and on every later read") {
    // Byte 5 is in the gzip header's mtime field: decompression itself stays sound, only
    // the manifest's checksum can tell.
    flip_byte(dir / m.path, 5);
    auto s = artifact_source(repo.storage(), m, {});
    try {
      pull_all(*s, 65536);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.code() == Code::corrupt);
      CHECK(std::string(e.what()).find("does not match the manifest") != std::string::npos);
    }
    std::byte b[16];
    CHECK_THROWS_AS(s->read(MutBytes(b, sizeof b)), Error);
  }
  SUBCASE("a manifest that claims less payload stops the read early") {
    Manifest small = m;
    small.payload_size = 1000;
    auto s = artifact_source(repo.storage(), small, {});
    CHECK_THROWS_WITH_AS(pull_all(*s, 65536), doctest::Contains("larger than the 1000 bytes"), Error);
  }
  SUBCASE("a missing artifact is not_found before any read") {
    Manifest gone = m;
    gone.path = "database/nothing.dump.gz";
    try {
      artifact_source(repo.storage(), gone, {});
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.code() == Code::not_found);
    }
  }
  SUBCASE("a cancelled run stops at the next read") {
    CancelToken cancel;
    RunContext ctx;
    ctx.cancel = &cancel;
    auto s = artifact_source(repo.storage(), m, ctx);
    std::byte b[4096];
    CHECK(s->read(MutBytes(b, sizeof b)) > 0);
    cancel.cancel();
    CHECK_THROWS_AS(s->read(MutBytes(b, sizeof b)), Error);
  }
}
