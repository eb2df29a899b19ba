#include <doctest/doctest.h>

#include <mevbackup.h>

#include "../helpers.hpp"

using namespace mevbackup;

namespace {
Manifest sample() {
  Manifest m;
  m.id = "mev_protection_20261127_020000";
  m.kind = "postgres";
  m.path = "database/mev_protection_20261127_020000.dump.gz";
  m.format = "pg_dump-custom";
  m.compression = "gzip";
  m.size = 1234;
  m.sha256 = std::string(64, 'a');
  m.payload_size = 5678;
  m.payload_sha256 = std::string(64, 'b');
  m.started_at = "2026-11-27T02:00:00Z";
  m.finished_at = "2026-11-27T02:00:09Z";
  m.source_name = "mev_protection";
  m.source = {{"server_version", "15.18"}, {"tables", {{{"table", "t"}, {"rows", 3}, {"exact", true}}}}};
  return m;
}
}  // namespace

TEST_CASE("a manifest round-trips through JSON") {
  Manifest m = sample();
  Manifest back = Manifest::parse(m.to_string(), "x");
  CHECK(back.to_json() == m.to_json());
  CHECK(back.key() == "database/mev_protection_20261127_020000.dump.gz.manifest.json");
  auto j = nlohmann::json::parse(m.to_string());
  CHECK(j["created_at"] == "2026-11-27T02:00:00Z");
  CHECK(j["manifest_version"] == 1);
}

TEST_CASE("invalid manifests are rejected with the field named") {
  auto j = sample().to_json();
  j.erase("sha256");
  CHECK_THROWS_WITH_AS(Manifest::from_json(j, "m.json"),
                       "manifest m.json is invalid: field \"sha256\" missing or not a string", Error);
  j = sample().to_json();
  j["size"] = -1;
  CHECK_THROWS_WITH_AS(Manifest::from_json(j, "m.json"),
                       "manifest m.json is invalid: field \"size\" missing or not a non-negative integer", Error);
  CHECK_THROWS_WITH_AS(Manifest::parse("{not json", "m.json"), "manifest m.json is not valid JSON", Error);
  j = sample().to_json();
  j["manifest_version"] = 99;
  try {
    Manifest::from_json(j, "m.json");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::unsupported);
  }
}

TEST_CASE("one_line folds multi-line messages") {
  CHECK(one_line("a\n\tIs the server running?\n") == "a; Is the server running?");
  CHECK(one_line("pg_dump: error: x\npg_dump: detail: y\n\n") == "pg_dump: error: x; pg_dump: detail: y");
  CHECK(one_line("  lots   of\tspace ") == " lots of space");
}

TEST_CASE("RFC 3339 times parse and format in UTC") {
  auto t = parse_rfc3339("2026-11-27T04:27:23Z");
  CHECK(format_rfc3339(t) == "2026-11-27T04:27:23Z");
  CHECK(format_name_stamp(t) == "20261127_042723");
  CHECK(format_rfc3339(parse_rfc3339("2026-11-27T06:27:23.5+02:00")) == "2026-11-27T04:27:23Z");
  CHECK_THROWS_AS(parse_rfc3339("yesterday"), Error);
  CHECK_THROWS_AS(parse_rfc3339("2026-13-01T00:00:00Z"), Error);
}

TEST_CASE("one time parser: every accepted spelling, and why a text is refused") {
  TimePoint t = parse_rfc3339("2026-11-27T04:27:23Z");
  for (const char* same : {"2026-11-27 04:27:23Z", "2026-11-27T04:27:23.000Z", "2026-11-27T05:27:23+01:00",
                           "2026-11-27T05:27:23+01", "2026-11-27 05:27:23 +0100", "2026-11-27T02:57:23-01:30"}) {
    auto p = try_parse_time(same);
    REQUIRE_MESSAGE(p.has_value(), same);
    CHECK_MESSAGE(*p == t, same);
  }
  CHECK(*try_parse_time("2026-11-27T04:27:23.25Z") - t == std::chrono::milliseconds(250));
  std::string why;
  CHECK_FALSE(try_parse_time("2026-11-27T04:27:23", &why));
  CHECK(why == "has no time zone");
  CHECK_FALSE(try_parse_time("2026-11-27T04:27:23Zjunk", &why));
  CHECK(why == "has trailing characters");
  CHECK_FALSE(try_parse_time("2026-11-27T24:00:00Z", &why));
  CHECK(why == "is out of range");
  CHECK_FALSE(try_parse_time("2026-11-27T04:27:23.Z", &why));
  CHECK(why == "has an empty fraction");
  CHECK_FALSE(try_parse_time("-2147483648-01-01T00:00:00Z", &why));
  CHECK_FALSE(try_parse_time("1013-11-27T02:00:07.000Z", &why));  // nanoseconds since 1970 overflow (fuzzer)
  CHECK(why == "is out of range");
  CHECK_FALSE(try_parse_time("9999-12-31T23:59:59Z"));
  CHECK(try_parse_time("2200-01-01T00:00:00Z").has_value());
  std::string msg;
  try {
    parse_rfc3339("2026-11-27 04:27");
  } catch (const Error& e) {
    msg = e.what();
  }
  CHECK(msg.find("\"2026-11-27 04:27\": it is not a date and time") != std::string::npos);
}

TEST_CASE("the version agrees across the build, the C header and the C++ core") {
  CHECK(std::string(kVersionString) == MEVB_PROJECT_VERSION);
  CHECK(MEVB_VERSION_NUMBER == kVersionMajor * 10000 + kVersionMinor * 100 + kVersionPatch);
  CHECK(std::to_string(MEVB_VERSION_MAJOR) + "." + std::to_string(MEVB_VERSION_MINOR) + "." +
            std::to_string(MEVB_VERSION_PATCH) ==
        kVersionString);
}
