// mevbackup backup redis / restore redis
#include "cli.hpp"

namespace cli {

namespace {

// Splits a hook command into argv the way a shell would split words, without any
// expansion: blanks separate words, '...' and "..." quote, backslash escapes one
// character. The command then runs directly, without a shell.
std::vector<std::string> split_command(const std::string& s, const char* option) {
  std::vector<std::string> out;
  std::string cur;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (quote) {
      if (c == quote) quote = 0;
      else if (c == '\\' && quote == '"' && i + 1 < s.size()) cur += s[++i];
      else cur += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      in_word = true;
    } else if (c == '\\' && i + 1 < s.size()) {
      cur += s[++i];
      in_word = true;
    } else if (c == ' ' || c == '\t' || c == '\n') {
      if (in_word) out.push_back(cur);
      cur.clear();
      in_word = false;
    } else {
      cur += c;
      in_word = true;
    }
  }
  if (quote) throw UsageError{std::string("unclosed quote in --") + option};
  if (in_word) out.push_back(cur);
  if (out.empty()) throw UsageError{std::string("--") + option + " is empty"};
  return out;
}

void warn_redis_password(const std::string& url) {
  auto scheme = url.find("://");
  auto at = url.rfind('@');
  if (scheme != std::string::npos && at != std::string::npos && url.substr(scheme + 3, at - scheme - 3).find(':') != std::string::npos)
    std::fprintf(stderr,
                 "mevbackup: warning: a password on the command line is visible to other users; use "
                 "MEVBACKUP_REDIS_PASSWORD\n");
}

int timeout_seconds(const std::string& v) {
  long long s = parse_duration("--timeout", v);
  if (s > 86400 * 7) throw UsageError{"--timeout: at most 7d, not \"" + v + "\""};
  return static_cast<int>(s);
}

}  // namespace

Action setup_backup_redis(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::string url, mode, prefix, compress, timeout;
    int level = -1;
    bool allow_modules = false;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  app->add_option("-u,--redis-url", o->url, "redis://[user@]host:port (password: MEVBACKUP_REDIS_PASSWORD)")
      ->required()->type_name("URL");
  app->add_option("--mode", o->mode, "how to get the RDB (default auto)")->type_name("auto|bgsave|replication");
  app->add_option("--prefix", o->prefix, "name prefix of the backup (default redis)")->type_name("NAME");
  app->add_option("--compress", o->compress, "compression (default gzip)")->type_name("gzip|zstd|none");
  add_level_option(app, o->level);
  app->add_option("--timeout", o->timeout, "give up when the RDB takes longer (up to 7d)")
      ->type_name("DURATION")->check(duration_validator());
  app->add_flag("--allow-modules", o->allow_modules,
                "back up keys and aux data of Redis modules (the reader cannot check them)");
  add_output_options(app, o->out);
  return [o] {
    apply_output(o->out);
    warn_redis_password(o->url);
    auto c = [](const std::string& v) { return v.empty() ? nullptr : v.c_str(); };
    mevb_redis_backup_opts ro = MEVB_REDIS_BACKUP_OPTS_INIT;
    ro.url = o->url.c_str();
    ro.mode = c(o->mode);
    ro.name_prefix = c(o->prefix);
    ro.compression = c(o->compress);
    ro.level = o->level;
    if (!o->timeout.empty()) ro.timeout_seconds = timeout_seconds(o->timeout);
    ro.allow_modules = o->allow_modules ? 1 : 0;
    ro.default_password = std::getenv("MEVBACKUP_REDIS_PASSWORD");  // the URL's password wins
    ro.progress = on_progress;
    mevb_repo* repo = open_repo(o->repo);
    mevb_backup* b = nullptr;
    if (mevb_repo_backup_redis(repo, &ro, &b) != MEVB_OK) fail();
    return report_backup(repo, b, o->out);
  };
}

Action setup_restore_redis(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::string backup = "latest", source, url, data_dir, rdb_name, before, after;
    int target_rdb_version = 0;
    bool replace = false, flush = false;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  app->add_option("-b,--backup", o->backup, "backup id, or latest (default)")->type_name("ID|latest");
  app->add_option("--source", o->source, "with latest: the latest backup of this prefix")->type_name("PREFIX");
  const char* live = "Into a running server (give --redis-url or --data-dir)";
  app->add_option("-u,--redis-url", o->url, "redis://[user@]host:port")->type_name("URL")->group(live);
  app->add_flag("--replace", o->replace, "overwrite keys that exist")->group(live);
  app->add_flag("--flush", o->flush, "empty the server first")->group(live);
  const char* off = "Into a stopped server's directory";
  app->add_option("--data-dir", o->data_dir, "the server's data directory")->type_name("DIR")->group(off);
  app->add_option("--rdb-name", o->rdb_name, "the RDB file's name (default dump.rdb)")->type_name("NAME")->group(off);
  app->add_option("--before", o->before, "command run before (split into words, no shell)")->type_name("CMD")->group(off);
  app->add_option("--after", o->after, "command run after (split into words, no shell)")->type_name("CMD")->group(off);
  app->add_option("--target-rdb-version", o->target_rdb_version, "RDB version the target server reads")
      ->type_name("N")->check(CLI::Range(1, 1000))->group(off);
  add_output_options(app, o->out);
  return [o] {
    apply_output(o->out);
    bool is_live = !o->url.empty(), offline = !o->data_dir.empty();
    if (is_live == offline) throw UsageError{"give exactly one of --redis-url URL and --data-dir DIR"};
    auto c = [](const std::string& v) { return v.empty() ? nullptr : v.c_str(); };
    mevb_redis_restore_opts ro = MEVB_REDIS_RESTORE_OPTS_INIT;
    if (is_live) {
      warn_redis_password(o->url);
      ro.redis_url = o->url.c_str();
      ro.default_password = std::getenv("MEVBACKUP_REDIS_PASSWORD");  // the URL's password wins
    }
    ro.data_dir = c(o->data_dir);
    ro.rdb_name = c(o->rdb_name);
    ro.source_name = c(o->source);
    ro.replace = o->replace ? 1 : 0;
    ro.flush = o->flush ? 1 : 0;
    std::vector<std::string> before, after;
    std::vector<const char*> before_p, after_p;
    if (!o->before.empty()) {
      before = split_command(o->before, "before");
      for (auto& s : before) before_p.push_back(s.c_str());
      ro.before = before_p.data();
      ro.before_count = before_p.size();
    }
    if (!o->after.empty()) {
      after = split_command(o->after, "after");
      for (auto& s : after) after_p.push_back(s.c_str());
      ro.after = after_p.data();
      ro.after_count = after_p.size();
    }
    ro.target_rdb_version = o->target_rdb_version;
    ro.progress = on_progress;
    mevb_repo* repo = open_repo(o->repo);
    std::string id = resolve_backup(repo, o->backup, "redis", ro.source_name);
    if (mevb_repo_restore_redis(repo, id.c_str(), &ro) != MEVB_OK) fail();
    report_restore(o->out, id, "redis", "");
    mevb_repo_free(repo);
    return kExitOk;
  };
}

}  // namespace cli
