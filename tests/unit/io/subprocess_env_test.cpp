// What a child process inherits: an allow-list, never the whole environment.
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

#include "io/subprocess.hpp"
#include "mevbackup/file_stream.hpp"

using namespace mevbackup;

namespace {

// What the child writes to stdout, once it exited 0.
std::string child_output(SpawnOptions so) {
  so.pipe_stdout = true;
  Subprocess p(so);
  std::string out;
  char buf[4096];
  for (size_t n; (n = p.read_stdout(MutBytes(reinterpret_cast<std::byte*>(buf), sizeof buf))) > 0;) out.append(buf, n);
  REQUIRE(p.wait() == 0);
  return out;
}

std::string child_env(const SpawnOptions& base) {
  SpawnOptions so = base;
  so.argv = {"env"};
  return "\n" + child_output(so);
}

bool has(const std::string& env, const std::string& line) { return env.find("\n" + line + "\n") != std::string::npos; }

}  // namespace

TEST_CASE("subprocess: a child gets PATH, HOME, LANG/LC_*, TZ, TMPDIR and nothing secret") {
  ::setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-for-test", 1);
  ::setenv("REDISCLI_AUTH", "redis-secret-for-test", 1);
  ::setenv("PGPASSWORD", "pg-secret-for-test", 1);
  ::setenv("MEVBACKUP_S3_SECRET_ACCESS_KEY", "mevb-secret-for-test", 1);
  ::setenv("LC_TIME", "C", 1);
  ::setenv("TZ", "UTC", 1);
  std::string env = child_env({});
  CHECK(env.find("secret-for-test") == std::string::npos);
  CHECK(has(env, std::string("PATH=") + std::getenv("PATH")));
  CHECK(has(env, "LC_TIME=C"));
  CHECK(has(env, "TZ=UTC"));
  SUBCASE("pg tools also get PG*, still nothing of AWS or Redis") {
    SpawnOptions so;
    so.inherit_env = kPgToolEnv;
    std::string pg = child_env(so);
    CHECK(has(pg, "PGPASSWORD=pg-secret-for-test"));
    CHECK(pg.find("aws-secret-for-test") == std::string::npos);
    CHECK(pg.find("redis-secret-for-test") == std::string::npos);
    CHECK(pg.find("mevb-secret-for-test") == std::string::npos);
  }
  SUBCASE("the caller's overrides are applied on top") {
    SpawnOptions so;
    so.env["MEVB_CHILD_ONLY"] = std::string("given");
    so.env["TZ"] = std::nullopt;
    std::string e = child_env(so);
    CHECK(has(e, "MEVB_CHILD_ONLY=given"));
    CHECK(e.find("\nTZ=") == std::string::npos);
  }
  for (const char* n : {"AWS_SECRET_ACCESS_KEY", "REDISCLI_AUTH", "PGPASSWORD", "MEVBACKUP_S3_SECRET_ACCESS_KEY", "LC_TIME", "TZ"})
    ::unsetenv(n);
}

TEST_CASE("subprocess: env_allowed matches names and prefixes exactly") {
  CHECK(env_allowed("PGHOST", kPgToolEnv));
  CHECK_FALSE(env_allowed("XPGHOST", kPgToolEnv));
  CHECK(env_allowed("LC_ALL", kBaseEnv));
  CHECK_FALSE(env_allowed("PATHX", kBaseEnv));
  CHECK_FALSE(env_allowed("HOMEDIR", kBaseEnv));
}

TEST_CASE("subprocess: a passed file is the child's fd 3, read from its start, and no other fd of ours is") {
  auto staged = make_staging_file("");
  staged->write(Bytes(reinterpret_cast<const std::byte*>("staged bytes"), 12));
  staged->commit();
  SpawnOptions so;
  so.argv = {"sh", "-c", std::string("cat ") + kPassedFdPath + "; ls /proc/self/fd | sort -n | tr '\\n' ' '"};
  so.pass_fd = staged->fd();
  std::string out = child_output(so);
  // cat read it; then ls saw 0-2, 3 (the passed file) and its own directory fd only: none
  // of this process's other files (the test runner's among them).
  CHECK(out.rfind("staged bytes", 0) == 0);
  CHECK(out.substr(12) == "0 1 2 3 4 ");
}
