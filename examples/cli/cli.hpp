// Shared pieces of the mevbackup CLI: option parsing, callbacks, error reporting.
#pragma once

#include <mevbackup.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace cli {

struct UsageError {
  std::string msg;
};

struct Args {
  std::map<std::string, std::string> one;
  std::map<std::string, std::vector<std::string>> many;
  std::map<std::string, bool> flags;
};

// Options of S3 repositories (--repo s3://bucket/prefix), accepted by every command.
inline const std::vector<std::string> kStorageOptions = {"storage-class", "endpoint-url", "region", "ca-bundle",
                                                         "sse", "sse-kms-key-id", "part-size"};
inline const std::vector<std::string> kStorageFlags = {"no-verify-tls", "path-style", "unsigned-payload"};

// Parses "--name value" / "--name=value" options; `takes_value` and `repeatable`
// list the options this command knows, `flag_names` the boolean ones. Other arguments
// are refused, unless `positional` is given: then they are collected there in order
// (and everything after a lone "--" is positional).
inline Args parse(int argc, char** argv, int start, const std::vector<std::string>& takes_value,
           const std::vector<std::string>& repeatable, const std::vector<std::string>& flag_names,
           std::vector<std::string>* positional = nullptr) {
  Args a;
  auto in = [](const std::vector<std::string>& v, const std::string& s) {
    for (auto& x : v)
      if (x == s) return true;
    return false;
  };
  for (int i = start; i < argc; ++i) {
    std::string arg = argv[i];
    if (positional && arg == "--") {
      for (++i; i < argc; ++i) positional->push_back(argv[i]);
      break;
    }
    if (positional && arg.rfind("--", 0) != 0) {
      positional->push_back(arg);
      continue;
    }
    if (arg.rfind("--", 0) != 0) throw UsageError{"unexpected argument \"" + arg + "\""};
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (in(kStorageFlags, name)) {  // every command that opens a repository takes these
      if (has_value) throw UsageError{"option --" + name + " takes no value"};
      a.flags[name] = true;
      continue;
    }
    if (in(kStorageOptions, name)) {
      if (!has_value) {
        if (i + 1 >= argc) throw UsageError{"option --" + name + " needs a value"};
        value = argv[++i];
      }
      a.one[name] = value;
      continue;
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

inline std::string need(const Args& a, const std::string& name, const char* env = nullptr) {
  if (auto it = a.one.find(name); it != a.one.end()) return it->second;
  if (env)
    if (const char* e = std::getenv(env); e && *e) return e;
  throw UsageError{"missing --" + name + (env ? std::string(" (or ") + env + ")" : "")};
}

inline const char* opt(const Args& a, const std::string& name) {
  auto it = a.one.find(name);
  return it == a.one.end() ? nullptr : it->second.c_str();
}

inline bool g_verbose = false;
inline bool g_progress = false;

inline void on_log(int level, const char* message, void*) {
  if (level >= MEVB_LOG_WARNING || g_verbose) {
    if (g_progress) std::fputs("\r\033[K", stderr);
    const char* kind = level >= MEVB_LOG_ERROR ? "error: " : level >= MEVB_LOG_WARNING ? "warning: " : "";
    std::fprintf(stderr, "mevbackup: %s%s\n", kind, message);
  }
}

inline int on_progress(const mevb_progress* p, void*) {
  if (!g_progress) return 0;
  double mib_in = p->bytes_in / 1048576.0, mib_out = p->bytes_out / 1048576.0;
  double rate = p->elapsed_seconds > 0 ? mib_in / p->elapsed_seconds : 0;
  std::fprintf(stderr, "\r\033[K%s: %.1f MiB read, %.1f MiB written, %.1f MiB/s, %.0f s", p->stage, mib_in, mib_out,
               rate, p->elapsed_seconds);
  if (p->done) std::fputc('\n', stderr);
  std::fflush(stderr);
  return 0;
}

[[noreturn]] inline void fail() {
  const mevb_error* e = mevb_error_last();
  if (g_progress) std::fputs("\r\033[K", stderr);
  std::fprintf(stderr, "mevbackup: error: %s\n", e->message && *e->message ? e->message : mevb_status_str(e->code));
  std::exit(1);
}

inline mevb_repo* open_repo_at(const Args& a, const std::string& location);

inline mevb_repo* open_repo(const Args& a) { return open_repo_at(a, need(a, "repo", "MEVBACKUP_REPO")); }

// Opens `location` with the storage options of the command line.
inline mevb_repo* open_repo_at(const Args& a, const std::string& location) {
  mevb_repo_opts ro = MEVB_REPO_OPTS_INIT;
  ro.log = on_log;
  // A stalled server or network must not hang a cron job forever.
  if (const char* s = std::getenv("MEVBACKUP_STALL_TIMEOUT"); s && *s) {
    char* end = nullptr;
    long long v = std::strtoll(s, &end, 10);
    if (*end || v < 0) throw UsageError{std::string("MEVBACKUP_STALL_TIMEOUT must be seconds, not \"") + s + "\""};
    ro.stall_timeout_seconds = v;
  }
  ro.storage_class = opt(a, "storage-class");
  ro.endpoint_url = opt(a, "endpoint-url");
  ro.region = opt(a, "region");
  ro.ca_bundle = opt(a, "ca-bundle");
  ro.sse = opt(a, "sse");
  ro.sse_kms_key_id = opt(a, "sse-kms-key-id");
  ro.no_verify_tls = a.flags.count("no-verify-tls") ? 1 : 0;
  ro.path_style = a.flags.count("path-style") ? 1 : 0;
  ro.unsigned_payload = a.flags.count("unsigned-payload") ? 1 : 0;
  if (const char* ps = opt(a, "part-size")) {
    char* end = nullptr;
    unsigned long long mib = std::strtoull(ps, &end, 10);
    if (!*ps || *end || mib < 5 || mib > 5120) throw UsageError{std::string("--part-size is in MiB, 5..5120, not \"") + ps + "\""};
    ro.part_size = mib * 1024 * 1024;
  }
  mevb_repo* repo = nullptr;
  if (mevb_repo_open(&repo, location.c_str(), &ro) != MEVB_OK) fail();
  return repo;
}

// --level N: a number; its range depends on the codec, so the library checks it
// (gzip 1..12, zstd 1..19) and names the valid range. -1 (absent): the codec's default.
inline int level_option(const Args& a) {
  const char* l = opt(a, "level");
  if (!l) return -1;
  char* end = nullptr;
  long v = std::strtol(l, &end, 10);
  if (!*l || *end || v < 1 || v > 99) throw UsageError{std::string("--level must be a positive number, not \"") + l + "\""};
  return static_cast<int>(v);
}

// Prints a new backup (its manifest with --json, else one line), frees both handles.
inline int report_backup(mevb_repo* repo, mevb_backup* b, bool json) {
  if (json) {
    std::fputs(mevb_backup_manifest_json(b), stdout);
  } else {
    std::printf("backup %s: %s (%llu bytes, sha256 %s)\n", mevb_backup_id(b), mevb_backup_path(b),
                static_cast<unsigned long long>(mevb_backup_size(b)), mevb_backup_sha256(b));
  }
  mevb_backup_free(b);
  mevb_repo_free(repo);
  return 0;
}

inline void common_flags(const Args& a) {
  g_verbose = a.flags.count("verbose") > 0;
  g_progress = !a.flags.count("quiet") && !a.flags.count("json") && isatty(STDERR_FILENO);
}

inline void warn_password_in_argv(const std::string& conninfo) {
  if (conninfo.find("password=") != std::string::npos ||
      (conninfo.find("://") != std::string::npos && conninfo.find('@') != std::string::npos &&
       conninfo.substr(0, conninfo.find('@')).find(':', conninfo.find("://") + 3) != std::string::npos))
    std::fprintf(stderr,
                 "mevbackup: warning: a password on the command line is visible to other users; use PGPASSWORD "
                 "or a passfile\n");
}

inline std::string json_escape(const char* s) {
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

inline void print_backup_json(const mevb_backup* b, bool last) {
  std::printf(
      "  {\"id\": \"%s\", \"kind\": \"%s\", \"source\": \"%s\", \"path\": \"%s\", \"size\": %llu, "
      "\"sha256\": \"%s\", \"created_at\": \"%s\", \"compression\": \"%s\"}%s\n",
      json_escape(mevb_backup_id(b)).c_str(), json_escape(mevb_backup_kind(b)).c_str(),
      json_escape(mevb_backup_source_name(b)).c_str(), json_escape(mevb_backup_path(b)).c_str(),
      static_cast<unsigned long long>(mevb_backup_size(b)), mevb_backup_sha256(b), mevb_backup_created_at(b),
      mevb_backup_compression(b), last ? "" : ",");
}

// One subcommand: `mevbackup VERB [KIND] options...`; argv[start] is the first option.
using CommandFn = int (*)(int argc, char** argv, int start);

}  // namespace cli
