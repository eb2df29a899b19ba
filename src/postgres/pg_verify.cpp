// Restore test: the backup restored into a scratch database, row counts compared with
// those recorded at dump time, optional SQL checks; the scratch database always dropped.
#include <random>

#include <fmt/format.h>

#include "mevbackup/postgres.hpp"
#include "pg_conn.hpp"

namespace mevbackup {

nlohmann::json check_restored_postgres(const std::string& conninfo, const std::string& dbname, const Manifest& m,
                                       const std::vector<std::string>& queries) {
  nlohmann::json checks = nlohmann::json::array();
  pg::Conn c = pg::Conn::connect(conninfo, dbname);
  for (auto& t : m.source.value("tables", nlohmann::json::array())) {
    std::string schema = t.value("schema", "public"), table = t.value("table", "");
    long long want = t.value("rows", 0LL);
    bool exact = t.value("exact", true);
    std::string name = schema + "." + table;
    long long got = -1;
    std::string detail;
    try {
      got = std::stoll(c.value(fmt::format("SELECT count(*) FROM ONLY {}.{}", c.quote_ident(schema), c.quote_ident(table))));
    } catch (const Error& e) {
      detail = e.what();
    }
    bool ok;
    if (got < 0) {
      ok = false;
    } else if (exact) {
      ok = got == want;
      detail = fmt::format("{} rows, {} at dump time", got, want);
    } else {
      ok = true;  // an estimate cannot fail the test; the numbers are recorded
      detail = fmt::format("{} rows, about {} at dump time (estimate)", got, want);
    }
    checks.push_back({{"check", "rows " + name}, {"ok", ok}, {"detail", detail}});
  }
  for (auto& q : queries) {
    try {
      std::string value = c.value(q);
      checks.push_back({{"check", "query"}, {"ok", true}, {"query", q}, {"detail", value}});
    } catch (const Error& e) {
      checks.push_back({{"check", "query"}, {"ok", false}, {"query", q}, {"detail", e.what()}});
    }
  }
  return checks;
}

nlohmann::json restore_test_postgres(Repository& repo, const Manifest& m, const std::string& conninfo,
                                     const std::vector<std::string>& queries, const RunContext& ctx) {
  std::mt19937_64 rng{std::random_device{}()};
  std::string scratch = fmt::format("mevb_verify_{:016x}", rng());
  nlohmann::json checks = nlohmann::json::array();
  PgRestoreOptions ro;
  ro.conninfo = conninfo;
  ro.dbname = scratch;
  restore_postgres(repo, m, ro, ctx);
  checks.push_back({{"check", "restore"}, {"ok", true}, {"detail", fmt::format("restored into {}", scratch)}});
  auto drop = [&] {
    try {
      pg::Conn admin = pg::Conn::connect(conninfo, "postgres");
      admin.exec(fmt::format("DROP DATABASE IF EXISTS {}", admin.quote_ident(scratch)));
    } catch (const Error& e) {
      if (ctx.log) ctx.log(LogLevel::error, fmt::format("could not drop scratch database {}: {}", scratch, e.what()));
    }
  };
  try {
    for (auto& c : check_restored_postgres(conninfo, scratch, m, queries)) checks.push_back(c);
  } catch (...) {
    drop();
    throw;
  }
  drop();
  return checks;
}

}  // namespace mevbackup
