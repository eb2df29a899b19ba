// PostgreSQL Dumper: pg_dump -Fc streamed into the repository.
//
// Before pg_dump starts, one libpq session checks the server, opens a REPEATABLE READ
// transaction and exports its snapshot; pg_dump dumps that very snapshot (--snapshot)
// and the row counts for the manifest are taken in it too, so they describe exactly
// the data in the dump.
#include <fmt/format.h>

#include "mevbackup/postgres.hpp"
#include "pg_conn.hpp"
#include "../io/subprocess.hpp"

namespace mevbackup {

namespace {

// pg_dump's stdout as a Source. EOF is reported only after pg_dump exited 0.
class PgDumpSource final : public Source {
 public:
  PgDumpSource(const SpawnOptions& so, std::string db) : proc_(so), db_(std::move(db)) {}

  size_t read(MutBytes buf) override {
    size_t n = proc_.read_stdout(buf);
    if (n) return n;
    int rc = proc_.wait();
    if (rc != 0) {
      std::string err = proc_.stderr_text();
      throw Error(Code::dump_failed, fmt::format("pg_dump {} for database \"{}\"{}{}", describe_exit(rc), db_,
                                                 err.empty() ? "" : ": ", err));
    }
    return 0;
  }
  void abort() noexcept override { proc_.terminate(); }

 private:
  Subprocess proc_;
  std::string db_;
};

void check_dump_args(const std::vector<std::string>& args) {
  static const char* refused[] = {"-d", "--dbname", "-h", "--host", "-p", "--port", "-U", "--username",
                                  "-W", "--password", "-f", "--file", "-F", "--format", "-Z", "--compress",
                                  "--snapshot", "-j", "--jobs"};
  for (auto& a : args) {
    for (const char* r : refused) {
      std::string rs = r;
      bool match = a == rs || (rs.size() > 2 && a.rfind(rs + "=", 0) == 0) ||
                   (rs.size() == 2 && a.size() > 2 && a.rfind(rs, 0) == 0 && a[1] != '-');
      if (match)
        throw Error(Code::invalid_argument,
                    fmt::format("pg_dump option \"{}\" is managed by mevbackup (connection, format, compression and "
                                "output are set for you)",
                                a));
    }
  }
}

nlohmann::json count_rows(pg::Conn& conn, uint64_t exact_max, const LogFn& log) {
  auto tables = conn.exec(
      "SELECT n.nspname, c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid) "
      "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
      "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' "
      "ORDER BY 1, 2",
      {}, "listing tables");
  nlohmann::json out = nlohmann::json::array();
  for (int i = 0; i < PQntuples(tables.get()); ++i) {
    std::string schema = PQgetvalue(tables.get(), i, 0), name = PQgetvalue(tables.get(), i, 1);
    long long estimate = std::atoll(PQgetvalue(tables.get(), i, 2));
    unsigned long long bytes = std::strtoull(PQgetvalue(tables.get(), i, 3), nullptr, 10);
    nlohmann::json t = {{"schema", schema}, {"table", name}, {"bytes", bytes}};
    if (bytes <= exact_max) {
      std::string n = conn.value(fmt::format("SELECT count(*) FROM ONLY {}.{}", conn.quote_ident(schema), conn.quote_ident(name)));
      t["rows"] = std::stoll(n);
      t["exact"] = true;
    } else {
      // reltuples is -1 for a table never vacuumed or analyzed (PostgreSQL 14+).
      t["rows"] = estimate < 0 ? 0 : estimate;
      t["exact"] = false;
      if (log && estimate < 0)
        log(LogLevel::warning, fmt::format("table {}.{} has no row estimate (never analyzed)", schema, name));
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

Manifest backup_postgres(Repository& repo, const PgBackupOptions& opts, const RunContext& ctx) {
  check_dump_args(opts.pg_dump_args);
  auto env = pg::conninfo_env(opts.conninfo);  // validates the conninfo first
  pg::Conn conn = pg::Conn::connect(opts.conninfo);
  std::string db = conn.dbname();
  int server_num = conn.server_version();
  int server_major = server_num / 10000;
  std::string server_version = conn.value("SHOW server_version");

  std::string pg_dump = opts.pg_dump_path.empty() ? pg::find_tool("pg_dump", server_major) : opts.pg_dump_path;
  int dump_major = pg::tool_major(pg_dump);
  if (dump_major < server_major)
    throw Error(Code::version_mismatch,
                fmt::format("{} is version {} but the server of database \"{}\" runs PostgreSQL {}; pg_dump cannot "
                            "dump a newer server: install postgresql-client-{} (or pass its pg_dump path)",
                            pg_dump, dump_major, db, server_version, server_major));

  conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", {}, "starting the snapshot transaction");
  std::string snapshot = conn.value("SELECT pg_export_snapshot()");
  nlohmann::json tables = count_rows(conn, opts.exact_count_max_bytes, ctx.log);

  SpawnOptions so;
  so.argv = {pg_dump, "-Fc", "-Z0", "--snapshot=" + snapshot};
  so.argv.insert(so.argv.end(), opts.pg_dump_args.begin(), opts.pg_dump_args.end());
  so.env = env;
  so.env["PGDATABASE"] = db;
  so.pipe_stdout = true;
  if (ctx.log) ctx.log(LogLevel::info, fmt::format("dumping database \"{}\" (PostgreSQL {}) with {}", db, server_version, pg_dump));
  PgDumpSource source(so, db);

  ArtifactSpec spec;
  spec.kind = "postgres";
  spec.dir = "database";
  spec.name_prefix = opts.name_prefix.empty() ? db : opts.name_prefix;
  spec.extension = ".dump";
  spec.format = "pg_dump-custom";
  spec.compression = opts.compression;
  spec.level = opts.level;
  Manifest m = repo.publish(source, spec, ctx, [&](Manifest& out) {
    out.source_name = db;
    out.source = {
        {"database", db},
        {"server_version", server_version},
        {"server_version_num", server_num},
        {"pg_dump_version", dump_major},
        {"snapshot_isolation", "repeatable read"},
        {"tables", tables},
    };
  });
  conn.exec("COMMIT", {}, "ending the snapshot transaction");
  return m;
}

}  // namespace mevbackup
