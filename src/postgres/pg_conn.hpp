// RAII libpq connection with errors that name the database and never a secret.
#pragma once

#include <libpq-fe.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mevbackup/error.hpp"

namespace mevbackup::pg {

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

class Conn {
 public:
  // Connects with `conninfo`, optionally overriding its dbname.
  static Conn connect(const std::string& conninfo, const std::string& dbname_override = "");
  Conn(Conn&&) = default;
  Conn& operator=(Conn&&) = default;

  // Runs a command or query; throws naming `what` on failure. Parameters are text.
  Result exec(const std::string& sql, const std::vector<std::string>& params = {}, const char* what = nullptr);
  std::string value(const std::string& sql, const std::vector<std::string>& params = {});
  std::string quote_ident(const std::string& name);
  std::string quote_literal(const std::string& text);  // for the commands that take no parameters
  std::string dbname() const { return PQdb(c_.get()); }
  int server_version() const { return PQserverVersion(c_.get()); }
  PGconn* get() const { return c_.get(); }

 private:
  struct Deleter {
    void operator()(PGconn* c) const { PQfinish(c); }
  };
  explicit Conn(PGconn* c) : c_(c) {}
  std::unique_ptr<PGconn, Deleter> c_;
};

// The conninfo's options as the PG* environment variables a child libpq program reads
// (PGHOST, PGPASSWORD, ...): how connection details, the password among them, reach
// pg_dump/pg_restore without appearing in their argv.
std::map<std::string, std::optional<std::string>> conninfo_env(const std::string& conninfo);

// The dbname the conninfo names (or PGDATABASE); empty when neither does.
std::string conninfo_dbname(const std::string& conninfo);

// The newest /usr/lib/postgresql/<N>/bin/<tool> with N >= min_major, or <tool> from PATH.
std::string find_tool(const std::string& tool, int min_major);
// Major version of a pg_dump/pg_restore binary ("pg_dump (PostgreSQL) 15.18" -> 15).
int tool_major(const std::string& path);

}  // namespace mevbackup::pg
