// A plan: the whole service in one TOML file (docs/plan.md, issue 19). Its sources,
// repository and off-site copies, objectives (RPO, RTO), retention, hooks and the drill's
// scratch targets. `run`, `restore --plan` and `drill` are compositions of the existing
// operations over it; the plan itself holds no secret (passwords come from libpq
// passfiles, *_file keys naming 0600 files, or the environment).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "mevbackup/retention.hpp"

namespace mevbackup {

// Where a plan's value came from, for messages: "plan.toml:12:3: postgres.main.dbname".
struct PlanPlace {
  std::string file;
  int line = 0, column = 0;
  std::string key;
  std::string str() const;
};

struct PlanStorage {  // [repository] and each [[copy]]
  std::string location;  // a directory or s3://bucket/prefix
  std::string storage_class, region, endpoint_url, profile;
  std::vector<std::string> recipients;  // age1...
  std::string recipients_file;
  std::vector<std::string> identity_files;
  std::string signing_key_file;
  std::vector<std::string> verify_key_files;
  PlanPlace place;
};

struct PlanPostgres {  // [postgres.NAME]
  std::string name;
  std::string conninfo;  // "dbname" in the file: a libpq conninfo or URI
  std::vector<std::string> verify_queries;
  std::vector<std::string> pg_dump_args;  // empty: the library's default
  std::string name_prefix;                // empty: the database's name
  PlanPlace place;
};

struct PlanRedis {  // [redis.NAME]
  std::string name;
  std::string url;
  std::string mode = "auto";   // auto | bgsave | replication
  std::string password_file;   // 0600; else the URL or MEVBACKUP_REDIS_PASSWORD
  std::string name_prefix = "redis";
  PlanPlace place;
};

struct PlanFiles {  // [files.NAME]
  std::string name;
  std::string base;
  std::vector<std::string> paths, excludes;
  bool include_secrets = false, ignore_missing = false;
  std::string name_prefix = "config";
  PlanPlace place;
};

struct PlanHooks {  // shell commands (/bin/sh -c), run in order; one failing stops the run
  std::vector<std::string> before_backup, after_backup, before_restore, after_restore;
  std::chrono::seconds timeout{600};
};

struct PlanDrill {
  std::string postgres;  // conninfo of a scratch server for restored copies
  std::string redis;     // "spawn" (a throwaway redis-server on loopback) or a redis:// URL
  std::string files;     // parent directory of a scratch directory
};

struct Plan {
  std::string path;  // the file it was read from
  std::string name;  // [plan] name, else the file's stem
  PlanStorage repository;
  std::vector<PlanStorage> copies;
  std::chrono::seconds rpo{0}, rto{0};  // 0: no objective
  std::vector<PlanPostgres> postgres;
  std::vector<PlanRedis> redis;
  std::vector<PlanFiles> files;
  std::optional<RetentionPolicy> retention;
  PlanHooks hooks;
  PlanDrill drill;
};

// Reads and checks a plan. Throws Error(invalid_argument) naming the file, line and key
// of an unknown key, a value of the wrong type, a missing required key, a bad duration
// or policy, a secret written into the plan, or two sources sharing one name prefix
// (their backups would be taken for one another's); not_found when the file is missing.
Plan load_plan(const std::string& path);
Plan parse_plan(const std::string& text, const std::string& where);

}  // namespace mevbackup
