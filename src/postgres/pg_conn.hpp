// RAII libpq connection with errors that name the database and never a secret.
#pragma once

#include <libpq-fe.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mevbackup/error.hpp"
#include "mevbackup/repository.hpp"

namespace mevbackup::pg {

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

// How the library's own sessions and its pg_dump/pg_restore children reach the server:
// defaults that the conninfo (or PGSSLMODE / PGCONNECT_TIMEOUT) can override.
struct ConnectPolicy {
  std::string sslmode;          // empty: libpq's default (loopback hosts, Unix sockets)
  int connect_timeout_s = 0;    // 0: libpq's default (none)
};

// verify-full for a conninfo that reaches a host other than a loopback address or a Unix
// socket, unless the conninfo or PGSSLMODE chooses a mode (then, when that mode is weaker,
// a warning says so); a connect timeout of the stall timeout (60 s when it is off).
ConnectPolicy connect_policy(const std::string& conninfo, const RunContext& ctx);

// The policy as the PG* variables a child libpq program reads (set only where the caller's
// environment and the conninfo say nothing).
void apply_policy_env(const ConnectPolicy& p, std::map<std::string, std::optional<std::string>>& env);

class Conn {
 public:
  // Connects with `conninfo`, optionally overriding its dbname. The session's
  // client_encoding is always UTF8, whatever the database's encoding: names and text
  // read here go into JSON manifests and messages.
  static Conn connect(const std::string& conninfo, const std::string& dbname_override = "",
                      const ConnectPolicy& policy = {});
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
