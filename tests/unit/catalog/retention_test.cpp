#include <doctest/doctest.h>

#include <map>
#include <random>
#include <set>

#include "../helpers.hpp"

using namespace mevbackup;

namespace {

TimePoint at(const std::string& t) { return parse_rfc3339(t); }

RetentionItem item(const std::string& id, const std::string& t, BackupState s = BackupState::unverified,
                   const std::string& source = "mev_protection") {
  return {id, "postgres", source, at(t), s};
}

std::map<std::string, bool> kept(const std::vector<RetentionDecision>& ds) {
  std::map<std::string, bool> m;
  for (auto& d : ds) m[d.id] = d.keep;
  return m;
}

// One backup a day at 02:00 for `days` days ending at `last`.
std::vector<RetentionItem> daily(int days, const std::string& last) {
  std::vector<RetentionItem> v;
  for (int i = 0; i < days; ++i) {
    TimePoint t = at(last) - std::chrono::hours(24) * i;
    v.push_back({format_name_stamp(t), "postgres", "db", t, BackupState::unverified});
  }
  return v;
}

}  // namespace

TEST_CASE("keep-days: backups stopped 40 days ago are not all deleted (the runbook's flaw)") {
  auto backups = daily(60, "2026-10-18T02:00:00Z");  // the newest is 40 days old at "now"
  RetentionPolicy p;
  p.keep_days = 30;
  auto ds = apply_retention(backups, {}, p, at("2026-11-27T02:00:00Z"));
  size_t keep = 0;
  for (auto& d : ds) keep += d.keep;
  CHECK(keep == 1);
  CHECK(kept(ds)["20261018_020000"]);
  for (auto& d : ds)
    if (d.id == "20261018_020000") CHECK(d.reason.find("one of the last 1") != std::string::npos);
}

TEST_CASE("keep-days keeps what is younger, deletes the rest with a reason") {
  auto backups = daily(40, "2026-11-27T02:00:00Z");
  RetentionPolicy p;
  p.keep_days = 30;
  auto ds = apply_retention(backups, {}, p, at("2026-11-27T03:00:00Z"));
  size_t keep = 0;
  for (auto& d : ds) {
    keep += d.keep;
    CHECK_FALSE(d.reason.empty());
    if (!d.keep) CHECK(d.reason == "matches no keep rule");
  }
  CHECK(keep == 30);
}

TEST_CASE("calendar buckets as restic: daily, weekly, monthly, yearly keep the newest of each") {
  std::vector<RetentionItem> b = {
      item("a", "2026-11-27T02:00:00Z"), item("b", "2026-11-27T01:00:00Z"),  // same day: only a is daily
      item("c", "2026-11-26T02:00:00Z"), item("d", "2026-11-20T02:00:00Z"),  // ISO week 47
      item("e", "2026-10-31T02:00:00Z"), item("f", "2026-10-01T02:00:00Z"), item("g", "2025-12-31T02:00:00Z"),
  };
  RetentionPolicy p;
  p.keep_daily = 2;
  p.keep_weekly = 2;
  p.keep_monthly = 2;
  p.keep_yearly = 2;
  auto k = kept(apply_retention(b, {}, p, at("2026-11-27T03:00:00Z")));
  CHECK(k["a"]);        // last 1, daily, weekly, monthly, yearly
  CHECK_FALSE(k["b"]);  // same day, week, month, year as a newer one
  CHECK(k["c"]);        // second daily
  CHECK(k["d"]);        // second weekly (week 47)
  CHECK(k["e"]);        // second monthly (2026-10)
  CHECK_FALSE(k["f"]);  // third month
  CHECK(k["g"]);        // second yearly (2025)
}

TEST_CASE("verification states: the newest good backup survives, failed ones go only when something usable stays") {
  std::vector<RetentionItem> b = {
      item("new-failed", "2026-11-27T02:00:00Z", BackupState::failed),
      item("newer", "2026-11-26T02:00:00Z"),
      item("good", "2026-11-01T02:00:00Z", BackupState::good),
      item("old", "2026-10-01T02:00:00Z"),
  };
  RetentionPolicy p;
  auto k = kept(apply_retention(b, {}, p, at("2026-11-27T03:00:00Z")));
  CHECK_FALSE(k["new-failed"]);  // never counts as the "last" backup
  CHECK(k["newer"]);
  CHECK(k["good"]);
  CHECK_FALSE(k["old"]);

  std::vector<RetentionItem> only_failed = {item("x", "2026-11-27T02:00:00Z", BackupState::failed),
                                            item("y", "2026-11-26T02:00:00Z", BackupState::failed)};
  auto k2 = kept(apply_retention(only_failed, {}, p, at("2026-11-27T03:00:00Z")));
  CHECK(k2["x"]);
  CHECK(k2["y"]);
}

TEST_CASE("groups are per kind and source") {
  std::vector<RetentionItem> b = {item("a1", "2026-11-27T02:00:00Z", BackupState::unverified, "a"),
                                  item("a2", "2026-11-26T02:00:00Z", BackupState::unverified, "a"),
                                  item("b1", "2026-01-01T02:00:00Z", BackupState::unverified, "b")};
  b.push_back({"r1", "redis", "a", at("2025-01-01T00:00:00Z"), BackupState::unverified});
  auto k = kept(apply_retention(b, {}, RetentionPolicy{}, at("2026-11-27T03:00:00Z")));
  CHECK(k["a1"]);
  CHECK_FALSE(k["a2"]);
  CHECK(k["b1"]);
  CHECK(k["r1"]);
}

TEST_CASE("incomplete objects go only after the grace period") {
  std::vector<IncompleteItem> inc = {{"database/x.dump.gz", at("2026-11-27T01:00:00Z")},
                                     {"database/y.dump.gz", at("2026-11-25T01:00:00Z")}};
  auto ds = apply_retention({}, inc, RetentionPolicy{}, at("2026-11-27T03:00:00Z"));
  REQUIRE(ds.size() == 2);
  CHECK(ds[0].keep);
  CHECK(ds[0].incomplete);
  CHECK_FALSE(ds[1].keep);
  CHECK(ds[1].reason.find("incomplete") != std::string::npos);
}

TEST_CASE("bad policies are refused by name") {
  RetentionPolicy p;
  p.keep_last = 0;
  CHECK_THROWS_WITH_AS(p.validate(),
                       "keep-last must be at least 1 (got 0): retention never deletes the newest backup", Error);
  p.keep_last = 1;
  p.keep_weekly = -2;
  CHECK_THROWS_WITH_AS(p.validate(), "keep-weekly must not be negative (got -2)", Error);
}

TEST_CASE("property: over random catalogs and policies, the invariants hold") {
  std::mt19937_64 rng(20261127);
  TimePoint now = at("2026-11-27T00:00:00Z");
  for (int round = 0; round < 2000; ++round) {
    CAPTURE(round);
    std::vector<RetentionItem> b;
    int n = static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      TimePoint t = now - std::chrono::seconds(rng() % (800LL * 86400));
      int st = static_cast<int>(rng() % 5);
      b.push_back({fmt::format("b{}", i), rng() % 4 ? "postgres" : "redis", fmt::format("s{}", rng() % 3), t,
                   st == 0 ? BackupState::failed : st == 1 ? BackupState::good : BackupState::unverified});
    }
    std::vector<IncompleteItem> inc;
    for (int i = 0, m = static_cast<int>(rng() % 4); i < m; ++i)
      inc.push_back({fmt::format("inc{}", i), now - std::chrono::seconds(rng() % (3 * 86400))});
    RetentionPolicy p;
    p.keep_last = 1 + static_cast<int>(rng() % 5);
    p.keep_days = static_cast<int>(rng() % 3) ? 0 : static_cast<int>(rng() % 60);
    p.keep_daily = static_cast<int>(rng() % 8);
    p.keep_weekly = static_cast<int>(rng() % 5);
    p.keep_monthly = static_cast<int>(rng() % 13);
    p.keep_yearly = static_cast<int>(rng() % 3);
    auto ds = apply_retention(b, inc, p, now);
    REQUIRE(ds.size() == b.size() + inc.size());
    auto k = kept(ds);
    for (auto& d : ds) CHECK_FALSE(d.reason.empty());
    // Per group: the newest good one is kept; at least min(keep_last, usable) usable ones stay.
    std::map<std::pair<std::string, std::string>, std::vector<const RetentionItem*>> groups;
    for (auto& x : b) groups[{x.kind, x.source}].push_back(&x);
    for (auto& [g, xs] : groups) {
      const RetentionItem* newest_good = nullptr;
      size_t usable = 0, usable_kept = 0;
      for (auto* x : xs) {
        if (x->state == BackupState::good && (!newest_good || x->created > newest_good->created)) newest_good = x;
        if (x->state != BackupState::failed) {
          ++usable;
          usable_kept += k[x->id];
        }
      }
      if (newest_good) CHECK(k[newest_good->id]);
      CHECK(usable_kept >= std::min<size_t>(usable, static_cast<size_t>(p.keep_last)));
      if (usable == 0)
        for (auto* x : xs) CHECK(k[x->id]);  // nothing usable: nothing deleted
    }
    for (auto& i : inc)
      if (i.stored + p.incomplete_grace > now) CHECK(k[i.key]);
    // Deterministic whatever the input order.
    auto shuffled = b;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    auto k2 = kept(apply_retention(shuffled, inc, p, now));
    CHECK(k2 == k);
  }
}

TEST_CASE("durations") {
  CHECK(parse_duration("25h").count() == 90000);
  CHECK(parse_duration("1d12h").count() == 129600);
  CHECK(parse_duration("2w").count() == 1209600);
  CHECK(parse_duration("90s").count() == 90);
  for (auto bad : {"", "h", "5", "5x", "-1h", "0s"}) CHECK_THROWS_AS(parse_duration(bad), Error);
}

TEST_CASE("a backup finished in the future (a wrong clock) takes no keep-last slot and is kept, not deleted") {
  // keep_last 1 kept the future-dated backup as "the newest" and deleted the real newest.
  std::vector<RetentionItem> v = {item("old", "2026-11-01T02:00:00Z"), item("real_newest", "2026-11-02T02:00:00Z"),
                                  item("wrong_clock", "2027-05-01T02:00:00Z")};
  v[1].finished = at("2026-11-02T02:05:00Z");
  RetentionPolicy p;
  p.keep_last = 1;
  auto ds = apply_retention(v, {}, p, at("2026-11-02T03:00:00Z"));
  CHECK(kept(ds) == std::map<std::string, bool>{{"old", false}, {"real_newest", true}, {"wrong_clock", true}});
  CHECK(ds[2].reason.find("2027-05-01T02:00:00Z") != std::string::npos);
  CHECK(ds[2].reason.find("counted for no rule") != std::string::npos);
  CHECK(ds[1].reason == "one of the last 1");

  // Within the allowance (clocks differ a little) a backup counts as usual.
  v[2] = item("slightly_ahead", "2026-11-02T03:05:00Z");
  ds = apply_retention(v, {}, p, at("2026-11-02T03:00:00Z"));
  CHECK(kept(ds) == std::map<std::string, bool>{{"old", false}, {"real_newest", false}, {"slightly_ahead", true}});
  p.future_allowance = std::chrono::seconds(60);
  ds = apply_retention(v, {}, p, at("2026-11-02T03:00:00Z"));
  CHECK(kept(ds) == std::map<std::string, bool>{{"old", false}, {"real_newest", true}, {"slightly_ahead", true}});
  p.future_allowance = std::chrono::seconds(-1);
  CHECK_THROWS_AS(apply_retention(v, {}, p, at("2026-11-02T03:00:00Z")), Error);
}

TEST_CASE("the newest backup that ever verified good stays until a newer one verifies good") {
  std::vector<RetentionItem> v = {item("a", "2026-11-01T02:00:00Z", BackupState::failed),
                                  item("b", "2026-11-02T02:00:00Z", BackupState::failed),
                                  item("c", "2026-11-03T02:00:00Z", BackupState::unverified)};
  v[0].ever_good = v[1].ever_good = true;  // both verified good once, then failed
  RetentionPolicy p;
  p.keep_last = 1;
  auto now = at("2026-11-04T00:00:00Z");
  auto ds = apply_retention(v, {}, p, now);
  CHECK(kept(ds) == std::map<std::string, bool>{{"a", false}, {"b", true}, {"c", true}});
  CHECK(ds[1].reason == "newest backup that ever verified good (no newer one has)");
  CHECK(ds[0].reason == "failed verification");
  v[2].state = BackupState::good;  // now a newer one has
  CHECK(kept(apply_retention(v, {}, p, now)) == std::map<std::string, bool>{{"a", false}, {"b", false}, {"c", true}});
}
