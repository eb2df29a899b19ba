// How the library reaches PostgreSQL: TLS verification for remote hosts, the connect
// timeout derived from the stall timeout, and what pg_dump/pg_restore inherit from it.
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "postgres/pg_conn.hpp"

using namespace mevbackup;

namespace {

// Unsets a variable for the test's duration and puts it back.
struct EnvGuard {
  std::string name;
  std::optional<std::string> old;
  explicit EnvGuard(const char* n) : name(n) {
    if (const char* v = std::getenv(n)) old = v;
    ::unsetenv(n);
  }
  ~EnvGuard() {
    if (old) ::setenv(name.c_str(), old->c_str(), 1);
    else ::unsetenv(name.c_str());
  }
};

struct Logged {
  std::vector<std::string> warnings;
  RunContext ctx() {
    RunContext c;
    c.log = [this](LogLevel level, const std::string& m) {
      if (level == LogLevel::warning) warnings.push_back(m);
    };
    return c;
  }
};

}  // namespace

TEST_CASE("pg connect policy: remote hosts get verify-full, loopback and sockets libpq's default") {
  EnvGuard a("PGSSLMODE"), b("PGHOST"), c("PGHOSTADDR"), d("PGCONNECT_TIMEOUT");
  Logged l;
  auto ctx = l.ctx();
  CHECK(pg::connect_policy("host=db.example.com dbname=x", ctx).sslmode == "verify-full");
  CHECK(pg::connect_policy("postgresql://u@10.1.2.3:5432/x", ctx).sslmode == "verify-full");
  CHECK(pg::connect_policy("host=127.0.0.1,db.example.com dbname=x", ctx).sslmode == "verify-full");
  CHECK(pg::connect_policy("host=127.0.0.1 dbname=x", ctx).sslmode.empty());
  CHECK(pg::connect_policy("host=localhost dbname=x", ctx).sslmode.empty());
  CHECK(pg::connect_policy("host=::1 dbname=x", ctx).sslmode.empty());
  CHECK(pg::connect_policy("host=/var/run/postgresql dbname=x", ctx).sslmode.empty());
  CHECK(pg::connect_policy("dbname=x", ctx).sslmode.empty());  // the default Unix socket
  CHECK(pg::connect_policy("mydb", ctx).sslmode.empty());
  // libpq connects to hostaddr; host then only names the certificate.
  CHECK(pg::connect_policy("host=db.example.com hostaddr=127.0.0.1 dbname=x", ctx).sslmode.empty());
  CHECK(pg::connect_policy("host=localhost hostaddr=192.0.2.7 dbname=x", ctx).sslmode == "verify-full");
  CHECK(pg::connect_policy("host=127.000.0.1.example.com dbname=x", ctx).sslmode == "verify-full");
  CHECK(l.warnings.empty());
}

TEST_CASE("pg connect policy: a weaker sslmode chosen for a remote host is kept and warned about") {
  EnvGuard a("PGSSLMODE"), b("PGHOST"), c("PGHOSTADDR");
  Logged l;
  auto ctx = l.ctx();
  CHECK(pg::connect_policy("host=db.example.com sslmode=require dbname=x", ctx).sslmode.empty());
  REQUIRE(l.warnings.size() == 1);
  CHECK(l.warnings[0].find("sslmode=require") != std::string::npos);
  CHECK(l.warnings[0].find("db.example.com") != std::string::npos);
  CHECK(l.warnings[0].find("connection string") != std::string::npos);
  ::setenv("PGSSLMODE", "prefer", 1);
  CHECK(pg::connect_policy("host=db.example.com dbname=x", ctx).sslmode.empty());
  REQUIRE(l.warnings.size() == 2);
  CHECK(l.warnings[1].find("PGSSLMODE") != std::string::npos);
  // On loopback a chosen mode is nobody's business.
  CHECK(pg::connect_policy("host=127.0.0.1 sslmode=disable dbname=x", ctx).sslmode.empty());
  CHECK(l.warnings.size() == 2);
  ::unsetenv("PGSSLMODE");
  CHECK(pg::connect_policy("host=db.example.com sslmode=verify-full dbname=x", ctx).sslmode.empty());
  CHECK(l.warnings.size() == 2);
}

TEST_CASE("pg connect policy: PGHOST counts when the conninfo names no host") {
  EnvGuard a("PGSSLMODE"), b("PGHOST"), c("PGHOSTADDR");
  RunContext ctx;
  ::setenv("PGHOST", "db.example.com", 1);
  CHECK(pg::connect_policy("dbname=x", ctx).sslmode == "verify-full");
  CHECK(pg::connect_policy("host=127.0.0.1 dbname=x", ctx).sslmode.empty());
}

TEST_CASE("pg connect policy: the connect timeout is the stall timeout, else 60 s, unless chosen") {
  EnvGuard a("PGCONNECT_TIMEOUT");
  RunContext ctx;
  CHECK(pg::connect_policy("host=127.0.0.1", ctx).connect_timeout_s == 60);
  ctx.pipeline.stall_timeout = std::chrono::seconds(7);
  CHECK(pg::connect_policy("host=127.0.0.1", ctx).connect_timeout_s == 7);
  ctx.pipeline.stall_timeout = std::chrono::milliseconds(500);
  CHECK(pg::connect_policy("host=127.0.0.1", ctx).connect_timeout_s == 60);  // below a second: off
  ctx.pipeline.stall_timeout = std::chrono::seconds(1);
  CHECK(pg::connect_policy("host=127.0.0.1", ctx).connect_timeout_s == 2);  // libpq's minimum
  CHECK(pg::connect_policy("host=127.0.0.1 connect_timeout=5", ctx).connect_timeout_s == 0);
  ::setenv("PGCONNECT_TIMEOUT", "9", 1);
  CHECK(pg::connect_policy("host=127.0.0.1", ctx).connect_timeout_s == 0);
}

TEST_CASE("pg connect policy reaches the children's environment without overriding the conninfo") {
  EnvGuard a("PGSSLMODE"), b("PGHOST"), c("PGHOSTADDR"), d("PGCONNECT_TIMEOUT");
  RunContext ctx;
  ctx.pipeline.stall_timeout = std::chrono::seconds(4);
  auto env = pg::conninfo_env("host=db.example.com dbname=x");
  pg::apply_policy_env(pg::connect_policy("host=db.example.com dbname=x", ctx), env);
  CHECK(env["PGSSLMODE"] == std::optional<std::string>("verify-full"));
  CHECK(env["PGCONNECT_TIMEOUT"] == std::optional<std::string>("4"));
  auto env2 = pg::conninfo_env("host=db.example.com sslmode=verify-ca connect_timeout=3 dbname=x");
  pg::apply_policy_env(pg::connect_policy("host=db.example.com sslmode=verify-ca connect_timeout=3 dbname=x", ctx),
                       env2);
  CHECK(env2["PGSSLMODE"] == std::optional<std::string>("verify-ca"));
  CHECK(env2["PGCONNECT_TIMEOUT"] == std::optional<std::string>("3"));
}
