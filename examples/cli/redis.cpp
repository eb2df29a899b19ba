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

}  // namespace

int cmd_backup_redis(int argc, char** argv, int start) {
  Args a = parse(argc, argv, start, {"repo", "redis-url", "mode", "prefix", "compress", "level", "timeout"}, {},
                 {"json", "quiet", "verbose", "allow-modules"});
  common_flags(a);
  std::string url = need(a, "redis-url");
  warn_redis_password(url);
  mevb_redis_backup_opts o = MEVB_REDIS_BACKUP_OPTS_INIT;
  o.url = url.c_str();
  o.mode = opt(a, "mode");
  o.name_prefix = opt(a, "prefix");
  o.compression = opt(a, "compress");
  o.level = level_option(a);
  if (const char* t = opt(a, "timeout")) {
    char* end = nullptr;
    long v = std::strtol(t, &end, 10);
    if (!*t || *end || v < 1 || v > 86400 * 7) throw UsageError{std::string("--timeout must be seconds, not \"") + t + "\""};
    o.timeout_seconds = static_cast<int>(v);
  }
  o.allow_modules = a.flags.count("allow-modules") ? 1 : 0;
  o.progress = on_progress;
  mevb_repo* repo = open_repo(a);
  mevb_backup* b = nullptr;
  if (mevb_repo_backup_redis(repo, &o, &b) != MEVB_OK) fail();
  return report_backup(repo, b, a.flags.count("json") > 0);
}

int cmd_restore_redis(int argc, char** argv, int start) {
  Args a = parse(argc, argv, start,
                 {"repo", "backup", "source", "redis-url", "data-dir", "rdb-name", "before", "after", "target-rdb-version"},
                 {}, {"replace", "flush", "quiet", "verbose"});
  common_flags(a);
  bool live = a.one.count("redis-url") > 0, offline = a.one.count("data-dir") > 0;
  if (live == offline) throw UsageError{"give exactly one of --redis-url URL and --data-dir DIR"};
  std::string backup = a.one.count("backup") ? a.one["backup"] : "latest";
  mevb_redis_restore_opts o = MEVB_REDIS_RESTORE_OPTS_INIT;
  std::string url;
  if (live) {
    url = a.one["redis-url"];
    warn_redis_password(url);
    o.redis_url = url.c_str();
  }
  o.data_dir = opt(a, "data-dir");
  o.rdb_name = opt(a, "rdb-name");
  o.source_name = opt(a, "source");
  o.replace = a.flags.count("replace") ? 1 : 0;
  o.flush = a.flags.count("flush") ? 1 : 0;
  std::vector<std::string> before, after;
  std::vector<const char*> before_p, after_p;
  if (const char* b = opt(a, "before")) {
    before = split_command(b, "before");
    for (auto& s : before) before_p.push_back(s.c_str());
    o.before = before_p.data();
    o.before_count = before_p.size();
  }
  if (const char* b = opt(a, "after")) {
    after = split_command(b, "after");
    for (auto& s : after) after_p.push_back(s.c_str());
    o.after = after_p.data();
    o.after_count = after_p.size();
  }
  if (const char* t = opt(a, "target-rdb-version")) {
    char* end = nullptr;
    long v = std::strtol(t, &end, 10);
    if (!*t || *end || v < 1 || v > 1000) throw UsageError{std::string("--target-rdb-version must be a number, not \"") + t + "\""};
    o.target_rdb_version = static_cast<int>(v);
  }
  o.progress = on_progress;
  mevb_repo* repo = open_repo(a);
  if (mevb_repo_restore_redis(repo, backup.c_str(), &o) != MEVB_OK) fail();
  std::printf("restored %s\n", backup.c_str());
  mevb_repo_free(repo);
  return 0;
}

}  // namespace cli
