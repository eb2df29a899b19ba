// Backup names: the runbook's, with a suffix for a second backup in the same second,
// settled race-free when two runs publish at once.
#include <doctest/doctest.h>

#include <functional>

#include "../helpers.hpp"

using namespace mevbackup;
using testutil::files_under;
using testutil::FixedClock;
using testutil::random_bytes;
using testutil::TempDir;

namespace {

ArtifactSpec db_spec() {
  ArtifactSpec s;
  s.kind = "postgres";
  s.dir = "database";
  s.name_prefix = "mev_protection";
  s.extension = ".dump";
  s.format = "pg_dump-custom";
  return s;
}

// A source that, on its first read, lets `meanwhile` run: another run that publishes
// while this one is streaming (it chose its name before, when it was still free).
class RacingSource final : public Source {
 public:
  RacingSource(std::vector<std::byte> data, std::function<void()> meanwhile)
      : inner_(std::move(data)), meanwhile_(std::move(meanwhile)) {}
  size_t read(MutBytes buf) override {
    if (meanwhile_) {
      auto f = std::move(meanwhile_);
      meanwhile_ = nullptr;
      f();
    }
    return inner_.read(buf);
  }

 private:
  MemorySource inner_;
  std::function<void()> meanwhile_;
};

}  // namespace

TEST_CASE("two runs publishing in the same second both succeed, under distinct names") {
  TempDir dir;
  FixedClock clock("2026-11-27T02:00:00Z");
  Repository a(make_local_storage(dir.path()), clock), b(make_local_storage(dir.path()), clock);
  Manifest mb;
  auto data_b = random_bytes(3000, 2);
  RacingSource src(random_bytes(200000, 1), [&] {
    MemorySource other(data_b);
    mb = b.publish(other, db_spec(), {}, {});
  });
  Manifest ma = a.publish(src, db_spec(), {}, {});
  CHECK(mb.id == "mev_protection_20261127_020000");
  CHECK(ma.id == "mev_protection_20261127_020000_1");
  CHECK(ma.path == "database/mev_protection_20261127_020000_1.dump.gz");
  CHECK(files_under(dir.path()) == std::vector<std::string>{
                                       "database/mev_protection_20261127_020000.dump.gz",
                                       "database/mev_protection_20261127_020000.dump.gz.manifest.json",
                                       "database/mev_protection_20261127_020000_1.dump.gz",
                                       "database/mev_protection_20261127_020000_1.dump.gz.manifest.json"});
  // Each manifest describes its own artifact, and both restore.
  auto list = a.list();
  REQUIRE(list.size() == 2);
  for (auto& m : list) {
    CAPTURE(m.id);
    CHECK(m.key() == m.path + Manifest::kManifestSuffix);
    MemorySink out;
    a.restore_stream(m, out, {});
    CHECK(out.data.size() == (m.id == ma.id ? 200000u : 3000u));
  }
}

TEST_CASE("a run that finds its name and the next ones taken meanwhile moves on to the first free one") {
  TempDir dir;
  FixedClock clock("2026-11-27T02:00:00Z");
  Repository a(make_local_storage(dir.path()), clock), b(make_local_storage(dir.path()), clock);
  std::vector<std::string> ids;
  RacingSource src(random_bytes(1000, 1), [&] {
    for (int i = 0; i < 3; ++i) {
      MemorySource other(random_bytes(100, 10 + i));
      ids.push_back(b.publish(other, db_spec(), {}, {}).id);
    }
  });
  Manifest ma = a.publish(src, db_spec(), {}, {});
  CHECK(ids == std::vector<std::string>{"mev_protection_20261127_020000", "mev_protection_20261127_020000_1",
                                        "mev_protection_20261127_020000_2"});
  CHECK(ma.id == "mev_protection_20261127_020000_3");
  CHECK(a.list().size() == 4);
}
