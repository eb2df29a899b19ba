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

// pg_dump's stdout as a Source. EOF is reported only after pg_dump exited 0. It holds the
// session whose snapshot pg_dump dumps, so the snapshot lives as long as the source.
class PgDumpSource final : public Source {
 public:
  PgDumpSource(pg::Conn conn, const SpawnOptions& so, std::string db)
      : conn_(std::move(conn)), proc_(so), db_(std::move(db)) {}

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
  pg::Conn conn_;
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
      "SELECT n.nspname, c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid), c.oid "
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
    // The oid names the table in the dump's table of contents (a parallel restore's balance).
    uint64_t oid = std::strtoull(PQgetvalue(tables.get(), i, 4), nullptr, 10);
    nlohmann::json t = {{"schema", schema}, {"table", name}, {"bytes", bytes}, {"oid", oid}};
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

// What CREATE DATABASE, ALTER DATABASE ... SET and COMMENT ON DATABASE need to bring the
// database itself back: read in the snapshot session, so from the state that was dumped.
nlohmann::json database_properties(pg::Conn& conn) {
  int v = conn.server_version();
  // The ICU locale column: none before 15, daticulocale in 15 and 16, datlocale from 17.
  std::string provider = v >= 150000 ? "d.datlocprovider::text" : "'c'";
  std::string icu = v >= 170000 ? "d.datlocale" : v >= 150000 ? "d.daticulocale" : "NULL::text";
  std::string rules = v >= 160000 ? "d.daticurules" : "NULL::text";
  auto r = conn.exec(fmt::format("SELECT pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, {}, {}, {}, "
                                 "shobj_description(d.oid, 'pg_database'), "
                                 "(SELECT array_to_json(s.setconfig) FROM pg_db_role_setting s "
                                 "WHERE s.setdatabase = d.oid AND s.setrole = 0) "
                                 "FROM pg_database d WHERE d.datname = current_database()",
                                 provider, icu, rules),
                     {}, "reading the database's properties");
  if (PQntuples(r.get()) != 1) throw Error(Code::io, "cannot read the properties of the current database");
  auto text = [&](int col) -> nlohmann::json {
    if (PQgetisnull(r.get(), 0, col)) return nullptr;
    return std::string(PQgetvalue(r.get(), 0, col));
  };
  std::string prov = PQgetvalue(r.get(), 0, 3);
  nlohmann::json settings = nlohmann::json::array();
  if (!PQgetisnull(r.get(), 0, 7)) settings = nlohmann::json::parse(PQgetvalue(r.get(), 0, 7));
  return {
      {"encoding", text(0)},
      {"collate", text(1)},
      {"ctype", text(2)},
      {"locale_provider", prov == "i" ? "icu" : prov == "b" ? "builtin" : "libc"},
      {"icu_locale", text(4)},
      {"icu_rules", text(5)},
      {"comment", text(6)},
      {"settings", settings},  // "name=value" as pg_db_role_setting holds them
  };
}

// What a logical dump changes, found at backup time so the user hears of it before a restore:
// child tables whose own columns precede inherited ones come back with the inherited
// columns first (pg_dump writes them with INHERITS), and pg_restore refreshes every populated
// materialized view (a stale one comes back fresh).
nlohmann::json logical_dump_caveats(pg::Conn& conn, const LogFn& log) {
  auto reordered = conn.exec(
      "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "WHERE c.relkind IN ('r', 'p') AND EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid) "
      "AND EXISTS (SELECT 1 FROM pg_attribute l, pg_attribute h WHERE l.attrelid = c.oid AND h.attrelid = c.oid "
      "AND l.attnum > 0 AND h.attnum > l.attnum AND NOT l.attisdropped AND NOT h.attisdropped "
      "AND l.attinhcount = 0 AND h.attinhcount > 0) ORDER BY 1, 2",
      {}, "looking for inherited tables");
  nlohmann::json tables = nlohmann::json::array();
  for (int i = 0; i < PQntuples(reordered.get()); ++i) {
    std::string schema = PQgetvalue(reordered.get(), i, 0), name = PQgetvalue(reordered.get(), i, 1);
    tables.push_back({{"schema", schema}, {"table", name}});
    if (log)
      log(LogLevel::warning, fmt::format("table {}.{} has columns of its own before inherited ones: a restore puts "
                                         "the inherited columns first (SELECT * and INSERT without column names "
                                         "will see another order)",
                                         schema, name));
  }
  auto views = conn.exec(
      "SELECT schemaname, matviewname, ispopulated FROM pg_matviews "
      "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
      {}, "listing materialized views");
  nlohmann::json mv = nlohmann::json::array();
  for (int i = 0; i < PQntuples(views.get()); ++i)
    mv.push_back({{"schema", PQgetvalue(views.get(), i, 0)},
                  {"view", PQgetvalue(views.get(), i, 1)},
                  {"populated", std::string(PQgetvalue(views.get(), i, 2)) == "t"}});
  if (log && !mv.empty())
    log(LogLevel::info, fmt::format("{} materialized view(s): pg_restore refreshes the populated ones, so they come "
                                    "back computed from the restored tables, not as they were",
                                    mv.size()));
  return {{"column_order_changes", tables}, {"materialized_views", mv}};
}

}  // namespace

std::unique_ptr<Source> pg_dump_source(const PgDumpSourceOptions& opts, const RunContext& ctx, PgDumpInfo* info) {
  check_dump_args(opts.pg_dump_args);
  auto env = pg::conninfo_env(opts.conninfo);  // validates the conninfo first
  pg::ConnectPolicy policy = pg::connect_policy(opts.conninfo, ctx);
  pg::Conn conn = pg::Conn::connect(opts.conninfo, "", policy);
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
  if (info) info->database = db;
  if (info && info->describe) {
    info->source = {
        {"database", db},
        {"server_version", server_version},
        {"server_version_num", server_num},
        {"pg_dump_version", dump_major},
        {"snapshot_isolation", "repeatable read"},
        {"tables", count_rows(conn, opts.exact_count_max_bytes, ctx.log)},
        {"database_properties", database_properties(conn)},
    };
    nlohmann::json caveats = logical_dump_caveats(conn, ctx.log);
    info->source["column_order_changes"] = caveats["column_order_changes"];
    info->source["materialized_views"] = caveats["materialized_views"];
  }

  SpawnOptions so;
  so.argv = {pg_dump, "-Fc", "-Z0", "--snapshot=" + snapshot};
  so.argv.insert(so.argv.end(), opts.pg_dump_args.begin(), opts.pg_dump_args.end());
  so.env = env;
  so.env["PGDATABASE"] = db;
  pg::apply_policy_env(policy, so.env);
  so.inherit_env = kPgToolEnv;
  so.pipe_stdout = true;
  if (ctx.log) ctx.log(LogLevel::info, fmt::format("dumping database \"{}\" (PostgreSQL {}) with {}", db, server_version, pg_dump));
  return std::make_unique<PgDumpSource>(std::move(conn), so, db);
}

Manifest backup_postgres(Repository& repo, const PgBackupOptions& opts, const RunContext& ctx) {
  PgDumpSourceOptions so;
  so.conninfo = opts.conninfo;
  so.pg_dump_path = opts.pg_dump_path;
  so.pg_dump_args = opts.pg_dump_args;
  so.exact_count_max_bytes = opts.exact_count_max_bytes;
  PgDumpInfo info;
  std::unique_ptr<Source> source = pg_dump_source(so, ctx, &info);

  ArtifactSpec spec;
  spec.kind = "postgres";
  spec.dir = "database";
  spec.name_prefix = opts.name_prefix.empty() ? info.database : opts.name_prefix;
  spec.extension = ".dump";
  spec.format = "pg_dump-custom";
  spec.compression = opts.compression;
  spec.level = opts.level;
  return repo.publish(*source, spec, ctx, [&](Manifest& out) {
    out.source_name = info.database;
    out.source = info.source;
  });
}

}  // namespace mevbackup
