// mevbackup: the command-line tool for scripts and cron, written on the C API only.
//
//   mevbackup backup postgres --repo R --dbname CONNINFO [options]
//   mevbackup restore postgres --repo R --backup ID|latest --dbname CONNINFO [--clean]
//   mevbackup list --repo R [--kind K] [--json]
//
// Exit status: 0 success, 1 failure (one line on stderr), 2 usage error.
#include <mevbackup.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

const char* kUsage =
    "usage:\n"
    "  mevbackup backup postgres --repo REPO --dbname CONNINFO [--prefix NAME] [--compress gzip|none]\n"
    "                            [--level N] [--pg-dump PATH] [--pg-dump-arg ARG]... [--json]\n"
    "  mevbackup restore postgres --repo REPO --dbname CONNINFO [--backup ID|latest] [--source DB]\n"
    "                             [--clean] [--pg-restore PATH]\n"
    "  mevbackup list --repo REPO [--kind postgres] [--json]\n"
    "  mevbackup version\n"
    "\n"
    "REPO may also come from MEVBACKUP_REPO. CONNINFO is a libpq connection string or URI;\n"
    "the PG* environment variables apply. Keep passwords in PGPASSWORD or a passfile, not\n"
    "on the command line.\n"
    "Common options: --quiet (no progress), --verbose (log details).\n";

struct UsageError {
  std::string msg;
};

struct Args {
  std::map<std::string, std::string> one;
  std::map<std::string, std::vector<std::string>> many;
  std::map<std::string, bool> flags;
};

// Parses "--name value" / "--name=value" options; `takes_value` and `repeatable`
// list the options this command knows, `flag_names` the boolean ones.
Args parse(int argc, char** argv, int start, const std::vector<std::string>& takes_value,
           const std::vector<std::string>& repeatable, const std::vector<std::string>& flag_names) {
  Args a;
  auto in = [](const std::vector<std::string>& v, const std::string& s) {
    for (auto& x : v)
      if (x == s) return true;
    return false;
  };
  for (int i = start; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) throw UsageError{"unexpected argument \"" + arg + "\""};
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (in(flag_names, name)) {
      if (has_value) throw UsageError{"option --" + name + " takes no value"};
      a.flags[name] = true;
      continue;
    }
    if (!in(takes_value, name) && !in(repeatable, name)) throw UsageError{"unknown option --" + name};
    if (!has_value) {
      if (i + 1 >= argc) throw UsageError{"option --" + name + " needs a value"};
      value = argv[++i];
    }
    if (in(repeatable, name)) a.many[name].push_back(value);
    else a.one[name] = value;
  }
  return a;
}

std::string need(const Args& a, const std::string& name, const char* env = nullptr) {
  if (auto it = a.one.find(name); it != a.one.end()) return it->second;
  if (env)
    if (const char* e = std::getenv(env); e && *e) return e;
  throw UsageError{"missing --" + name + (env ? std::string(" (or ") + env + ")" : "")};
}

const char* opt(const Args& a, const std::string& name) {
  auto it = a.one.find(name);
  return it == a.one.end() ? nullptr : it->second.c_str();
}

bool g_verbose = false;
bool g_progress = false;

void on_log(int level, const char* message, void*) {
  if (level >= MEVB_LOG_WARNING || g_verbose) {
    if (g_progress) std::fputs("\r\033[K", stderr);
    std::fprintf(stderr, "mevbackup: %s%s\n", level >= MEVB_LOG_WARNING ? "warning: " : "", message);
  }
}

int on_progress(const mevb_progress* p, void*) {
  if (!g_progress) return 0;
  double mib_in = p->bytes_in / 1048576.0, mib_out = p->bytes_out / 1048576.0;
  double rate = p->elapsed_seconds > 0 ? mib_in / p->elapsed_seconds : 0;
  std::fprintf(stderr, "\r\033[K%s: %.1f MiB read, %.1f MiB written, %.1f MiB/s, %.0f s", p->stage, mib_in, mib_out,
               rate, p->elapsed_seconds);
  if (p->done) std::fputc('\n', stderr);
  std::fflush(stderr);
  return 0;
}

[[noreturn]] void fail() {
  const mevb_error* e = mevb_error_last();
  if (g_progress) std::fputs("\r\033[K", stderr);
  std::fprintf(stderr, "mevbackup: error: %s\n", e->message && *e->message ? e->message : mevb_status_str(e->code));
  std::exit(1);
}

mevb_repo* open_repo(const Args& a) {
  std::string location = need(a, "repo", "MEVBACKUP_REPO");
  mevb_repo_opts ro = MEVB_REPO_OPTS_INIT;
  ro.log = on_log;
  mevb_repo* repo = nullptr;
  if (mevb_repo_open(&repo, location.c_str(), &ro) != MEVB_OK) fail();
  return repo;
}

void common_flags(const Args& a) {
  g_verbose = a.flags.count("verbose") > 0;
  g_progress = !a.flags.count("quiet") && !a.flags.count("json") && isatty(STDERR_FILENO);
}

void warn_password_in_argv(const std::string& conninfo) {
  if (conninfo.find("password=") != std::string::npos ||
      (conninfo.find("://") != std::string::npos && conninfo.find('@') != std::string::npos &&
       conninfo.substr(0, conninfo.find('@')).find(':', conninfo.find("://") + 3) != std::string::npos))
    std::fprintf(stderr,
                 "mevbackup: warning: a password on the command line is visible to other users; use PGPASSWORD "
                 "or a passfile\n");
}

std::string json_escape(const char* s) {
  std::string out;
  for (const char* p = s; *p; ++p) {
    unsigned char c = static_cast<unsigned char>(*p);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

void print_backup_json(const mevb_backup* b, bool last) {
  std::printf(
      "  {\"id\": \"%s\", \"kind\": \"%s\", \"source\": \"%s\", \"path\": \"%s\", \"size\": %llu, "
      "\"sha256\": \"%s\", \"created_at\": \"%s\", \"compression\": \"%s\"}%s\n",
      json_escape(mevb_backup_id(b)).c_str(), json_escape(mevb_backup_kind(b)).c_str(),
      json_escape(mevb_backup_source_name(b)).c_str(), json_escape(mevb_backup_path(b)).c_str(),
      static_cast<unsigned long long>(mevb_backup_size(b)), mevb_backup_sha256(b), mevb_backup_created_at(b),
      mevb_backup_compression(b), last ? "" : ",");
}

int cmd_backup_postgres(int argc, char** argv) {
  Args a = parse(argc, argv, 3, {"repo", "dbname", "prefix", "compress", "level", "pg-dump"}, {"pg-dump-arg"},
                 {"json", "quiet", "verbose"});
  common_flags(a);
  std::string conninfo = need(a, "dbname");
  warn_password_in_argv(conninfo);
  mevb_pg_backup_opts o = MEVB_PG_BACKUP_OPTS_INIT;
  o.conninfo = conninfo.c_str();
  o.name_prefix = opt(a, "prefix");
  o.compression = opt(a, "compress");
  o.pg_dump_path = opt(a, "pg-dump");
  if (const char* l = opt(a, "level")) {
    char* end = nullptr;
    long v = std::strtol(l, &end, 10);
    if (!*l || *end || v < 1 || v > 9) throw UsageError{std::string("--level must be 1..9, not \"") + l + "\""};
    o.level = static_cast<int>(v);
  }
  std::vector<const char*> extra;
  if (auto it = a.many.find("pg-dump-arg"); it != a.many.end()) {
    for (auto& s : it->second) extra.push_back(s.c_str());
    o.pg_dump_args = extra.data();
    o.pg_dump_args_count = extra.size();
  }
  o.progress = on_progress;
  mevb_repo* repo = open_repo(a);
  mevb_backup* b = nullptr;
  if (mevb_repo_backup_postgres(repo, &o, &b) != MEVB_OK) fail();
  if (a.flags.count("json")) {
    std::fputs(mevb_backup_manifest_json(b), stdout);
  } else {
    std::printf("backup %s: %s (%llu bytes, sha256 %s)\n", mevb_backup_id(b), mevb_backup_path(b),
                static_cast<unsigned long long>(mevb_backup_size(b)), mevb_backup_sha256(b));
  }
  mevb_backup_free(b);
  mevb_repo_free(repo);
  return 0;
}

int cmd_restore_postgres(int argc, char** argv) {
  Args a = parse(argc, argv, 3, {"repo", "dbname", "backup", "source", "pg-restore"}, {"pg-restore-arg"},
                 {"clean", "quiet", "verbose"});
  common_flags(a);
  std::string conninfo = need(a, "dbname");
  warn_password_in_argv(conninfo);
  std::string backup = a.one.count("backup") ? a.one["backup"] : "latest";
  mevb_pg_restore_opts o = MEVB_PG_RESTORE_OPTS_INIT;
  o.conninfo = conninfo.c_str();
  o.clean = a.flags.count("clean") ? 1 : 0;
  o.source_name = opt(a, "source");
  o.pg_restore_path = opt(a, "pg-restore");
  std::vector<const char*> extra;
  if (auto it = a.many.find("pg-restore-arg"); it != a.many.end()) {
    for (auto& s : it->second) extra.push_back(s.c_str());
    o.pg_restore_args = extra.data();
    o.pg_restore_args_count = extra.size();
  }
  o.progress = on_progress;
  mevb_repo* repo = open_repo(a);
  if (mevb_repo_restore_postgres(repo, backup.c_str(), &o) != MEVB_OK) fail();
  std::printf("restored %s\n", backup.c_str());
  mevb_repo_free(repo);
  return 0;
}

int cmd_list(int argc, char** argv) {
  Args a = parse(argc, argv, 2, {"repo", "kind"}, {}, {"json", "quiet", "verbose"});
  common_flags(a);
  mevb_repo* repo = open_repo(a);
  mevb_backup_list* list = nullptr;
  if (mevb_repo_list(repo, opt(a, "kind"), &list) != MEVB_OK) fail();
  size_t n = mevb_backup_list_count(list);
  if (a.flags.count("json")) {
    std::puts("[");
    for (size_t i = 0; i < n; ++i) print_backup_json(mevb_backup_list_get(list, i), i + 1 == n);
    std::puts("]");
  } else {
    for (size_t i = 0; i < n; ++i) {
      const mevb_backup* b = mevb_backup_list_get(list, i);
      std::printf("%-40s %-9s %-20s %12llu  %s\n", mevb_backup_id(b), mevb_backup_kind(b), mevb_backup_created_at(b),
                  static_cast<unsigned long long>(mevb_backup_size(b)), mevb_backup_path(b));
    }
  }
  mevb_backup_list_free(list);
  mevb_repo_free(repo);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string cmd = argc > 1 ? argv[1] : "";
    std::string sub = argc > 2 ? argv[2] : "";
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (cmd == "version" || cmd == "--version") {
      std::printf("mevbackup %s\n", mevb_version());
      return 0;
    }
    if (cmd == "backup" && sub == "postgres") return cmd_backup_postgres(argc, argv);
    if (cmd == "restore" && sub == "postgres") return cmd_restore_postgres(argc, argv);
    if (cmd == "list") return cmd_list(argc, argv);
    if (cmd.empty()) throw UsageError{"no command given"};
    if (cmd == "backup" || cmd == "restore")
      throw UsageError{sub.empty() ? cmd + " needs a kind (postgres)" : "unknown kind \"" + sub + "\" for " + cmd};
    throw UsageError{"unknown command \"" + cmd + "\""};
  } catch (const UsageError& e) {
    std::fprintf(stderr, "mevbackup: %s\n%s", e.msg.c_str(), kUsage);
    return 2;
  }
}
