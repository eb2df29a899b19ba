// Kinds (kinds.hpp): the catalog, verify, prune and sync ask the registry, so a kind
// nobody built in works like the built-in ones, and a registered kind's own parts go
// wherever its backups go.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "../helpers.hpp"
#include "mevbackup/kinds.hpp"
#include "mevbackup/maintenance.hpp"
#include "mevbackup/sync.hpp"

using namespace mevbackup;
using testutil::files_under;
using testutil::FixedClock;
using testutil::random_bytes;
using testutil::TempDir;

namespace {

Manifest put(Repository& repo, const std::string& kind, const std::vector<std::byte>& data,
             const std::function<void(Manifest&, const RunContext&)>& parts = {}) {
  MemorySource src(data);
  ArtifactSpec spec;
  spec.kind = kind;
  spec.dir = kind_directory(kind);
  spec.name_prefix = "service";
  spec.extension = ".json";
  spec.format = "json";
  return repo.publish(src, spec, {}, {}, parts);
}

}  // namespace

TEST_CASE("built-in kinds bring their directories; a user kind gets its own name; bad names are refused") {
  CHECK(kind_directory("postgres") == "database");
  CHECK(kind_directory("files") == "config");
  CHECK(kind_directory("redis") == "redis");
  CHECK(kind_directory("basebackup") == "basebackup");
  CHECK(kind_directory("export") == "export");
  CHECK(find_kind("postgres") != nullptr);
  for (const char* bad : {"", "Export", "1x", "a/b", "..", "a b", "database", "config", "wal", "locks"}) {
    CAPTURE(bad);
    try {
      kind_directory(bad);
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK(e.code() == Code::invalid_argument);
    }
  }
}

TEST_CASE("a user kind is listed, verified, pruned and synced like a built-in one") {
  TempDir dir;
  FixedClock clock("2026-11-27T02:00:00Z");
  Repository repo(make_local_storage(dir / "repo"), clock);
  Manifest a = put(repo, "export", random_bytes(300'000, 1));
  clock.set("2026-11-28T02:00:00Z");
  Manifest b = put(repo, "export", random_bytes(300'000, 2));
  CHECK(a.path == "export/service_20261127_020000.json.gz");
  auto listed = repo.list("export");
  REQUIRE(listed.size() == 2);
  CHECK(repo.catalog().incomplete.empty());

  auto v = verify(repo, "all", {}, {});
  REQUIRE(v.size() == 2);
  CHECK(v[0].verification.ok);
  CHECK(v[1].verification.ok);

  Repository mirror(make_local_storage(dir / "mirror"));
  SyncResult s = sync_repositories(repo, mirror, "export", {});
  CHECK(s.copied.size() == 2);
  CHECK(mirror.list("export").size() == 2);

  PruneOptions po;
  po.policy.keep_last = 1;
  PruneResult r = prune(repo, po, parse_rfc3339("2026-12-01T00:00:00Z"), {});
  CHECK(r.deleted == 1);
  REQUIRE(repo.list("export").size() == 1);
  CHECK(repo.list("export")[0].id == b.id);

  // A damaged one fails verification.
  auto path = dir / ("repo/" + b.path);
  auto bytes = testutil::slurp(path);
  bytes[bytes.size() / 2] ^= 1;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  auto bad = verify(repo, b.id, {}, {});
  REQUIRE(bad.size() == 1);
  CHECK_FALSE(bad[0].verification.ok);
}

TEST_CASE("a registered kind's own parts are kept out of leftovers, copied by sync and deleted by prune") {
  BackupKind k;
  k.name = "withparts";
  k.extra_parts = [](const Manifest& m) {
    std::vector<Manifest::Part> out;
    if (m.source.contains("index")) out.push_back({m.path + ".index", m.source["index"]["size"].get<uint64_t>(),
                                                   m.source["index"]["sha256"].get<std::string>()});
    // A part outside the backup's directory is never taken, whatever the manifest says.
    out.push_back({"config/someone_else.tar.gz", 1, std::string(64, '0')});
    return out;
  };
  k.owns = [](const std::string& key, const std::set<std::string>& keys) {
    const std::string sfx = ".index";
    return key.size() > sfx.size() && key.compare(key.size() - sfx.size(), sfx.size(), sfx) == 0 &&
           keys.count(key.substr(0, key.size() - sfx.size()) + Manifest::kManifestSuffix);
  };
  int checked = 0;
  k.verify = [&](Repository&, const Manifest&, const RunContext&, const VerifyCheckFn& check) {
    ++checked;
    check("index", true, "present");
  };
  register_kind(k);
  CHECK(kind_directory("withparts") == "withparts");

  TempDir dir;
  FixedClock clock("2026-11-27T02:00:00Z");
  Repository repo(make_local_storage(dir / "repo"), clock);
  auto with_index = [&](Manifest& m, const RunContext&) {
    std::string text = "index of " + m.id;
    repo.storage().write_small(m.path + ".index", text);
    std::vector<std::byte> raw(text.size());
    std::memcpy(raw.data(), text.data(), text.size());
    m.source["index"] = {{"size", text.size()}, {"sha256", Sha256::of(Bytes(raw))}};
  };
  Manifest a = put(repo, "withparts", random_bytes(1000, 3), with_index);
  clock.set("2026-11-28T02:00:00Z");
  Manifest b = put(repo, "withparts", random_bytes(1000, 4), with_index);
  CHECK(a.extra_paths() == std::vector<std::string>{a.path + ".index"});
  CHECK(repo.catalog().incomplete.empty());

  auto v = verify(repo, "all", {}, {});
  CHECK(checked == 2);
  CHECK(v[0].verification.checks.back()["check"] == "index");

  Repository mirror(make_local_storage(dir / "mirror"));
  sync_repositories(repo, mirror, "withparts", {});
  CHECK(testutil::slurp(dir / ("mirror/" + b.path + ".index")) == testutil::slurp(dir / ("repo/" + b.path + ".index")));

  PruneOptions po;
  po.policy.keep_last = 1;
  prune(repo, po, parse_rfc3339("2026-12-01T00:00:00Z"), {});
  auto left = files_under(dir / "repo/withparts");
  CHECK(std::find(left.begin(), left.end(), a.path.substr(10) + ".index") == left.end());
  CHECK(std::find(left.begin(), left.end(), b.path.substr(10) + ".index") != left.end());
}
