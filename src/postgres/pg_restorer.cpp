// PostgreSQL Restorer: repository -> verify -> gunzip -> pg_restore into a staging
// database, then swap the staging database into the target's name. The target is
// touched only after everything succeeded, so a failed restore leaves it as it was.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "mevbackup/file_stream.hpp"
#include "mevbackup/lock.hpp"
#include "mevbackup/postgres.hpp"
#include "pg_conn.hpp"
#include "../io/subprocess.hpp"

namespace mevbackup {

namespace {

// pg_restore's stdin as a Sink; commit() waits for pg_restore and checks its status.
// Input::may_stop_early: pg_restore reading only part of the archive (-L, --section) and
// exiting 0 is its success; the rest of the stream is then discarded, so that the pipeline
// still reads, and checks, every byte before commit().
class PgRestoreSink final : public Sink {
 public:
  enum class Input { whole, may_stop_early };
  PgRestoreSink(const SpawnOptions& so, std::string target, Input input = Input::whole)
      : proc_(so), target_(std::move(target)), input_(input) {}
  void write(Bytes data) override {
    if (stopped_early_) return;
    if (proc_.write_stdin(data)) return;
    // pg_restore stopped reading: done (when it may and exited 0), else failed.
    if (input_ == Input::may_stop_early && proc_.wait() == 0) {
      stopped_early_ = true;
      return;
    }
    fail();
  }
  void commit() override {
    if (stopped_early_) return;
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
  bool stopped_early() const { return stopped_early_; }

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
  Input input_;
  bool stopped_early_ = false;
};

// Larger artifacts in remote storage are restored in one stream unless jobs are given:
// each session of a parallel restore reads the whole artifact.
constexpr uint64_t kPassesMaxRemoteBytes = uint64_t{1} << 30;

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


// The staging database of one restore, from its creation (in the constructor, after the
// target was checked) to its swap into the target's name (swap_into_place) or its drop
// (drop, or destruction before the swap). Every load path goes through it.
class StagingDatabase {
 public:
  StagingDatabase(const PgRestoreSinkOptions& opts, const RunContext& ctx);
  ~StagingDatabase() {
    if (!done_) drop();
  }
  StagingDatabase(const StagingDatabase&) = delete;
  StagingDatabase& operator=(const StagingDatabase&) = delete;

  const std::string& name() const { return staging_; }
  const std::string& target() const { return target_; }
  // pg_restore with `args` and the caller's pg_restore_args, connected to the staging
  // database; `input`, when given, is its archive file (as /dev/fd/3).
  SpawnOptions pg_restore(const std::vector<std::string>& args, const StagingFile* input = nullptr) const {
    SpawnOptions so;
    so.env = env_;
    so.env["PGDATABASE"] = staging_;
    so.inherit_env = kPgToolEnv;
    so.argv = {pg_restore_};
    so.argv.insert(so.argv.end(), args.begin(), args.end());
    so.argv.insert(so.argv.end(), {"-d", staging_});
    so.argv.insert(so.argv.end(), opts_.pg_restore_args.begin(), opts_.pg_restore_args.end());
    if (input) {
      so.argv.push_back(kPassedFdPath);
      so.pass_fd = input->fd();
    }
    return so;
  }
  // Runs pg_restore on a file to its end; throws restore_failed with its stderr.
  void run_pg_restore(const std::vector<std::string>& args, const StagingFile& input) const;
  const std::string& pg_restore_path() const { return pg_restore_; }
  // The database's settings, then the swap: drops the old target (when there is one) and
  // renames the staging database into its name; then the comment.
  void swap_into_place();
  void drop() noexcept;
  bool done() const { return done_; }

 private:
  void property_lost(const std::string& what, const std::string& why);
  void create_staging(const std::string& clauses);

  PgRestoreSinkOptions opts_;
  LogFn log_;
  CancelToken* cancel_ = nullptr;
  std::map<std::string, std::optional<std::string>> env_;
  std::string target_, owner_, pg_restore_, staging_;
  pg::ConnectPolicy policy_;
  std::optional<pg::Conn> admin_;
  std::optional<DbProperties> props_;
  bool done_ = true;  // nothing to drop until the staging database exists
};

// Runs `f`; on failure drops the staging database (an io failure of a step becomes
// restore_failed) and rethrows.
template <class F>
void guarded(StagingDatabase& db, F&& f) {
  try {
    f();
  } catch (const Error& e) {
    db.drop();
    if (e.code() == Code::io) throw Error(Code::restore_failed, e.what());
    throw;
  } catch (...) {
    db.drop();
    throw;
  }
}

StagingDatabase::StagingDatabase(const PgRestoreSinkOptions& opts, const RunContext& ctx)
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
  // From here on the staging database exists: every failure drops it.
  done_ = false;
  guarded(*this, [&] {
    admin.exec(fmt::format("COMMENT ON DATABASE {} IS {}", admin.quote_ident(staging_),
                           admin.quote_literal(staging_comment())),
               {}, "marking the staging database");
  });
}

void StagingDatabase::property_lost(const std::string& what, const std::string& why) {
  // Honours what the target server cannot: fails (naming it) unless allowed, then warns.
  if (!opts_.allow_property_loss)
    throw Error(Code::restore_failed,
                fmt::format("the target server cannot give database \"{}\" the source's {}: {} (allow property "
                            "loss to restore without it)",
                            target_, what, why));
  if (log_)
    log_(LogLevel::warning, fmt::format("database \"{}\" is restored without the source's {}: {}", target_, what, why));
}

void StagingDatabase::create_staging(const std::string& clauses) {
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

void StagingDatabase::drop() noexcept {
  if (done_) return;
  done_ = true;
  try {
    admin_->exec(fmt::format("DROP DATABASE IF EXISTS {}", admin_->quote_ident(staging_)));
  } catch (const std::exception& e) {
    if (log_) log_(LogLevel::error, fmt::format("could not drop staging database {}: {}", staging_, e.what()));
  } catch (...) {
  }
}

void StagingDatabase::run_pg_restore(const std::vector<std::string>& args, const StagingFile& input) const {
  Subprocess proc(pg_restore(args, &input));
  int rc = proc.wait();
  if (rc != 0) {
    std::string err = proc.stderr_text();
    throw Error(Code::restore_failed, fmt::format("pg_restore {} restoring into database \"{}\"{}{}",
                                                  describe_exit(rc), target_, err.empty() ? "" : ": ", err));
  }
}

void StagingDatabase::swap_into_place() {
  pg::Conn& admin = *admin_;
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

// The whole restore of one stream as a Sink: the staging database exists from
// construction on, commit() swaps it into place, abort() (or destruction before commit)
// drops it. One job: pg_restore reads the stream (no temporary copy, one transaction);
// more: the stream is staged in a file for pg_restore --jobs.
class PgRestoreTargetSink final : public Sink {
 public:
  PgRestoreTargetSink(const PgRestoreSinkOptions& opts, const RunContext& ctx) : db_(opts, ctx), jobs_(opts.jobs) {
    guarded(db_, [&] {
      if (ctx.log)
        ctx.log(LogLevel::info, fmt::format("restoring {} into database \"{}\"",
                                            opts.backup ? opts.backup->id : "a pg_dump stream", db_.target()));
      if (jobs_ <= 1) {
        SpawnOptions so = db_.pg_restore({"--single-transaction", "--exit-on-error"});
        so.pipe_stdin = true;
        stdin_ = std::make_unique<PgRestoreSink>(so, db_.target());
        load_ = stdin_.get();
      } else {
        // pg_restore --jobs reads the archive's table of contents and seeks: it needs a file.
        file_ = make_staging_file(opts.staging_dir);
        if (ctx.log)
          ctx.log(LogLevel::info,
                  fmt::format("pg_restore --jobs {} needs a seekable file: staging the dump{} in an unnamed file "
                              "in {}, gone afterwards",
                              jobs_, opts.backup ? fmt::format(" ({} bytes)", opts.backup->payload_size) : std::string(),
                              file_->dir()));
        load_ = file_.get();
      }
    });
  }
  ~PgRestoreTargetSink() override {
    if (!done_) abort();
  }
  void write(Bytes data) override {
    if (done_) throw Error(Code::invalid_argument, "the pg_restore sink was already committed or aborted");
    guarded(db_, [&] { load_->write(data); });
  }
  void commit() override {
    if (done_) throw Error(Code::invalid_argument, "the pg_restore sink was already committed or aborted");
    guarded(db_, [&] {
      if (stdin_) {
        stdin_->commit();
      } else {
        file_->commit();
        db_.run_pg_restore({"--exit-on-error", fmt::format("--jobs={}", jobs_)}, *file_);
      }
      db_.swap_into_place();
    });
    done_ = true;
  }
  void abort() noexcept override {
    if (done_) return;
    done_ = true;
    if (load_) load_->abort();
    db_.drop();
  }

 private:
  StagingDatabase db_;
  int jobs_;
  std::unique_ptr<StagingFile> file_;     // jobs > 1
  std::unique_ptr<PgRestoreSink> stdin_;  // jobs <= 1
  Sink* load_ = nullptr;                  // where write() goes: stdin_ or file_
  bool done_ = false;
};

// ---- the restore in passes -------------------------------------------------------------
//
// pg_restore loads tables in parallel only from a seekable file. Instead of staging the
// whole dump in one, the artifact is read once per session: each pass streams it into a
// pg_restore --section=data -L <its tables>, which skips the other tables' blocks. The
// pre-data and post-data sections need only the archive's table of contents, which the
// first pass captures (the bytes pg_restore read before it exited: kilobytes); post-data
// (indexes, constraints) then runs as pg_restore --jobs on that small file.

// Thrown by the first pass's sink once pg_restore has read all it needs: the rest of the
// stream is not read. Not an Error: it never leaves restore_in_passes.
struct HeadRead {};

// The first pass: pg_restore --section=pre-data reads the stream while every byte it is
// given is also kept in `head`. pg_restore reads the whole table of contents before it
// restores anything, so once it exited 0, `head` holds the table of contents.
class HeadSink final : public Sink {
 public:
  HeadSink(const SpawnOptions& so, const std::string& target, StagingFile& head)
      : load_(so, target, PgRestoreSink::Input::may_stop_early), head_(head) {}
  void write(Bytes data) override {
    head_.write(data);
    load_.write(data);
    if (load_.stopped_early()) throw HeadRead{};
  }
  void commit() override { load_.commit(); }  // the whole archive was this small
  void abort() noexcept override { load_.abort(); }

 private:
  PgRestoreSink load_;
  StagingFile& head_;
};

// An entry of `pg_restore -l`: "<dump id>; <catalog oid> <oid> <description...>".
struct TocEntry {
  std::string line;
  std::string oid;  // for TABLE DATA: the source table's oid
  std::string rest; // after the oid: "TABLE DATA public mev_threats postgres"
  uint64_t weight = 0;
};

std::vector<TocEntry> parse_toc_list(const std::string& text) {
  std::vector<TocEntry> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    if (line.empty() || line[0] == ';') continue;
    TocEntry e;
    e.line = line;
    char oid[32] = {}, catalog[32] = {};
    int used = 0;
    if (std::sscanf(line.c_str(), "%*d; %31s %31s %n", catalog, oid, &used) >= 2 && used > 0) {
      e.oid = oid;
      e.rest = line.substr(static_cast<size_t>(used));
    }
    out.push_back(std::move(e));
  }
  return out;
}

// The weight of each data entry: the table's size as the backup recorded it (by oid, or
// by "schema table" for backups made before oids were recorded). Large objects weigh as
// much as the largest table (their size is not recorded); sequence values nothing.
void weigh(std::vector<TocEntry>& entries, const Manifest& m) {
  std::map<std::string, uint64_t> by_oid, by_name;
  uint64_t largest = 1;
  auto tables = m.source.find("tables");
  if (tables != m.source.end() && tables->is_array())
    for (auto& t : *tables) {
      if (!t.is_object()) continue;
      uint64_t bytes = t.value("bytes", uint64_t{0});
      largest = std::max(largest, bytes);
      if (t.contains("oid") && t["oid"].is_number_unsigned()) by_oid[std::to_string(t["oid"].get<uint64_t>())] = bytes;
      by_name[t.value("schema", "") + " " + t.value("table", "") + " "] = bytes;
    }
  for (auto& e : entries) {
    if (e.rest.rfind("TABLE DATA ", 0) == 0) {
      if (auto it = by_oid.find(e.oid); it != by_oid.end()) {
        e.weight = it->second;
        continue;
      }
      std::string name = e.rest.substr(11);
      e.weight = 1;
      for (auto& [n, bytes] : by_name)
        if (name.rfind(n, 0) == 0) e.weight = std::max<uint64_t>(bytes, 1);
    } else if (e.rest.rfind("BLOBS", 0) == 0 || e.rest.rfind("LARGE OBJECTS", 0) == 0) {
      e.weight = largest;
    }
  }
}

// Largest first, each to the lightest pass: `passes` lists of entries (some maybe empty),
// each in the order of `entries`.
std::vector<std::vector<const TocEntry*>> balance(const std::vector<TocEntry>& entries, int passes) {
  std::vector<const TocEntry*> order;
  for (auto& e : entries) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->weight > b->weight; });
  std::vector<std::vector<const TocEntry*>> out(static_cast<size_t>(passes));
  std::vector<uint64_t> load(out.size(), 0);
  for (auto* e : order) {
    size_t i = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    out[i].push_back(e);
    load[i] += e->weight;
  }
  // pg_restore -L restores in the list's order, and a stream can only be read forward:
  // each pass lists its entries in the archive's order.
  for (auto& items : out) std::sort(items.begin(), items.end());
  return out;
}

std::string read_all_stdout(const SpawnOptions& so, const std::string& what) {
  SpawnOptions o = so;
  o.pipe_stdout = true;
  Subprocess proc(o);
  std::string text;
  char buf[65536];
  for (;;) {
    size_t n = proc.read_stdout(MutBytes(reinterpret_cast<std::byte*>(buf), sizeof buf));
    if (n == 0) break;
    text.append(buf, n);
  }
  int rc = proc.wait();
  if (rc != 0)
    throw Error(Code::restore_failed, fmt::format("pg_restore {} {}: {}", describe_exit(rc), what, proc.stderr_text()));
  return text;
}

// The pg_restore options that choose what is restored, or how: the passes choose those
// themselves, so with any of them given the restore is one stream.
bool selects_items(const std::vector<std::string>& args) {
  static const char* own[] = {"-L", "--use-list", "--section", "-j", "--jobs", "-1", "--single-transaction",
                              "-l", "--list", "-f", "--file"};
  for (auto& a : args)
    for (const char* o : own) {
      std::string s = o;
      if (a == s || (s.size() > 2 && a.rfind(s + "=", 0) == 0) || (s.size() == 2 && a.rfind(s, 0) == 0)) return true;
    }
  return false;
}

void restore_in_passes(Repository& repo, const Manifest& backup, const PgRestoreOptions& opts, int jobs,
                       const RunContext& gctx) {
  RepositoryLock lock(repo.storage(), LockKind::shared, gctx);
  RunContext ctx = lock.guard(gctx);
  PgRestoreSinkOptions so;
  static_cast<PgRestoreOptions&>(so) = opts;
  so.backup = backup;
  StagingDatabase db(so, ctx);
  guarded(db, [&] {
    if (ctx.log)
      ctx.log(LogLevel::info, fmt::format("restoring {} into database \"{}\" in {} sessions, reading the artifact "
                                          "once per session",
                                          backup.id, db.target(), jobs));
    // 1. The table of contents and the pre-data section (CREATE TABLE ...).
    std::unique_ptr<StagingFile> head = make_staging_file(opts.staging_dir);
    {
      SpawnOptions pre = db.pg_restore({"--section=pre-data", "--exit-on-error", "--single-transaction"});
      pre.pipe_stdin = true;
      HeadSink sink(pre, db.target(), *head);
      RunContext first = ctx;
      try {
        read_artifact(repo.storage(), backup, sink, first);
      } catch (const HeadRead&) {
      }
      head->commit();
    }
    if (ctx.cancel) ctx.cancel->check();
    // 2. The data section, balanced over the sessions.
    SpawnOptions list = db.pg_restore({"--list", "--section=data"}, head.get());
    list.argv = {db.pg_restore_path(), "--list", "--section=data", kPassedFdPath};
    std::vector<TocEntry> entries = parse_toc_list(read_all_stdout(list, "listing the archive's data"));
    weigh(entries, backup);
    int passes = std::max(1, std::min<int>(jobs, static_cast<int>(entries.size())));
    auto plan = balance(entries, passes);
    std::vector<std::unique_ptr<StagingFile>> lists;
    for (auto& items : plan) {
      lists.push_back(make_staging_file(opts.staging_dir));
      std::string text;
      for (auto* e : items) text += e->line + "\n";
      lists.back()->write(Bytes(reinterpret_cast<const std::byte*>(text.data()), text.size()));
      lists.back()->commit();
    }
    CancelToken stop(ctx.cancel);
    std::mutex m;
    std::exception_ptr first_error;
    std::vector<std::thread> threads;
    for (size_t i = 0; i < lists.size(); ++i) {
      threads.emplace_back([&, i] {
        try {
          SpawnOptions load = db.pg_restore({"--section=data", "--exit-on-error", "-L", kPassedFdPath});
          load.pass_fd = lists[i]->fd();
          load.pipe_stdin = true;
          PgRestoreSink sink(load, db.target(), PgRestoreSink::Input::may_stop_early);
          RunContext pass = ctx;
          pass.cancel = &stop;
          if (i != 0) pass.progress = nullptr;  // one pass reports: each reads the whole artifact
          if (pass.max_rate) pass.max_rate = std::max<uint64_t>(1, pass.max_rate / lists.size());
          read_artifact(repo.storage(), backup, sink, pass);  // checks size and SHA-256 of every byte
        } catch (...) {
          std::lock_guard lk(m);
          if (!first_error) first_error = std::current_exception();
          stop.cancel();
        }
      });
    }
    for (auto& t : threads) t.join();
    if (first_error) std::rethrow_exception(first_error);
    if (ctx.cancel) ctx.cancel->check();
    // 3. The post-data section (indexes, constraints, triggers) from the table of contents.
    db.run_pg_restore({"--section=post-data", "--exit-on-error", fmt::format("--jobs={}", jobs)}, *head);
    db.swap_into_place();
  });
}

// One per core, at most 4: each session's pass inflates the whole artifact again.
int sessions_for_cores() {
  unsigned cores = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp(cores == 0 ? 1u : cores, 1u, 4u));
}

// How many sessions a restore uses: `jobs` when given; else as many as there are cores (at
// most 4), but one when the artifact is large and every pass would download it again.
int restore_sessions(Repository& repo, const Manifest& backup, const PgRestoreOptions& opts, const LogFn& log) {
  if (opts.stage) return 1;
  if (opts.jobs > 0) return opts.jobs;
  int n = sessions_for_cores();
  if (n > 1 && !repo.storage().local() && backup.size > kPassesMaxRemoteBytes) {
    if (log)
      log(LogLevel::info, fmt::format("backup {} is {} bytes in {}: restoring it in one stream rather than reading it "
                                      "{} times (give jobs to read it once per session, or stage it in a file)",
                                      backup.id, backup.size, repo.storage().describe(), n));
    return 1;
  }
  return n;
}

}  // namespace

std::string pg_conninfo_dbname(const std::string& conninfo) { return pg::conninfo_dbname(conninfo); }

std::unique_ptr<Sink> pg_restore_sink(const PgRestoreSinkOptions& opts, const RunContext& ctx) {
  return std::make_unique<PgRestoreTargetSink>(opts, ctx);
}

void restore_postgres(Repository& repo, const Manifest& backup, const PgRestoreOptions& opts, const RunContext& ctx) {
  if (opts.jobs < 0) throw Error(Code::invalid_argument, fmt::format("restore jobs must be 0 (one per core) or more, not {}", opts.jobs));
  int sessions = restore_sessions(repo, backup, opts, ctx.log);
  if (sessions > 1 && selects_items(opts.pg_restore_args)) {
    if (ctx.log)
      ctx.log(LogLevel::info, "the pg_restore arguments given choose the items or the jobs: restoring in one stream");
    sessions = 1;
  }
  try {
    if (sessions > 1) {
      restore_in_passes(repo, backup, opts, sessions, ctx);
      return;
    }
    PgRestoreSinkOptions so;
    static_cast<PgRestoreOptions&>(so) = opts;
    so.backup = backup;
    so.jobs = opts.stage ? (opts.jobs > 1 ? opts.jobs : std::max(2, sessions_for_cores())) : 1;
    std::unique_ptr<Sink> sink = pg_restore_sink(so, ctx);
    repo.restore_stream(backup, *sink, ctx);
  } catch (const Error& e) {
    if (e.code() == Code::io)  // as the sink's own steps: a restore that failed
      throw Error(Code::restore_failed, e.what());
    throw;
  }
}

}  // namespace mevbackup
