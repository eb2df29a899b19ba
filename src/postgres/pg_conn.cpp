#include "pg_conn.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
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

const char* option(PQconninfoOption* opts, const char* key) {
  for (auto* o = opts; o && o->keyword; ++o)
    if (std::string(o->keyword) == key && o->val && *o->val) return o->val;
  return nullptr;
}

const char* env_or_null(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

// A Unix socket directory, an abstract socket, localhost or a loopback address: traffic that
// never leaves the machine.
bool loopback(const std::string& host) {
  if (host.empty() || host[0] == '/' || host[0] == '@' || host == "localhost" || host == "::1") return true;
  unsigned a, b, c, d;
  char tail;
  return std::sscanf(host.c_str(), "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) == 4 && a == 127 && b < 256 &&
         c < 256 && d < 256;
}

// Each of a comma-separated host list.
bool all_loopback(const std::string& hosts) {
  size_t start = 0;
  for (;;) {
    size_t end = hosts.find(',', start);
    if (!loopback(hosts.substr(start, end == std::string::npos ? std::string::npos : end - start))) return false;
    if (end == std::string::npos) return true;
    start = end + 1;
  }
}

}  // namespace

ConnectPolicy connect_policy(const std::string& conninfo, const RunContext& ctx) {
  ConnInfoOptions parsed;
  parse_conninfo(conninfo, parsed);
  ConnectPolicy p;
  const char* hostaddr = option(parsed.opts, "hostaddr");
  if (!hostaddr) hostaddr = env_or_null("PGHOSTADDR");
  const char* host = option(parsed.opts, "host");
  if (!host) host = env_or_null("PGHOST");
  // libpq connects to hostaddr when it is given; host then only names the certificate.
  std::string where = hostaddr ? hostaddr : host ? host : "";
  bool remote = !all_loopback(where);
  const char* chosen = option(parsed.opts, "sslmode");
  const char* by = "the connection string";
  if (!chosen && (chosen = env_or_null("PGSSLMODE"))) by = "PGSSLMODE";
  if (remote && !chosen) p.sslmode = "verify-full";
  if (remote && chosen && std::string(chosen) != "verify-full" && ctx.log)
    ctx.log(LogLevel::warning,
            fmt::format("WARNING: sslmode={} ({} chose it) for host {}: the server's identity is not verified{}", chosen,
                        by, where,
                        std::string(chosen) == "verify-ca" ? " beyond its CA"
                                                           : "; the password can reach an impostor or travel in plain text"));
  bool timeout_chosen = option(parsed.opts, "connect_timeout") || env_or_null("PGCONNECT_TIMEOUT");
  if (!timeout_chosen) {
    auto stall = std::chrono::duration_cast<std::chrono::seconds>(ctx.pipeline.stall_timeout).count();
    // libpq treats anything below 2 s as 2 s.
    p.connect_timeout_s = stall > 0 ? static_cast<int>(std::max<long long>(stall, 2)) : 60;
  }
  return p;
}

void apply_policy_env(const ConnectPolicy& p, std::map<std::string, std::optional<std::string>>& env) {
  if (!p.sslmode.empty() && !env.count("PGSSLMODE")) env["PGSSLMODE"] = p.sslmode;
  if (p.connect_timeout_s > 0 && !env.count("PGCONNECT_TIMEOUT"))
    env["PGCONNECT_TIMEOUT"] = std::to_string(p.connect_timeout_s);
}

Conn Conn::connect(const std::string& conninfo, const std::string& dbname_override, const ConnectPolicy& policy) {
  // Keywords are processed in order and the last value wins: the policy's defaults come
  // before the (expanded) conninfo so that it can override them; the second "dbname"
  // overrides the conninfo's; client_encoding comes last, forced.
  std::string timeout = std::to_string(policy.connect_timeout_s);
  std::vector<const char*> keys, vals;
  if (!policy.sslmode.empty()) keys.push_back("sslmode"), vals.push_back(policy.sslmode.c_str());
  if (policy.connect_timeout_s > 0) keys.push_back("connect_timeout"), vals.push_back(timeout.c_str());
  keys.push_back("dbname"), vals.push_back(conninfo.c_str());
  if (!dbname_override.empty()) keys.push_back("dbname"), vals.push_back(dbname_override.c_str());
  keys.push_back("client_encoding"), vals.push_back("UTF8");
  keys.push_back(nullptr), vals.push_back(nullptr);
  PGconn* c = PQconnectdbParams(keys.data(), vals.data(), 1);
  if (!c) throw Error(Code::no_memory, "cannot allocate a PostgreSQL connection");
  Conn conn(c);
  if (PQstatus(c) != CONNECTION_OK) {
    std::string msg = trim(PQerrorMessage(c));
    if (!policy.sslmode.empty() && (msg.find("certificate") != std::string::npos || msg.find("SSL") != std::string::npos))
      msg += fmt::format(" (mevbackup connects to remote hosts with sslmode={}: give sslrootcert=... or choose "
                         "another sslmode in the connection string)",
                         policy.sslmode);
    if (msg.find("timeout expired") != std::string::npos)
      msg += fmt::format(" (no answer within {} s)", policy.connect_timeout_s);
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
  ProgramOutput v = run_for_output({path, "--version"});
  // "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
  auto pos = v.out.find(") ");
  if (v.status != 0 || pos == std::string::npos)
    throw Error(Code::not_found, fmt::format("cannot tell the version of {}: {}", path, trim(v.out + v.err)));
  return std::atoi(v.out.c_str() + pos + 2);
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
