#include "pg_conn.hpp"

#include <dirent.h>
#include <unistd.h>

#include <cstdlib>

#include <fmt/format.h>

#include "../io/subprocess.hpp"

namespace mevbackup::pg {

namespace {

std::string trim(const std::string& s) { return one_line(s); }

struct ConnInfoOptions {
  PQconninfoOption* opts = nullptr;
  ~ConnInfoOptions() {
    if (opts) PQconninfoFree(opts);
  }
};

// A bare database name ("mydb") is a valid dbname for libpq's connect calls but not for
// PQconninfoParse: spell it out.
std::string normalize(const std::string& conninfo) {
  if (conninfo.find('=') != std::string::npos || conninfo.rfind("postgres://", 0) == 0 ||
      conninfo.rfind("postgresql://", 0) == 0)
    return conninfo;
  std::string q = "dbname='";
  for (char c : conninfo) {
    if (c == '\\' || c == '\'') q.push_back('\\');
    q.push_back(c);
  }
  return q + "'";
}

PQconninfoOption* parse_conninfo(const std::string& conninfo, ConnInfoOptions& holder) {
  char* err = nullptr;
  holder.opts = PQconninfoParse(normalize(conninfo).c_str(), &err);
  if (!holder.opts) {
    // libpq's message quotes the offending keyword, never its value.
    std::string msg = err ? trim(err) : "out of memory";
    if (err) PQfreemem(err);
    throw Error(Code::invalid_argument, fmt::format("invalid connection string: {}", msg));
  }
  return holder.opts;
}

}  // namespace

Conn Conn::connect(const std::string& conninfo, const std::string& dbname_override) {
  // The second "dbname" overrides the first (expanded) one.
  const char* keys[] = {"dbname", dbname_override.empty() ? nullptr : "dbname", nullptr};
  const char* vals[] = {conninfo.c_str(), dbname_override.empty() ? nullptr : dbname_override.c_str(), nullptr};
  PGconn* c = PQconnectdbParams(keys, vals, 1);
  if (!c) throw Error(Code::no_memory, "cannot allocate a PostgreSQL connection");
  Conn conn(c);
  if (PQstatus(c) != CONNECTION_OK) {
    std::string msg = trim(PQerrorMessage(c));
    std::string db = dbname_override.empty() ? conninfo_dbname(conninfo) : dbname_override;
    Code code = Code::connection;
    bool retriable = true;
    if (PQconnectionNeedsPassword(c) || msg.find("password authentication failed") != std::string::npos ||
        msg.find("no password supplied") != std::string::npos ||
        msg.find("authentication failed") != std::string::npos) {
      code = Code::auth;
      retriable = false;
    } else if (msg.find("does not exist") != std::string::npos && msg.find("database") != std::string::npos) {
      code = Code::not_found;
      retriable = false;
    }
    throw Error(code, fmt::format("cannot connect to database \"{}\": {}", db, msg), retriable);
  }
  return conn;
}

Result Conn::exec(const std::string& sql, const std::vector<std::string>& params, const char* what) {
  std::vector<const char*> p;
  for (auto& s : params) p.push_back(s.c_str());
  PGresult* r = PQexecParams(c_.get(), sql.c_str(), static_cast<int>(p.size()), nullptr, p.data(), nullptr, nullptr, 0);
  Result res(r);
  auto st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    std::string msg = trim(r ? PQresultErrorMessage(r) : PQerrorMessage(c_.get()));
    if (msg.empty()) msg = trim(PQerrorMessage(c_.get()));
    throw Error(PQstatus(c_.get()) == CONNECTION_OK ? Code::io : Code::connection,
                fmt::format("database \"{}\": {} failed: {}", dbname(), what ? what : "query", msg));
  }
  return res;
}

std::string Conn::value(const std::string& sql, const std::vector<std::string>& params) {
  auto r = exec(sql, params);
  if (PQntuples(r.get()) < 1 || PQnfields(r.get()) < 1) return {};
  return PQgetvalue(r.get(), 0, 0);
}

std::string Conn::quote_ident(const std::string& name) {
  char* q = PQescapeIdentifier(c_.get(), name.c_str(), name.size());
  if (!q) throw Error(Code::invalid_argument, fmt::format("cannot quote identifier \"{}\"", name));
  std::string s = q;
  PQfreemem(q);
  return s;
}

std::string Conn::quote_literal(const std::string& text) {
  char* q = PQescapeLiteral(c_.get(), text.c_str(), text.size());
  if (!q) throw Error(Code::invalid_argument, "cannot quote a literal");
  std::string s = q;
  PQfreemem(q);
  return s;
}

std::map<std::string, std::optional<std::string>> conninfo_env(const std::string& conninfo) {
  ConnInfoOptions parsed, defaults;
  parse_conninfo(conninfo, parsed);
  defaults.opts = PQconndefaults();
  std::map<std::string, std::string> envvar_of;
  for (auto* o = defaults.opts; o && o->keyword; ++o)
    if (o->envvar) envvar_of[o->keyword] = o->envvar;
  std::map<std::string, std::optional<std::string>> env;
  for (auto* o = parsed.opts; o && o->keyword; ++o) {
    if (!o->val) continue;
    auto it = envvar_of.find(o->keyword);
    if (it == envvar_of.end()) {
      if (std::string(o->keyword) == "dbname") env["PGDATABASE"] = o->val;
      else
        throw Error(Code::unsupported,
                    fmt::format("connection option \"{}\" cannot be passed to pg_dump/pg_restore", o->keyword));
      continue;
    }
    env[it->second] = std::string(o->val);
  }
  return env;
}

std::string conninfo_dbname(const std::string& conninfo) {
  ConnInfoOptions parsed;
  parse_conninfo(conninfo, parsed);
  for (auto* o = parsed.opts; o && o->keyword; ++o)
    if (std::string(o->keyword) == "dbname" && o->val && *o->val) return o->val;
  if (const char* e = std::getenv("PGDATABASE"); e && *e) return e;
  return {};
}

int tool_major(const std::string& path) {
  SpawnOptions so;
  so.argv = {path, "--version"};
  so.pipe_stdout = true;
  Subprocess p(so);
  std::string out;
  char buf[512];
  for (;;) {
    size_t n = p.read_stdout(MutBytes(reinterpret_cast<std::byte*>(buf), sizeof buf));
    if (!n) break;
    out.append(buf, n);
  }
  int rc = p.wait();
  // "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
  auto pos = out.find(") ");
  if (rc != 0 || pos == std::string::npos)
    throw Error(Code::not_found, fmt::format("cannot tell the version of {}: {}", path, trim(out + p.stderr_text())));
  return std::atoi(out.c_str() + pos + 2);
}

std::string find_tool(const std::string& tool, int min_major) {
  int best = -1;
  if (DIR* d = ::opendir("/usr/lib/postgresql")) {
    while (dirent* e = ::readdir(d)) {
      int v = std::atoi(e->d_name);
      if (v <= 0 || v < min_major || v <= best) continue;
      std::string cand = fmt::format("/usr/lib/postgresql/{}/bin/{}", v, tool);
      if (::access(cand.c_str(), X_OK) == 0) best = v;
    }
    ::closedir(d);
  }
  if (best > 0) return fmt::format("/usr/lib/postgresql/{}/bin/{}", best, tool);
  auto p = find_in_path(tool);
  if (!p) throw Error(Code::not_found, fmt::format("{} not found (install postgresql-client)", tool));
  return *p;
}

}  // namespace mevbackup::pg
