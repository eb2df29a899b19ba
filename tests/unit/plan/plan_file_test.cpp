// The plan file: the issue's example as written, and every refusal placed at file:line:column and key.
#include <doctest/doctest.h>

#include "mevbackup/error.hpp"
#include "mevbackup/plan.hpp"

using namespace mevbackup;

namespace {

const char* kExample = R"([repository]
location = "/app/backups"                 # or s3://bucket/prefix with its storage options
[[copy]]                                  # off-site copies, synced after each run
location = "s3://backup-bucket/mev-protection"
storage_class = "GLACIER"
[objectives]
rpo = "24h"
rto = "4h"
[postgres.main]
dbname = "host=postgres user=mev_user dbname=mev_protection"
verify_queries = ["SELECT COUNT(*) FROM mev_threats", "SELECT COUNT(*) FROM transaction_protections"]
[redis.cache]
url = "redis://redis:6379"
[files.config]
base = "/app"
paths = ["docker-compose.yml", "nginx/nginx.conf", "monitoring/prometheus.yml", "init-db.sql",
         "requirements.txt", "alembic.ini"]
[retention]
keep_daily = 7
keep_weekly = 4
keep_monthly = 12
[hooks]
before_restore = ["docker-compose stop mev-protection"]
after_restore = ["docker-compose start mev-protection", "./scripts/health_check.sh"]
[drill]
postgres = "host=127.0.0.1 user=postgres dbname=postgres"   # a scratch server for restored copies
redis = "spawn"                                              # a throwaway redis-server on loopback
files = "/var/tmp"                                           # parent of a scratch directory
)";

std::string refusal(const std::string& text) {
  try {
    parse_plan(text, "p.toml");
  } catch (const Error& e) {
    CHECK(e.code() == Code::invalid_argument);
    return e.what();
  }
  FAIL("the plan was accepted: " << text);
  return "";
}

bool has(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return true;
  MESSAGE("\"" << text << "\" lacks \"" << part << "\"");
  return false;
}

const std::string kRepo = "[repository]\nlocation = '/x'\n";
const std::string kFiles = "[files.c]\nbase = '/'\npaths = ['a']\n";

}  // namespace

TEST_CASE("the issue's example plan reads as written") {
  Plan p = parse_plan(kExample, "/etc/mev/mev-protection.toml");
  CHECK(p.name == "mev-protection");
  CHECK(p.repository.location == "/app/backups");
  REQUIRE(p.copies.size() == 1);
  CHECK(p.copies[0].location == "s3://backup-bucket/mev-protection");
  CHECK(p.copies[0].storage_class == "GLACIER");
  CHECK(p.rpo == std::chrono::hours(24));
  CHECK(p.rto == std::chrono::hours(4));
  REQUIRE(p.postgres.size() == 1);
  CHECK(p.postgres[0].name == "main");
  CHECK(p.postgres[0].conninfo == "host=postgres user=mev_user dbname=mev_protection");
  CHECK(p.postgres[0].verify_queries.size() == 2);
  REQUIRE(p.redis.size() == 1);
  CHECK(p.redis[0].url == "redis://redis:6379");
  CHECK(p.redis[0].mode == "auto");
  REQUIRE(p.files.size() == 1);
  CHECK(p.files[0].base == "/app");
  REQUIRE(p.files[0].paths.size() == 6);
  CHECK(p.files[0].paths[5] == "alembic.ini");
  REQUIRE(p.retention.has_value());
  CHECK(p.retention->keep_daily == 7);
  CHECK(p.retention->keep_weekly == 4);
  CHECK(p.retention->keep_monthly == 12);
  CHECK(p.hooks.before_restore == std::vector<std::string>{"docker-compose stop mev-protection"});
  CHECK(p.hooks.after_restore.size() == 2);
  CHECK(p.drill.redis == "spawn");
  CHECK(p.drill.files == "/var/tmp");
}

TEST_CASE("an unknown key, a wrong type or a missing key is refused with file, line, column and key") {
  CHECK(has(refusal(kRepo + "[postgres.main]\ndbname = 'x'\nbogus = 1\n"), "p.toml:5:9: postgres.main.bogus: unknown key"));
  CHECK(has(refusal(kRepo + "[postgres.main]\ndbname = 3\n"),
            "p.toml:4:10: postgres.main.dbname: must be a string, not an integer"));
  CHECK(has(refusal(kRepo + kFiles + "[objectives]\nrto = '4 hours'\n"), "p.toml:7:7: objectives.rto"));
  CHECK(has(refusal(kRepo + "[files.c]\nbase = '/'\n"), "files.c.paths"));
  CHECK(has(refusal("[postgres.main]\ndbname = 'x'\n"), "missing required table [repository]"));
  CHECK(has(refusal(kRepo), "names no source"));
  CHECK(has(refusal(kRepo + kFiles + "[retention]\nkeep_daily = -1\n"), "retention.keep_daily: must be between"));
  CHECK(has(refusal(kRepo + kFiles + "[repo]\n"), "p.toml:6:1: repo: unknown key"));
  CHECK(has(refusal("[repository\nlocation = '/x'\n"), "p.toml:1:"));
}

TEST_CASE("a secret written into the plan is refused, naming where it belongs instead") {
  std::string m = refusal(kRepo + "[postgres.m]\ndbname = 'x'\npassword = 's3cret'\n");
  CHECK(has(m, "postgres.m.password: secrets do not belong in a plan"));
  CHECK(m.find("s3cret") == std::string::npos);
  CHECK(has(refusal("[repository]\nlocation = 's3://b/p'\naws_secret_access_key = 'k'\n" + kFiles),
            "repository.aws_secret_access_key: secrets do not belong"));
}

TEST_CASE("two sources writing under one name prefix are refused, naming both") {
  CHECK(has(refusal(kRepo + "[redis.a]\nurl = 'redis://h'\n[redis.b]\nurl = 'redis://g'\n"),
            "redis.b: writes under the same name prefix \"redis\" as redis.a"));
  // Another prefix for one of them is the way out.
  Plan p = parse_plan(kRepo + "[redis.a]\nurl = 'redis://h'\n[redis.b]\nurl = 'redis://g'\nname_prefix = 'sessions'\n",
                      "p.toml");
  CHECK(p.redis.size() == 2);
}

TEST_CASE("a missing plan file is not_found, naming it") {
  try {
    load_plan("/nonexistent/plan.toml");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::not_found);
    CHECK(has(e.what(), "/nonexistent/plan.toml"));
  }
}

TEST_CASE("a [pitr] source: its base backups and where a point-in-time restore puts them") {
  Plan p = parse_plan(kRepo + "[pitr.main]\ndbname = 'host=db user=replicator'\ndata_dir = '/srv/pg/restored'\n"
                              "settings = ['port=5433', 'restore_command_timeout=']\nstart = false\ntimeout = '2h'\n",
                      "p.toml");
  REQUIRE(p.pitr.size() == 1);
  CHECK(p.pitr[0].conninfo == "host=db user=replicator");
  CHECK(p.pitr[0].data_dir == "/srv/pg/restored");
  CHECK(p.pitr[0].name_prefix == "basebackup");
  CHECK_FALSE(p.pitr[0].start);
  CHECK(p.pitr[0].timeout == std::chrono::hours(2));
  REQUIRE(p.pitr[0].settings.size() == 2);
  CHECK(p.pitr[0].settings[0] == std::make_pair(std::string("port"), std::string("5433")));
  CHECK(p.pitr[0].settings[1].second.empty());

  CHECK(has(refusal(kRepo + "[pitr.main]\ndbname = 'x'\n"), "pitr.main.data_dir"));
  CHECK(has(refusal(kRepo + "[pitr.main]\ndbname = 'x'\ndata_dir = 'rel/dir'\n"),
            "pitr.main.data_dir: must be an absolute path"));
  CHECK(has(refusal(kRepo + "[pitr.main]\ndbname = 'x'\ndata_dir = '/d'\nsettings = ['port']\n"),
            "pitr.main.settings: each item must be \"name=value\", not \"port\""));
  CHECK(has(refusal(kRepo + "[pitr.a]\ndbname = 'x'\ndata_dir = '/d'\n[pitr.b]\ndbname = 'y'\ndata_dir = '/e'\n"),
            "pitr.b: writes under the same name prefix \"basebackup\" as pitr.a"));
  CHECK(has(refusal(kRepo + "[pitr.m]\ndbname = 'x'\ndata_dir = '/d'\npassword = 'p'\n"),
            "pitr.m.password: secrets do not belong in a plan"));
}
