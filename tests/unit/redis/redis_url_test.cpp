#include <doctest/doctest.h>

#include <cstdlib>

#include "redis/redis_conn.hpp"

using namespace mevbackup;
using namespace mevbackup::redis;

TEST_CASE("redis:// URLs") {
  ::unsetenv("MEVBACKUP_REDIS_PASSWORD");
  Url u = parse_url("redis://127.0.0.1");
  CHECK(u.host == "127.0.0.1");
  CHECK(u.port == 6379);
  CHECK(u.user.empty());
  CHECK(u.password.empty());

  u = parse_url("redis://backup:p%40ss:w@cache.internal:6380/2");
  CHECK(u.user == "backup");
  CHECK(u.password == "p@ss:w");
  CHECK(u.host == "cache.internal");
  CHECK(u.port == 6380);
  CHECK(u.redacted() == "redis://backup@cache.internal:6380");

  u = parse_url("redis://[::1]:7000");
  CHECK(u.host == "::1");
  CHECK(u.redacted() == "redis://[::1]:7000");

  // The explicit password wins, then the URL's, then the fallback (which the CLI and the
  // bindings fill from MEVBACKUP_REDIS_PASSWORD: the library does not read it).
  CHECK(parse_url("redis://:url-pw@h:1", "opt-pw").password == "opt-pw");
  CHECK(parse_url("redis://h:1", "", "fallback-pw").password == "fallback-pw");
  CHECK(parse_url("redis://:url-pw@h:1", "", "fallback-pw").password == "url-pw");
  CHECK(parse_url("redis://h:1", "opt-pw", "fallback-pw").password == "opt-pw");
  ::setenv("MEVBACKUP_REDIS_PASSWORD", "env-pw", 1);
  CHECK(parse_url("redis://h:1").password.empty());
  ::unsetenv("MEVBACKUP_REDIS_PASSWORD");
}

TEST_CASE("bad URLs are refused without showing their password") {
  for (const char* bad : {"http://h:1", "redis://:secret@h:99999", "redis://:secret@h:x", "redis://:secret@",
                          "redis://:secret@h:1/db", "rediss://:secret@h:1", "redis://:secret@[::1"}) {
    try {
      parse_url(bad);
      FAIL("accepted " << bad);
    } catch (const Error& e) {
      CHECK(e.code() == Code::invalid_argument);
      CHECK(std::string(e.what()).find("secret") == std::string::npos);
    }
  }
  CHECK(redact("see redis://u:pw@h:1/0 and redis://h:2") == "see redis://u:***@h:1/0 and redis://h:2");
  CHECK(redact("redis://:pw@h") == "redis://:***@h");
}

TEST_CASE("connection failures are retriable connection errors") {
  try {
    Conn::connect(parse_url("redis://127.0.0.1:1"), 2);
    FAIL("connected to port 1");
  } catch (const Error& e) {
    CHECK(e.code() == Code::connection);
    CHECK(e.retriable());
  }
}
