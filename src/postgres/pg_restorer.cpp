// PostgreSQL Restorer: repository -> verify -> gunzip -> pg_restore into a staging
// database, then swap the staging database into the target's name. The target is
// touched only after everything succeeded, so a failed restore leaves it as it was.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <random>

#include <fmt/format.h>

#include "mevbackup/file_stream.hpp"
#include "mevbackup/postgres.hpp"
#include "pg_conn.hpp"
#include "../io/subprocess.hpp"

namespace mevbackup {

namespace {

// pg_restore's stdin as a Sink; commit() waits for pg_restore and checks its status.
class PgRestoreSink final : public Sink {
 public:
  PgRestoreSink(const SpawnOptions& so, std::string target) : proc_(so), target_(std::move(target)) {}
  void write(Bytes data) override {
    if (!proc_.write_stdin(data)) fail();  // pg_restore stopped reading: it failed
  }
  void commit() override {
    proc_.close_stdin();
    if (proc_.wait() != 0) fail();
  }
  void abort() noexcept override {
    proc_.terminate();
    try {
      proc_.wait();
    } catch (...) {
    }
  }

 private:
  [[noreturn]] void fail() {
    int rc = proc_.wait();
    std::string err = proc_.stderr_text();
    throw Error(Code::restore_failed, fmt::format("pg_restore {} restoring into database \"{}\"{}{}",
                                                  rc == 0 ? "stopped reading its input" : describe_exit(rc), target_,
                                                  err.empty() ? "" : ": ", err));
  }
  Subprocess proc_;
  std::string target_;
};

const char* kMaintenanceDb = "postgres";

// NAMEDATALEN is 64: a recognisable prefix of the target, then (staging_name) a random tag.
std::string staging_prefix(const std::string& target) { return target.substr(0, 30) + "_mevb_restore_"; }

std::string staging_name(const std::string& target) {
  std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}{:08x}", staging_prefix(target), static_cast<uint32_t>(rng()));
}

bool database_exists(pg::Conn& c, const std::string& name) {
  return c.value("SELECT count(*) FROM pg_database WHERE datname = $1", {name}) != "0";
}

// Each staging database says whose it is (COMMENT ON DATABASE); a restore killed before it
// could drop its own leaves one. The next restore to the same target drops those of dead
// processes of this host that nobody is connected to; others are left (and named).
std::string staging_comment() { return fmt::format("mevbackup restore staging: host={} pid={}", this_host(), ::getpid()); }

void drop_abandoned_staging(pg::Conn& admin, const std::string& target, const RunContext& ctx) {
  std::string pattern;
  for (char c : staging_prefix(target)) {
    if (c == '_' || c == '%' || c == '\\') pattern += '\\';
    pattern += c;
  }
  pg::Result r = admin.exec(
      "SELECT d.datname, coalesce(shobj_description(d.oid, 'pg_database'), ''), "
      "(SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid) "
      "FROM pg_database d WHERE d.datname LIKE $1 || '%' ORDER BY 1",
      {pattern}, "listing staging databases");
  std::string host = this_host();
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    std::string name = PQgetvalue(r.get(), i, 0), comment = PQgetvalue(r.get(), i, 1);
    bool connected = std::string(PQgetvalue(r.get(), i, 2)) != "0";
    char h[256] = {};
    long pid = 0;
    bool ours = std::sscanf(comment.c_str(), "mevbackup restore staging: host=%255s pid=%ld", h, &pid) == 2;
    bool dead = ours && h == host && process_gone(pid);
    if (!dead || connected) {
      if (ctx.log)
        ctx.log(LogLevel::info, fmt::format("leaving staging database {} ({}): {}", name,
                                            comment.empty() ? "no owner noted" : comment,
                                            connected ? "in use" : "not known to be abandoned"));
      continue;
    }
    if (ctx.log)
      ctx.log(LogLevel::info, fmt::format("dropping staging database {} left by a killed restore (pid {})", name, pid));
    try {
      admin.exec(fmt::format("DROP DATABASE IF EXISTS {}", admin.quote_ident(name)), {}, "dropping a staging database");
    } catch (const Error& e) {
      if (ctx.log) ctx.log(LogLevel::warning, fmt::format("could not drop staging database {}: {}", name, e.what()));
    }
  }
}

// The database's own properties as the backup recorded them (manifest "database_properties").
struct DbProperties {
  std::string encoding, collate, ctype, provider = "libc", icu_locale, icu_rules;
  std::optional<std::string> comment;
  std::vector<std::string> settings;  // "name=value"
};

std::string json_text(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::optional<DbProperties> recorded_properties(const Manifest& m) {
  auto it = m.source.find("database_properties");
  if (it == m.source.end() || !it->is_object()) return std::nullopt;
  const nlohmann::json& j = *it;
  DbProperties p;
  p.encoding = json_text(j, "encoding");
  p.collate = json_text(j, "collate");
  p.ctype = json_text(j, "ctype");
  if (auto v = json_text(j, "locale_provider"); !v.empty()) p.provider = v;
  p.icu_locale = json_text(j, "icu_locale");
  p.icu_rules = json_text(j, "icu_rules");
  if (auto c = j.find("comment"); c != j.end() && c->is_string()) p.comment = c->get<std::string>();
  if (auto s = j.find("settings"); s != j.end() && s->is_array())
    for (auto& v : *s)
      if (v.is_string()) p.settings.push_back(v.get<std::string>());
  return p;
}

// The CREATE DATABASE clauses that give the staging database the source's properties.
std::string property_clauses(pg::Conn& admin, const DbProperties& p) {
  std::string sql;
  if (!p.encoding.empty()) sql += " ENCODING " + admin.quote_literal(p.encoding);
  if (!p.collate.empty()) sql += " LC_COLLATE " + admin.quote_literal(p.collate);
  if (!p.ctype.empty()) sql += " LC_CTYPE " + admin.quote_literal(p.ctype);
  if (p.provider == "icu") {
    if (admin.server_version() < 150000)
      throw Error(Code::unsupported, fmt::format("the ICU locale provider (ICU locale \"{}\") needs PostgreSQL 15 or "
                                                 "newer on the target server",
                                                 p.icu_locale));
    sql += " LOCALE_PROVIDER icu";
    if (!p.icu_locale.empty()) sql += " ICU_LOCALE " + admin.quote_literal(p.icu_locale);
    if (!p.icu_rules.empty()) sql += " ICU_RULES " + admin.quote_literal(p.icu_rules);
  } else if (p.provider == "builtin") {
    sql += " LOCALE_PROVIDER builtin";
    if (!p.icu_locale.empty()) sql += " BUILTIN_LOCALE " + admin.quote_literal(p.icu_locale);
  } else if (admin.server_version() >= 150000) {
    sql += " LOCALE_PROVIDER libc";
  }
  return sql;
}

std::string describe(const DbProperties& p) {
  std::string d = fmt::format("encoding {}, collate {}, ctype {}, locale provider {}", p.encoding, p.collate, p.ctype,
                              p.provider);
  if (!p.icu_locale.empty()) d += fmt::format(", locale {}", p.icu_locale);
  return d;
}

// These settings hold lists whose elements pg_db_role_setting keeps quoted as identifiers
// ("$user", public): each element is given as its own literal. The others are one literal.
bool list_setting(const std::string& name) {
  static const char* lists[] = {"search_path", "temp_tablespaces", "session_preload_libraries",
                                "shared_preload_libraries", "local_preload_libraries", "unix_socket_directories"};
  for (const char* l : lists)
    if (name == l) return true;
  return false;
}

std::string setting_value_sql(pg::Conn& admin, const std::string& name, const std::string& value) {
  if (!list_setting(name)) return admin.quote_literal(value);
  std::vector<std::string> items;
  std::string cur;
  bool quoted = false, any = false;
  for (size_t i = 0; i < value.size(); ++i) {
    char c = value[i];
    if (quoted) {
      if (c == '"' && i + 1 < value.size() && value[i + 1] == '"') cur += '"', ++i;
      else if (c == '"') quoted = false;
      else cur += c;
    } else if (c == '"') {
      quoted = any = true;
    } else if (c == ',') {
      items.push_back(cur);
      cur.clear();
      any = false;
    } else if (c != ' ' && c != '\t') {
      cur += c;
      any = true;
    }
  }
  if (any || !cur.empty() || !items.empty()) items.push_back(cur);
  std::string sql;
  for (auto& it : items) sql += (sql.empty() ? "" : ", ") + admin.quote_literal(it);
  return sql.empty() ? "''" : sql;
}


// The whole restore as a Sink: the staging database exists from construction on, commit()
// swaps it into place, abort() (or destruction before commit) drops it.
class PgRestoreTargetSink final : public Sink {
 public:
  PgRestoreTargetSink(const PgRestoreSinkOptions& opts, const RunContext& ctx);
  ~PgRestoreTargetSink() override {
    if (!done_) abort();
  }
  void write(Bytes data) override {
    if (done_) throw Error(Code::invalid_argument, "the pg_restore sink was already committed or aborted");
    guarded([&] { load_->write(data); });
  }
  void commit() override;
  void abort() noexcept override {
    if (done_) return;
    done_ = true;
    if (load_) load_->abort();
    drop_staging();
  }

 private:
  void property_lost(const std::string& what, const std::string& why);
  void create_staging(const std::string& clauses);
  void drop_staging() noexcept;
  void finish();
  SpawnOptions spawn_options() const {
    SpawnOptions so;
    so.env = env_;
    so.env["PGDATABASE"] = staging_;
    so.inherit_env = kPgToolEnv;
    return so;
  }
  // Runs a step; on failure drops the staging database (a failed SQL step becomes
  // restore_failed) and rethrows.
  template <class F>
  void guarded(F&& f) {
    try {
      f();
    } catch (const Error& e) {
      abort();
      if (e.code() == Code::io) throw Error(Code::restore_failed, e.what());
      throw;
    } catch (...) {
      abort();
      throw;
    }
  }

  PgRestoreSinkOptions opts_;
  LogFn log_;
  CancelToken* cancel_ = nullptr;
  std::map<std::string, std::optional<std::string>> env_;
  std::string target_, owner_, pg_restore_, staging_;
  pg::ConnectPolicy policy_;
  std::optional<pg::Conn> admin_;
  std::optional<DbProperties> props_;
  std::unique_ptr<StagingFile> file_;    // jobs > 1
  std::unique_ptr<PgRestoreSink> stdin_; // jobs <= 1
  Sink* load_ = nullptr;                 // where write() goes: stdin_ or file_
  bool done_ = false;
};

PgRestoreTargetSink::PgRestoreTargetSink(const PgRestoreSinkOptions& opts, const RunContext& ctx)
    : opts_(opts), log_(ctx.log), cancel_(ctx.cancel) {
  const std::optional<Manifest>& backup = opts.backup;
  if (backup && backup->kind != "postgres")
    throw Error(Code::invalid_argument, fmt::format("backup {} is a {} backup, not a postgres one", backup->id, backup->kind));
  env_ = pg::conninfo_env(opts.conninfo);
  target_ = opts.dbname.empty() ? pg::conninfo_dbname(opts.conninfo) : opts.dbname;
  if (target_.empty())
    throw Error(Code::invalid_argument, "the restore target names no database (give dbname=... in the connection string)");

  policy_ = pg::connect_policy(opts.conninfo, ctx);
  pg::apply_policy_env(policy_, env_);
  admin_.emplace(pg::Conn::connect(opts.conninfo, kMaintenanceDb, policy_));
  pg::Conn& admin = *admin_;
  if (database_exists(admin, target_)) {
    owner_ = admin.value("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", {target_});
    pg::Conn t = pg::Conn::connect(opts.conninfo, target_, policy_);
    std::string relations = t.value(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
        "AND n.nspname NOT LIKE 'pg\\_temp%'");
    if (relations != "0" && !opts.clean)
      throw Error(Code::not_empty, fmt::format("target database \"{}\" is not empty ({} relations); use --clean to "
                                               "replace it",
                                               target_, relations));
  }

  pg_restore_ = opts.pg_restore_path.empty()
                    ? pg::find_tool("pg_restore", backup ? backup->source.value("pg_dump_version", 0) : 0)
                    : opts.pg_restore_path;
  drop_abandoned_staging(admin, target_, ctx);
  staging_ = staging_name(target_);
  if (backup) props_ = recorded_properties(*backup);
  if (!props_ && log_)
    log_(LogLevel::warning,
         fmt::format("{} records no database properties{}: database \"{}\" gets the server's default encoding, "
                     "locale, settings and no comment",
                     backup ? "backup " + backup->id : std::string("the restored stream"),
                     backup ? " (an older or adopted backup)" : "", target_));
  {
    std::string clauses, why;
    if (props_) {
      try {
        clauses = property_clauses(admin, *props_);
        create_staging(clauses);
      } catch (const Error& e) {
        why = e.what();
      }
    }
    if (!props_ || !why.empty()) {
      if (props_) property_lost(describe(*props_), why);
      create_staging("");
    }
  }
  // From here on the staging database exists: every failure drops it.
  guarded([&] {
    admin.exec(fmt::format("COMMENT ON DATABASE {} IS {}", admin.quote_ident(staging_),
                           admin.quote_literal(staging_comment())),
               {}, "marking the staging database");
    if (log_)
      log_(LogLevel::info, fmt::format("restoring {} into database \"{}\"", backup ? backup->id : "a pg_dump stream",
                                       target_));
    if (opts_.jobs <= 1) {
      // Streamed: no temporary copy. One transaction, so a failure leaves an empty staging db.
      SpawnOptions so = spawn_options();
      so.argv = {pg_restore_, "--single-transaction", "--exit-on-error", "-d", staging_};
      so.argv.insert(so.argv.end(), opts_.pg_restore_args.begin(), opts_.pg_restore_args.end());
      so.pipe_stdin = true;
      stdin_ = std::make_unique<PgRestoreSink>(so, target_);
      load_ = stdin_.get();
    } else {
      // pg_restore --jobs reads the archive's table of contents and seeks: it needs a file.
      file_ = make_staging_file(opts_.staging_dir);
      if (log_)
        log_(LogLevel::info, fmt::format("pg_restore --jobs {} needs a seekable file: staging the dump{} in {}, "
                                         "removed afterwards",
                                         opts_.jobs,
                                         backup ? fmt::format(" ({} bytes)", backup->payload_size) : std::string(),
                                         file_->path()));
      load_ = file_.get();
    }
  });
}

void PgRestoreTargetSink::property_lost(const std::string& what, const std::string& why) {
  // Honours what the target server cannot: fails (naming it) unless allowed, then warns.
  if (!opts_.allow_property_loss)
    throw Error(Code::restore_failed,
                fmt::format("the target server cannot give database \"{}\" the source's {}: {} (allow property "
                            "loss to restore without it)",
                            target_, what, why));
  if (log_)
    log_(LogLevel::warning, fmt::format("database \"{}\" is restored without the source's {}: {}", target_, what, why));
}

void PgRestoreTargetSink::create_staging(const std::string& clauses) {
  pg::Conn& admin = *admin_;
  std::string create = fmt::format("CREATE DATABASE {} TEMPLATE template0", admin.quote_ident(staging_));
  if (!owner_.empty()) {
    try {
      admin.exec(create + clauses + " OWNER " + admin.quote_ident(owner_), {}, "creating the staging database");
      return;
    } catch (const Error&) {
    }
  }
  admin.exec(create + clauses, {}, "creating the staging database");
  // Not allowed to give it the target's owner: the restoring user keeps it.
  if (!owner_.empty() && log_) log_(LogLevel::warning, fmt::format("cannot make {} the owner of the restored database", owner_));
}

void PgRestoreTargetSink::drop_staging() noexcept {
  try {
    admin_->exec(fmt::format("DROP DATABASE IF EXISTS {}", admin_->quote_ident(staging_)));
  } catch (const std::exception& e) {
    if (log_) log_(LogLevel::error, fmt::format("could not drop staging database {}: {}", staging_, e.what()));
  } catch (...) {
  }
}

void PgRestoreTargetSink::commit() {
  if (done_) throw Error(Code::invalid_argument, "the pg_restore sink was already committed or aborted");
  guarded([&] { finish(); });
  done_ = true;
}

void PgRestoreTargetSink::finish() {
  pg::Conn& admin = *admin_;
  if (stdin_) {
    stdin_->commit();
  } else {
    file_->commit();
    SpawnOptions so = spawn_options();
    so.argv = {pg_restore_, "--exit-on-error", fmt::format("--jobs={}", opts_.jobs), "-d", staging_};
    so.argv.insert(so.argv.end(), opts_.pg_restore_args.begin(), opts_.pg_restore_args.end());
    so.argv.push_back(file_->path());
    Subprocess proc(so);
    int rc = proc.wait();
    if (rc != 0) {
      std::string err = proc.stderr_text();
      throw Error(Code::restore_failed, fmt::format("pg_restore {} restoring into database \"{}\"{}{}",
                                                    describe_exit(rc), target_, err.empty() ? "" : ": ", err));
    }
  }
  if (cancel_) cancel_->check();
  // The database's settings apply to the sessions that start after them: set after the
  // load (pg_restore's own session sets what it needs), before the database is in place.
  // pg_db_role_setting and the comment are shared catalogs, stored as the writing session's
  // database encodes them: written from a session in the restored database itself (they
  // were read in one in the source), so their bytes come back as they were.
  if (props_ && !props_->settings.empty()) {
    pg::Conn in_db = pg::Conn::connect(opts_.conninfo, staging_, policy_);
    for (auto& line : props_->settings) {
      auto eq = line.find('=');
      if (eq == std::string::npos || eq == 0) continue;
      std::string name = line.substr(0, eq), value = line.substr(eq + 1);
      try {
        in_db.exec(fmt::format("ALTER DATABASE {} SET {} = {}", in_db.quote_ident(staging_), in_db.quote_ident(name),
                               setting_value_sql(in_db, name, value)),
                   {}, fmt::format("setting {} on the restored database", name).c_str());
      } catch (const Error& e) {
        property_lost(fmt::format("setting {}", line), e.what());
      }
    }
  }
  if (cancel_) cancel_->check();
  if (database_exists(admin, target_)) {
    admin.exec(fmt::format("DROP DATABASE {}", admin.quote_ident(target_)), {},
               fmt::format("replacing database \"{}\" (is an application still connected?)", target_).c_str());
  }
  // The rename and the end of the staging mark in one transaction: no database ends up
  // with the target's name and the mark, nor a staging name without the mark that the next
  // restore's cleanup looks for. Then the source's comment, from inside the database.
  admin.exec("BEGIN", {}, "renaming the restored database into place");
  try {
    admin.exec(fmt::format("ALTER DATABASE {} RENAME TO {}", admin.quote_ident(staging_), admin.quote_ident(target_)),
               {}, "renaming the restored database into place");
    admin.exec(fmt::format("COMMENT ON DATABASE {} IS NULL", admin.quote_ident(target_)), {},
               "removing the staging mark");
    admin.exec("COMMIT", {}, "renaming the restored database into place");
  } catch (...) {
    try {
      admin.exec("ROLLBACK");
    } catch (...) {
    }
    throw;
  }
  // In place: nothing left to drop, whatever follows.
  done_ = true;
  if (props_ && props_->comment) {
    try {
      pg::Conn in_db = pg::Conn::connect(opts_.conninfo, target_, policy_);
      in_db.exec(fmt::format("COMMENT ON DATABASE {} IS {}", in_db.quote_ident(target_),
                             in_db.quote_literal(*props_->comment)),
                 {}, "giving the restored database its comment");
    } catch (const Error& e) {
      // The data is in place; only the comment is missing.
      if (log_) log_(LogLevel::error, fmt::format("database \"{}\" is restored without its comment: {}", target_, e.what()));
    }
  }
}

}  // namespace

std::string pg_conninfo_dbname(const std::string& conninfo) { return pg::conninfo_dbname(conninfo); }

std::unique_ptr<Sink> pg_restore_sink(const PgRestoreSinkOptions& opts, const RunContext& ctx) {
  return std::make_unique<PgRestoreTargetSink>(opts, ctx);
}

void restore_postgres(Repository& repo, const Manifest& backup, const PgRestoreOptions& opts, const RunContext& ctx) {
  PgRestoreSinkOptions so;
  static_cast<PgRestoreOptions&>(so) = opts;
  so.backup = backup;
  std::unique_ptr<Sink> sink = pg_restore_sink(so, ctx);
  try {
    repo.restore_stream(backup, *sink, ctx);
  } catch (const Error& e) {
    if (e.code() == Code::io)  // as the sink's own steps: a restore that failed
      throw Error(Code::restore_failed, e.what());
    throw;
  }
}

}  // namespace mevbackup
