// The plan file (plan.hpp): TOML through toml++, every key checked against what the
// plan knows, every error placed at file:line:column and the dotted key.
#include <toml++/toml.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "mevbackup/error.hpp"
#include "mevbackup/manifest.hpp"
#include "mevbackup/plan.hpp"

namespace mevbackup {

std::string PlanPlace::str() const {
  std::string s = file;
  if (line > 0) s += ":" + std::to_string(line) + ":" + std::to_string(column);
  if (!key.empty()) s += ": " + key;
  return s;
}

namespace {

[[noreturn]] void bad(const PlanPlace& at, const std::string& what) {
  throw Error(Code::invalid_argument, "plan " + at.str() + ": " + what);
}

// One TOML table being read: the keys taken are remembered, and finish() refuses the rest.
class TableReader {
 public:
  TableReader(const std::string& file, const toml::table& t, std::string prefix)
      : file_(file), t_(t), prefix_(std::move(prefix)) {}

  PlanPlace place(const toml::node& n, const std::string& key) const {
    PlanPlace p;
    p.file = file_;
    p.line = static_cast<int>(n.source().begin.line);
    p.column = static_cast<int>(n.source().begin.column);
    p.key = full(key);
    return p;
  }
  PlanPlace self() const {
    PlanPlace p;
    p.file = file_;
    p.line = static_cast<int>(t_.source().begin.line);
    p.column = static_cast<int>(t_.source().begin.column);
    p.key = prefix_;
    return p;
  }
  std::string full(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }

  const toml::node* get(const std::string& key) {
    taken_.insert(key);
    return t_.get(key);
  }

  std::optional<std::string> str(const std::string& key) {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    if (!n->is_string()) bad(place(*n, key), "must be a string, not " + type_name(*n));
    return n->value<std::string>();
  }
  std::string required_str(const std::string& key) {
    auto v = str(key);
    if (!v) bad(self(), "missing required key \"" + full(key) + "\"");
    if (v->empty()) bad(place(*t_.get(key), key), "must not be empty");
    return *v;
  }
  std::optional<bool> boolean(const std::string& key) {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    if (!n->is_boolean()) bad(place(*n, key), "must be true or false, not " + type_name(*n));
    return n->value<bool>();
  }
  std::optional<int> integer(const std::string& key, int min, int max) {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    if (!n->is_integer()) bad(place(*n, key), "must be an integer, not " + type_name(*n));
    int64_t v = *n->value<int64_t>();
    if (v < min || v > max)
      bad(place(*n, key), "must be between " + std::to_string(min) + " and " + std::to_string(max));
    return static_cast<int>(v);
  }
  // A list of strings; a single string is taken as a list of one.
  std::vector<std::string> strings(const std::string& key) {
    const toml::node* n = get(key);
    std::vector<std::string> out;
    if (!n) return out;
    if (n->is_string()) return {*n->value<std::string>()};
    const toml::array* a = n->as_array();
    if (!a) bad(place(*n, key), "must be a list of strings, not " + type_name(*n));
    for (const toml::node& e : *a) {
      if (!e.is_string()) bad(place(e, key), "must be a list of strings; an element is " + type_name(e));
      out.push_back(*e.value<std::string>());
    }
    return out;
  }
  std::chrono::seconds duration(const std::string& key, std::chrono::seconds dflt) {
    const toml::node* n = get(key);
    if (!n) return dflt;
    if (n->is_integer()) {
      int64_t v = *n->value<int64_t>();
      if (v < 0) bad(place(*n, key), "must not be negative");
      return std::chrono::seconds(v);
    }
    if (!n->is_string()) bad(place(*n, key), "must be a duration such as \"4h\", not " + type_name(*n));
    try {
      return parse_duration(*n->value<std::string>());
    } catch (const std::exception& e) {
      bad(place(*n, key), e.what());
    }
  }
  // A secret must not be written into the plan: the key exists only to say where it goes.
  void refuse_secret(const std::string& key, const std::string& instead) {
    if (const toml::node* n = get(key)) bad(place(*n, key), "secrets do not belong in a plan; use " + instead);
  }
  void finish() const {
    for (auto&& [k, v] : t_) {
      std::string key(k.str());
      if (!taken_.count(key)) bad(place(v, key), "unknown key");
    }
  }
  static std::string type_name(const toml::node& n) {
    switch (n.type()) {
      case toml::node_type::table: return "a table";
      case toml::node_type::array: return "a list";
      case toml::node_type::string: return "a string";
      case toml::node_type::integer: return "an integer";
      case toml::node_type::floating_point: return "a number";
      case toml::node_type::boolean: return "a boolean";
      default: return "a date or time";
    }
  }

 private:
  std::string file_;
  const toml::table& t_;
  std::string prefix_;
  std::set<std::string> taken_;
};

const toml::table& table_at(TableReader& parent, const toml::node& n, const std::string& key) {
  const toml::table* t = n.as_table();
  if (!t) bad(parent.place(n, key), "must be a table, not " + TableReader::type_name(n));
  return *t;
}

PlanStorage read_storage(const std::string& file, const toml::table& t, const std::string& prefix) {
  TableReader r(file, t, prefix);
  PlanStorage s;
  s.place = r.self();
  s.location = r.required_str("location");
  s.storage_class = r.str("storage_class").value_or("");
  s.region = r.str("region").value_or("");
  s.endpoint_url = r.str("endpoint_url").value_or("");
  s.profile = r.str("profile").value_or("");
  s.recipients = r.strings("recipients");
  s.recipients_file = r.str("recipients_file").value_or("");
  s.identity_files = r.strings("identity");
  s.signing_key_file = r.str("signing_key").value_or("");
  s.verify_key_files = r.strings("verify_key");
  for (const char* k : {"aws_secret_access_key", "secret_access_key", "aws_access_key_id", "access_key_id",
                        "passphrase"})
    r.refuse_secret(k, "the environment, the AWS shared files (profile) or a 0600 file");
  r.finish();
  return s;
}

// A plan's names become parts of backup ids: the ids' characters (valid_backup_id),
// at most 64 of them, and no leading '-'.
void check_name(const PlanPlace& at, const std::string& what, const std::string& v) {
  if (!valid_backup_id(v) || v.size() > 64 || v[0] == '-')
    bad(at, what + " \"" + v + "\" must be 1-64 of [A-Za-z0-9_.-], not beginning with '.' or '-'");
}

// The named sources of one kind: [postgres.main], [postgres.reports], ... Each name is
// checked; read_one gets it, the table's place and its reader.
template <typename F>
void each_named(TableReader& top, const char* kind, F&& read_one) {
  const toml::node* n = top.get(kind);
  if (!n) return;
  const toml::table& kinds = table_at(top, *n, kind);
  for (auto&& [k, v] : kinds) {
    std::string name(k.str());
    std::string key = std::string(kind) + "." + name;
    const toml::table* t = v.as_table();
    if (!t) bad(top.place(v, key), "must be a table ([" + key + "]), not " + TableReader::type_name(v));
    TableReader r(top.place(v, key).file, *t, key);
    check_name(r.self(), "source name", name);
    read_one(name, r.self(), r);
    r.finish();
  }
}

std::string file_stem(const std::string& where) {
  std::string stem = std::filesystem::path(where).stem().string();
  return stem.empty() ? "plan" : stem;
}

}  // namespace

Plan parse_plan(const std::string& text, const std::string& where) {
  toml::table root;
  try {
    root = toml::parse(text, where);
  } catch (const toml::parse_error& e) {
    PlanPlace p;
    p.file = where;
    p.line = static_cast<int>(e.source().begin.line);
    p.column = static_cast<int>(e.source().begin.column);
    bad(p, std::string(e.description()));
  }
  TableReader top(where, root, "");
  Plan plan;
  plan.path = where;
  plan.name = file_stem(where);
  if (const toml::node* n = top.get("plan")) {
    TableReader r(where, table_at(top, *n, "plan"), "plan");
    if (auto v = r.str("name")) {
      check_name(r.place(*r.get("name"), "name"), "plan name", *v);
      plan.name = *v;
    }
    r.finish();
  }
  const toml::node* repo = top.get("repository");
  if (!repo) bad(top.self(), "missing required table [repository]");
  plan.repository = read_storage(where, table_at(top, *repo, "repository"), "repository");
  if (const toml::node* n = top.get("copy")) {
    const toml::array* a = n->as_array();
    if (!a) bad(top.place(*n, "copy"), "must be [[copy]] tables, not " + TableReader::type_name(*n));
    size_t i = 0;
    for (const toml::node& e : *a) {
      std::string key = "copy[" + std::to_string(i++) + "]";
      const toml::table* t = e.as_table();
      if (!t) bad(top.place(e, key), "must be a table");
      plan.copies.push_back(read_storage(where, *t, key));
    }
  }
  if (const toml::node* n = top.get("objectives")) {
    TableReader r(where, table_at(top, *n, "objectives"), "objectives");
    plan.rpo = r.duration("rpo", std::chrono::seconds(0));
    plan.rto = r.duration("rto", std::chrono::seconds(0));
    r.finish();
  }
  each_named(top, "postgres", [&](const std::string& name, const PlanPlace& place, TableReader& r) {
    PlanPostgres s;
    s.name = name;
    s.place = place;
    s.conninfo = r.required_str("dbname");
    s.verify_queries = r.strings("verify_queries");
    s.pg_dump_args = r.strings("pg_dump_args");
    s.name_prefix = r.str("name_prefix").value_or("");
    r.refuse_secret("password", "a libpq passfile (PGPASSFILE) or PGPASSWORD in the environment");
    plan.postgres.push_back(std::move(s));
  });
  each_named(top, "pitr", [&](const std::string& name, const PlanPlace& place, TableReader& r) {
    PlanPitr s;
    s.name = name;
    s.place = place;
    s.conninfo = r.required_str("dbname");
    s.data_dir = r.required_str("data_dir");
    if (s.data_dir.empty() || s.data_dir[0] != '/')
      bad(r.place(*r.get("data_dir"), "data_dir"), "must be an absolute path");
    s.owner = r.str("owner").value_or("");
    s.start = r.boolean("start").value_or(true);
    for (const std::string& kv : r.strings("settings")) {
      auto eq = kv.find('=');
      if (eq == 0 || eq == std::string::npos)
        bad(r.place(*r.get("settings"), "settings"), "each item must be \"name=value\", not \"" + kv + "\"");
      s.settings.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    }
    s.timeout = r.duration("timeout", s.timeout);
    if (s.timeout.count() == 0) bad(r.place(*r.get("timeout"), "timeout"), "must be more than 0");
    s.name_prefix = r.str("name_prefix").value_or("basebackup");
    r.refuse_secret("password", "a libpq passfile (PGPASSFILE) or PGPASSWORD in the environment");
    plan.pitr.push_back(std::move(s));
  });
  each_named(top, "redis", [&](const std::string& name, const PlanPlace& place, TableReader& r) {
    PlanRedis s;
    s.name = name;
    s.place = place;
    s.url = r.required_str("url");
    s.mode = r.str("mode").value_or("auto");
    if (s.mode != "auto" && s.mode != "bgsave" && s.mode != "replication")
      bad(r.place(*r.get("mode"), "mode"), "must be \"auto\", \"bgsave\" or \"replication\"");
    s.password_file = r.str("password_file").value_or("");
    s.name_prefix = r.str("name_prefix").value_or("redis");
    r.refuse_secret("password", "password_file (a 0600 file) or MEVBACKUP_REDIS_PASSWORD");
    plan.redis.push_back(std::move(s));
  });
  each_named(top, "files", [&](const std::string& name, const PlanPlace& place, TableReader& r) {
    PlanFiles s;
    s.name = name;
    s.place = place;
    s.base = r.required_str("base");
    s.paths = r.strings("paths");
    if (s.paths.empty()) bad(s.place, "missing required key \"" + r.full("paths") + "\" (the files to back up)");
    s.excludes = r.strings("excludes");
    s.include_secrets = r.boolean("include_secrets").value_or(false);
    s.ignore_missing = r.boolean("ignore_missing").value_or(false);
    s.name_prefix = r.str("name_prefix").value_or("config");
    plan.files.push_back(std::move(s));
  });
  if (plan.postgres.empty() && plan.pitr.empty() && plan.redis.empty() && plan.files.empty())
    bad(top.self(), "names no source: add a [postgres.NAME], [pitr.NAME], [redis.NAME] or [files.NAME] table");
  if (const toml::node* n = top.get("retention")) {
    TableReader r(where, table_at(top, *n, "retention"), "retention");
    RetentionPolicy p;
    p.keep_last = r.integer("keep_last", 1, 1000000).value_or(1);
    p.keep_days = r.integer("keep_days", 0, 1000000).value_or(0);
    p.keep_daily = r.integer("keep_daily", 0, 1000000).value_or(0);
    p.keep_weekly = r.integer("keep_weekly", 0, 1000000).value_or(0);
    p.keep_monthly = r.integer("keep_monthly", 0, 1000000).value_or(0);
    p.keep_yearly = r.integer("keep_yearly", 0, 1000000).value_or(0);
    r.finish();
    try {
      p.validate();
    } catch (const std::exception& e) {
      bad(r.self(), e.what());
    }
    plan.retention = p;
  }
  if (const toml::node* n = top.get("hooks")) {
    TableReader r(where, table_at(top, *n, "hooks"), "hooks");
    plan.hooks.before_backup = r.strings("before_backup");
    plan.hooks.after_backup = r.strings("after_backup");
    plan.hooks.before_restore = r.strings("before_restore");
    plan.hooks.after_restore = r.strings("after_restore");
    plan.hooks.timeout = r.duration("timeout", plan.hooks.timeout);
    if (plan.hooks.timeout.count() == 0) bad(r.place(*r.get("timeout"), "timeout"), "must be more than 0");
    plan.hooks.workdir = r.str("workdir").value_or("");
    r.finish();
  }
  if (const toml::node* n = top.get("drill")) {
    TableReader r(where, table_at(top, *n, "drill"), "drill");
    plan.drill.postgres = r.str("postgres").value_or("");
    plan.drill.redis = r.str("redis").value_or("");
    plan.drill.files = r.str("files").value_or("");
    r.finish();
  }
  top.finish();

  // Two sources that would write under one name prefix in one directory: their backups
  // would be taken for one another's (latest, retention).
  std::map<std::string, std::string> prefixes;  // "dir/prefix" -> the source's key
  auto claim = [&](const std::string& dir, const std::string& prefix, const PlanPlace& at) {
    if (prefix.empty()) return;  // postgres: the database's name, known only when it connects
    check_name(at, "name_prefix", prefix);
    auto [it, fresh] = prefixes.emplace(dir + "/" + prefix, at.key);
    if (!fresh)
      bad(at, "writes under the same name prefix \"" + prefix + "\" as " + it->second +
                  "; give one of them another name_prefix");
  };
  for (const auto& s : plan.postgres) claim("database", s.name_prefix, s.place);
  for (const auto& s : plan.pitr) claim("basebackup", s.name_prefix, s.place);
  for (const auto& s : plan.redis) claim("redis", s.name_prefix, s.place);
  for (const auto& s : plan.files) claim("config", s.name_prefix, s.place);
  return plan;
}

Plan load_plan(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(Code::not_found, "plan " + path + ": cannot be read: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_plan(ss.str(), path);
}

}  // namespace mevbackup
