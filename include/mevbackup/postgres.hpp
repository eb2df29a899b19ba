// PostgreSQL logical backup (pg_dump -Fc streamed into the repository) and restore
// (repository -> gunzip -> pg_restore into a staging database swapped into place).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mevbackup/repository.hpp"

namespace mevbackup {

struct PgBackupOptions {
  std::string conninfo;        // libpq conninfo or URI; PG* environment variables apply
  std::string pg_dump_path;    // empty: the newest installed pg_dump that can dump the server
  // Options after the fixed "-Fc -Z0"; connection and output options are refused here.
  std::vector<std::string> pg_dump_args = {"--no-owner", "--no-acl"};
  std::string name_prefix;     // empty: the database name (runbook: mev_protection_...)
  Compression compression = Compression::gzip;
  int level = -1;
  // Tables up to this size (pg_total_relation_size) get an exact count(*); larger ones
  // the planner's reltuples estimate, marked "exact": false.
  uint64_t exact_count_max_bytes = 64ull << 20;
};

// The endpoints backup_postgres and restore_postgres are built from, for pipelines of
// one's own (stream.hpp).
struct PgDumpSourceOptions {
  std::string conninfo;        // as PgBackupOptions
  std::string pg_dump_path;
  std::vector<std::string> pg_dump_args = {"--no-owner", "--no-acl"};
  uint64_t exact_count_max_bytes = 64ull << 20;
};

// What a backup's manifest records of the dumped database (Manifest::source).
struct PgDumpInfo {
  bool describe = true;    // false: only `database` is filled (no row counts, no properties)
  std::string database;
  nlohmann::json source;
};

// pg_dump -Fc -Z0 of the database as a Source, dumping one REPEATABLE READ snapshot the
// source's own session holds. The checks run (and throw as backup_postgres does) before
// this returns; a read() throws dump_failed when pg_dump fails, reaching EOF only after
// it exited 0. With `info`, the database's name is stored there and (info->describe) the
// row counts and database properties, read in the same snapshot.
std::unique_ptr<Source> pg_dump_source(const PgDumpSourceOptions& opts, const RunContext& ctx,
                                       PgDumpInfo* info = nullptr);

// Dumps the database into `repo`. Throws Error: connection/auth/not_found when the
// database cannot be reached, version_mismatch when pg_dump is older than the server,
// dump_failed (with pg_dump's stderr) when pg_dump fails.
Manifest backup_postgres(Repository& repo, const PgBackupOptions& opts, const RunContext& ctx);

struct PgRestoreOptions {
  std::string conninfo;        // names the target database (dbname=...)
  std::string dbname;          // if set: the target database, instead of the conninfo's
  bool clean = false;          // replace a non-empty target
  std::string pg_restore_path; // empty: the newest installed pg_restore
  std::vector<std::string> pg_restore_args = {"--no-owner", "--no-acl"};
  // Sessions loading the data. 0: one per core, at most 4 (but one for an artifact over
  // 1 GiB in remote storage, which every session would download again). 1: one pg_restore
  // reads the stream, in one transaction. N > 1: N sessions, each reading the artifact in
  // its own streamed pass into a pg_restore --section=data -L <its share of the tables>
  // (balanced by the table sizes the manifest records); the table of contents (kilobytes)
  // is kept in an unnamed private file in staging_dir for the pre-data and post-data sections, the
  // latter run by pg_restore --jobs N. No copy of the dump is made.
  int jobs = 0;
  // Instead: stage the decompressed dump in a private temporary file in staging_dir (default
  // $TMPDIR or /tmp), unnamed so that nothing outlives the process, for pg_restore --jobs (jobs, or one per core):
  // the artifact is read once, at the cost of a copy of the dump on disk.
  bool stage = false;
  std::string staging_dir;
  // The restored database gets the source's encoding, collation, ctype, locale provider
  // and ICU locale, its ALTER DATABASE ... SET settings and its comment (as the backup's
  // manifest records them). When the target server cannot honour one (a missing locale,
  // an unknown setting), the restore fails naming it, changing nothing; true: it warns
  // and the database gets the server's default for it instead.
  bool allow_property_loss = false;
};

// Restores `backup` into the database that opts.conninfo names. The data goes into a
// new staging database first; only when pg_restore and the checksum both succeeded is
// the staging database renamed to the target (dropping the old one when clean=true).
// A failure leaves the target exactly as it was.
void restore_postgres(Repository& repo, const Manifest& backup, const PgRestoreOptions& opts, const RunContext& ctx);

// The database `conninfo` names (dbname=..., or PGDATABASE); empty when neither does.
std::string pg_conninfo_dbname(const std::string& conninfo);

// As a Sink (pg_restore_sink) the stream comes once: jobs 0 or 1 restore it as one stream,
// jobs > 1 (or stage) stage it in a file for pg_restore --jobs.
struct PgRestoreSinkOptions : PgRestoreOptions {
  // The backup whose payload the sink receives, when there is one: its database properties,
  // pg_dump version (to choose pg_restore) and id. None: the server's defaults, with a warning.
  std::optional<Manifest> backup;
};

// The whole of restore_postgres as a Sink of a pg_dump custom-format stream. Before it
// returns, the target is checked (not_empty unless clean) and the staging database
// created; write() feeds pg_restore; commit() finishes the load and swaps the staging
// database into the target's name; abort() (or destroying an uncommitted sink) drops the
// staging database and leaves the target as it was.
std::unique_ptr<Sink> pg_restore_sink(const PgRestoreSinkOptions& opts, const RunContext& ctx);

// Restores `backup` into a new scratch database on the server `conninfo` reaches,
// compares each table's rows with the manifest's counts, runs `queries` there, and
// drops the scratch database. Returns the checks as
// [{"check": ..., "ok": bool, "detail": ...}, ...]; throws when the restore fails.
nlohmann::json restore_test_postgres(Repository& repo, const Manifest& backup, const std::string& conninfo,
                                     const std::vector<std::string>& queries, const RunContext& ctx);

// The checks of restore_test_postgres on a database `dbname` already restored from
// `backup` on the server `conninfo` reaches (the drill's scratch database).
nlohmann::json check_restored_postgres(const std::string& conninfo, const std::string& dbname, const Manifest& backup,
                                       const std::vector<std::string>& queries);

}  // namespace mevbackup
