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

#include <nlohmann/json.hpp>

#include "mevbackup/backup_set.hpp"
#include "mevbackup/error.hpp"
#include "mevbackup/repository.hpp"
#include "mevbackup/retention.hpp"
#include "mevbackup/storage.hpp"

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

// [pitr.NAME]: base backups of a server that archives its WAL into the plan's repository
// (archive_command = 'mevbackup wal-push --repo <location> %p'), so `restore --plan
// --target-time T` can bring PostgreSQL back to any moment the WAL covers.
struct PlanPitr {
  std::string name;
  std::string conninfo;      // "dbname" in the file: a role with REPLICATION
  std::string data_dir;      // where a restore unpacks it: absent or empty then
  std::string owner;         // the files' owner; empty: data_dir's, else its parent's
  bool start = true;         // start the server and wait until recovery reached the target
  std::vector<std::pair<std::string, std::string>> settings;  // "name=value" items: more postgresql.auto.conf lines
  std::chrono::seconds timeout{3600};  // how long recovery may take
  std::string name_prefix = "basebackup";
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
  std::chrono::seconds timeout{600};  // a hook running longer is killed (its whole process group)
  std::string workdir;                // where they run; empty: the plan file's directory
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
  std::vector<PlanPitr> pitr;
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

// ---- running a plan (plan_run.cpp)

// What the caller sets besides the plan: the S3 defaults of every repository the plan
// names (credentials, retries, log) and the run's context (cancel, progress, log, stall
// timeout, lock, rate). The plan's own storage options and keys override these.
struct PlanEnvironment {
  StorageOptions storage;
  RunContext ctx;
};

// Opens one of the plan's repositories ([repository] or a [[copy]]) with its own storage
// options, keys and signing; `ctx` (may be null) gets env.ctx with its encryption. Errors
// name the plan's table (file:line:column).
Repository open_plan_repository(const PlanStorage& s, const PlanEnvironment& env, RunContext* ctx = nullptr);

// One step of a run, restore or drill, as the report records it.
struct PlanStep {
  std::string name;    // "hook before_restore[1]", "postgres.main", "copy[1] sync", "retention"
  std::string status;  // "ok", "failed", "skipped" (an earlier step failed), "planned" (dry run)
  std::string message;
  std::string started_at;  // RFC 3339
  double seconds = 0;
  nlohmann::json detail = nlohmann::json::object();
};

struct PlanReport {
  std::string operation;  // "run", "restore", "drill"
  std::string plan, set_id;
  bool ok = false;
  Code code = Code::ok;   // the first failure's
  std::string message;    // one line: what was done, or what failed and what state it left
  std::string started_at, finished_at;
  double seconds = 0;
  std::vector<PlanStep> steps;
  nlohmann::json extra = nlohmann::json::object();
  nlohmann::json to_json() const;
};

// `mevbackup run`: before_backup hooks, a backup of every source (a failed source does not
// stop the others), the set manifest when all succeeded, after_backup hooks (also after a
// failure, once the before hooks ran), then each copy synced and the plan's retention
// applied per set. ok is false when anything failed; no set is written when a member failed.
PlanReport run_plan(const Plan& plan, const PlanEnvironment& env);

struct PlanRestoreOptions {
  std::string set = "latest";  // a set id or "latest" (the newest complete set; with
                               // target_time, the newest that finished at or before it)
  bool dry_run = false;        // check the set and list the steps; change nothing
  std::string from;            // restore from this location (one of the copies, or another
                               // repository holding the plan's sets); empty: the repository
  // Point in time (pitr::parse_target_time): PostgreSQL comes back through each [pitr]
  // source's base backup and the archived WAL to this moment, the other members from the
  // set; [postgres] dumps are then not restored (they would replace what the WAL replayed).
  // Empty: [pitr] sources are restored to the end of the archived WAL when the plan has no
  // [postgres] source, else left alone.
  std::string target_time;
  std::string mevbackup_path = "mevbackup";  // the program restore_command runs (wal-fetch)
};
// `mevbackup restore --plan`: the runbook's full recovery, in order: before_restore hooks,
// PostgreSQL (clean; or to a point in time, target_time), Redis (live, flushed), files
// (overwritten in their base), after_restore hooks. The first failure stops it; the message says which sources were restored.
PlanReport restore_plan(const Plan& plan, const PlanRestoreOptions& opts, const PlanEnvironment& env);

struct PlanDrillOptions {
  std::string set = "latest";  // a set id or "latest" (the newest complete set)
  std::string from;            // drill from this location (a copy) instead of the repository
  std::string report_dir;      // write the report there (drill_report.hpp); empty: none
};
// `mevbackup drill`: removes what killed drills left, then restores the set into scratch
// targets named mevb_drill_<host>_<pid> ([drill]: a database on the drill server, a
// throwaway redis-server on a free loopback port or an empty scratch Redis, a scratch
// directory) and checks them: each table's rows against the manifest and the
// verify_queries; Redis key counts per database and a sample of keys' types, TTLs and
// values against the RDB; every file's SHA-256. Every scratch target is removed at the
// end. ok only when every step passed, the whole drill took no longer than the RTO and
// the set is no older than the RPO; extra holds rto_seconds, rpo_seconds,
// set_started_at, set_age_seconds, rto_ok, rpo_ok, checks_ok (and report_files).
PlanReport drill_plan(const Plan& plan, const PlanDrillOptions& opts, const PlanEnvironment& env);

// The sets of the plan in its repository, oldest first, each checked (backup_set.hpp).
std::vector<BackupSetEntry> plan_sets(const Plan& plan, const PlanEnvironment& env);

}  // namespace mevbackup
