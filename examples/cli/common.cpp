// The option groups, callbacks and reports every mevbackup command shares.
#include <unistd.h>

#include <cctype>
#include <climits>

#include "cli.hpp"

namespace cli {

namespace {

// The C API's status names (MEVB_ERR_NOT_FOUND -> "not_found"), for JSON errors.
const char* status_name(int code) {
  static const char* const names[] = {"ok",        "invalid_argument", "nomem",          "internal",
                                      "io",        "not_found",        "exists",         "cancelled",
                                      "connection", "auth",            "dump_failed",    "restore_failed",
                                      "corrupt",   "version_mismatch", "not_empty",      "no_space",
                                      "permission", "unsupported",     "locked"};
  if (code >= 0 && static_cast<size_t>(code) < sizeof names / sizeof names[0]) return names[code];
  return "error";
}

}  // namespace

std::vector<std::string> StorageOptions::as_args() const {
  std::vector<std::string> out;
  auto add = [&](const char* name, const std::string& v) {
    if (!v.empty()) {
      out.push_back(name);
      out.push_back(v);
    }
  };
  add("--storage-class", storage_class);
  add("--endpoint-url", endpoint_url);
  add("--region", region);
  add("--profile", profile);
  add("--ca-bundle", ca_bundle);
  add("--sse", sse);
  add("--sse-kms-key-id", sse_kms_key_id);
  if (part_size_mib) add("--part-size", std::to_string(part_size_mib));
  if (no_verify_tls) out.push_back("--no-verify-tls");
  if (path_style) out.push_back("--path-style");
  if (unsigned_payload) out.push_back("--unsigned-payload");
  add("--max-rate", max_rate);
  // What a wal-fetch needs to read encrypted WAL: the key files, by absolute path (the
  // server runs it from the data directory). Paths are not secrets; the keys stay in them.
  auto absolute = [](const std::string& p) {
    char* r = ::realpath(p.c_str(), nullptr);
    std::string s = r ? r : p;
    std::free(r);
    return s;
  };
  for (auto& f : identity_files) add("--identity", absolute(f));
  if (!passphrase_file.empty() && passphrase_file.rfind("/dev/fd/", 0) != 0)
    add("--passphrase-file", absolute(passphrase_file));
  return out;
}

std::string self_path() {
  char self[PATH_MAX];
  ssize_t len = ::readlink("/proc/self/exe", self, sizeof self - 1);
  return len > 0 ? std::string(self, static_cast<size_t>(len)) : "mevbackup";
}

void add_storage_options(CLI::App* app, StorageOptions& s) {
  const char* g = "S3 storage";
  app->add_option("--storage-class", s.storage_class, "S3 storage class of new objects (STANDARD_IA, GLACIER, ...)")
      ->type_name("CLASS")->group(g);
  app->add_option("--endpoint-url", s.endpoint_url, "S3 endpoint, https://host[:port] (default AWS_ENDPOINT_URL)")
      ->type_name("URL")->group(g);
  app->add_option("--region", s.region, "S3 region (default AWS_REGION)")->type_name("REGION")->group(g);
  app->add_option("--profile", s.profile, "profile of ~/.aws/credentials and ~/.aws/config (default AWS_PROFILE)")
      ->type_name("NAME")->group(g);
  app->add_option("--ca-bundle", s.ca_bundle, "PEM file of the CAs to trust")->type_name("PEM")->group(g);
  app->add_flag("--no-verify-tls", s.no_verify_tls, "do not verify the TLS certificate")->group(g);
  app->add_flag("--path-style", s.path_style, "path-style addressing for any endpoint")->group(g);
  app->add_flag("--unsigned-payload", s.unsigned_payload, "sign no request bodies (https only)")->group(g);
  app->add_option("--sse", s.sse, "server-side encryption")->type_name("AES256|aws:kms")->group(g);
  app->add_option("--sse-kms-key-id", s.sse_kms_key_id, "KMS key of --sse aws:kms")->type_name("ID")->group(g);
  app->add_option("--max-rate", s.max_rate,
                  "bandwidth limit of uploads and downloads, e.g. 20MiB/s, 500KiB/s (bytes/s without a unit)")
      ->type_name("RATE")
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            uint64_t r = 0;
            return mevb_parse_rate(v.c_str(), &r) == MEVB_OK ? std::string() : mevb_error_last()->message;
          },
          "RATE"));
  app->add_option("--part-size", s.part_size_mib, "first multipart part in MiB, 5..5120 (default 8)")
      ->type_name("MiB")->check(CLI::Range(5u, 5120u))->group(g);
  const char* e = "Encryption (age, docs/encryption.md)";
  app->add_option("--recipient", s.recipients, "encrypt new backups to this age public key (repeatable)")
      ->type_name("age1...")->allow_extra_args(false)->group(e);
  app->add_option("--recipients-file", s.recipients_file, "encrypt to the age public keys in FILE, one per line")
      ->type_name("FILE")->group(e);
  app->add_option("--identity", s.identity_files,
                  "decrypt with the age identity in FILE (age-keygen; mode 600; repeatable)")
      ->type_name("FILE")->allow_extra_args(false)->group(e);
  app->add_option("--passphrase-file", s.passphrase_file,
                  "encrypt and decrypt with the passphrase on FILE's first line (or /dev/fd/N)")
      ->type_name("FILE")->group(e);
  app->add_option("--signing-key", s.signing_key_file, "sign every manifest written with this Ed25519 key (PEM, mode 600)")
      ->type_name("FILE")->group(e);
  app->add_option("--verify-key", s.verify_key_files,
                  "trust only manifests signed by this Ed25519 public key (PEM; repeatable)")
      ->type_name("FILE")->allow_extra_args(false)->group(e);
}

void add_repo_options(CLI::App* app, RepoOptions& r) {
  app->add_option("-r,--repo", r.repo, "repository: a directory or s3://bucket/prefix")
      ->envname("MEVBACKUP_REPO")->required()->type_name("REPO");
  add_storage_options(app, r.storage);
}

void add_output_options(CLI::App* app, OutputOptions& o, bool json) {
  app->add_flag("-q,--quiet", o.quiet, "print nothing when it works (no progress, no report)");
  app->add_flag("-v,--verbose", o.verbose, "log details on stderr");
  if (json) app->add_flag("--json", o.json, "report as JSON (errors too, on stderr)");
}

void apply_output(const OutputOptions& o) {
  g_verbose = o.verbose;
  g_json_errors = o.json;
  g_progress = !o.quiet && !o.json && isatty(STDERR_FILENO);
}

long long parse_duration(const std::string& what, const std::string& v, bool allow_zero) {
  auto bad = [&] {
    return UsageError{what + ": invalid duration \"" + v + "\" (seconds, or e.g. 90s, 30m, 25h, 2d, 1w, 1d12h)"};
  };
  long long total = 0, n = 0;
  bool digits = false, unit_seen = false;
  for (char c : v) {
    if (c >= '0' && c <= '9') {
      n = n * 10 + (c - '0');
      digits = true;
      if (n > 100000000) throw bad();
      continue;
    }
    long long unit = c == 's' ? 1 : c == 'm' ? 60 : c == 'h' ? 3600 : c == 'd' ? 86400 : c == 'w' ? 604800 : 0;
    if (!unit || !digits) throw bad();
    total += n * unit;
    n = 0;
    digits = false;
    unit_seen = true;
  }
  if (digits) {
    if (unit_seen) throw bad();  // "1h30": the unit of 30 is missing
    total += n;
  }
  if (v.empty() || total < 0 || (total == 0 && !allow_zero)) throw bad();
  return total;
}

CLI::Validator duration_validator(bool allow_zero) {
  return CLI::Validator(
      [allow_zero](std::string& v) -> std::string {
        try {
          parse_duration("duration", v, allow_zero);
          return {};
        } catch (const UsageError& e) {
          return e.msg.substr(std::strlen("duration: "));
        }
      },
      "DURATION");
}

void on_log(int level, const char* message, void*) {
  if (level >= MEVB_LOG_WARNING || g_verbose) {
    if (g_progress) std::fputs("\r\033[K", stderr);
    const char* kind = level >= MEVB_LOG_ERROR ? "error: " : level >= MEVB_LOG_WARNING ? "warning: " : "";
    std::fprintf(stderr, "mevbackup: %s%s\n", kind, message);
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

nlohmann::json error_json(const char* code_name, int status, int exit_status, const std::string& message) {
  return {{"error", {{"code", code_name}, {"status", status}, {"exit_status", exit_status}, {"message", message}}}};
}

void fail() {
  const mevb_error* e = mevb_error_last();
  fail_with(e->code, e->message && *e->message ? e->message : mevb_status_str(e->code), e->retriable != 0);
}

void fail_with(int code, const std::string& message, bool retriable) {
  if (g_progress) std::fputs("\r\033[K", stderr);
  int exit_status = code == MEVB_ERR_LOCKED ? kExitLocked : kExitFailure;
  if (g_json_errors) {
    nlohmann::json j = error_json(status_name(code), code, exit_status, message);
    j["error"]["retriable"] = retriable;
    std::fprintf(stderr, "%s\n", j.dump().c_str());
  } else {
    std::fprintf(stderr, "mevbackup: error: %s\n", message.c_str());
  }
  std::fflush(stdout);
  std::exit(exit_status);
}

namespace {

// A MEVBACKUP_* duration for the library's options (0 when unset). A bad value is a
// failure of the run (exit 1), as it was when the library read the variable itself.
long long env_duration(const char* name, bool allow_zero) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  long long s = 0;
  try {
    s = parse_duration(name, v, allow_zero);
  } catch (const UsageError& e) {
    fail_with(MEVB_ERR_INVALID_ARGUMENT, e.msg);
  }
  if (s > 10LL * 365 * 86400)
    fail_with(MEVB_ERR_INVALID_ARGUMENT, std::string(name) + ": \"" + v + "\" is over 10 years");
  return s;
}

// The repository lock's timing (docs/lock.md), which the library takes as options.
void lock_from_env(mevb_repo_opts& ro) {
  ro.lock_ttl_seconds = env_duration("MEVBACKUP_LOCK_TTL", false);
  ro.lock_refresh_seconds = env_duration("MEVBACKUP_LOCK_REFRESH", false);
  ro.lock_wait_seconds = env_duration("MEVBACKUP_LOCK_WAIT", true);
  if (const char* v = std::getenv("MEVBACKUP_NO_LOCK"); v && *v && std::string(v) != "0") ro.no_lock = 1;
  // Shorter S3 retry backoffs, for tests: milliseconds.
  if (const char* v = std::getenv("MEVBACKUP_S3_RETRY_BASE_MS"); v && *v) {
    char* end = nullptr;
    long long ms = std::strtoll(v, &end, 10);
    if (*end || ms < 1 || ms > 60000)
      fail_with(MEVB_ERR_INVALID_ARGUMENT,
                std::string("MEVBACKUP_S3_RETRY_BASE_MS: \"") + v + "\" is not a number of milliseconds (1..60000)");
    ro.s3_retry_base_ms = ms;
  }
}

}  // namespace

mevb_repo_opts base_repo_opts() {
  mevb_repo_opts ro = MEVB_REPO_OPTS_INIT;
  ro.log = on_log;
  // A stalled server or network must not hang a cron job forever.
  if (const char* v = std::getenv("MEVBACKUP_STALL_TIMEOUT"); v && *v)
    ro.stall_timeout_seconds = parse_duration("MEVBACKUP_STALL_TIMEOUT", v, true);
  lock_from_env(ro);
  return ro;
}

mevb_repo* try_open_repo_at(const StorageOptions& s, const std::string& location) {
  mevb_repo_opts ro = base_repo_opts();
  auto c = [](const std::string& v) { return v.empty() ? nullptr : v.c_str(); };
  ro.storage_class = c(s.storage_class);
  ro.endpoint_url = c(s.endpoint_url);
  ro.region = c(s.region);
  ro.profile = c(s.profile);
  ro.ca_bundle = c(s.ca_bundle);
  ro.sse = c(s.sse);
  ro.sse_kms_key_id = c(s.sse_kms_key_id);
  ro.no_verify_tls = s.no_verify_tls ? 1 : 0;
  ro.path_style = s.path_style ? 1 : 0;
  ro.unsigned_payload = s.unsigned_payload ? 1 : 0;
  ro.part_size = static_cast<uint64_t>(s.part_size_mib) * 1024 * 1024;
  std::vector<const char*> recipients, identities;
  for (auto& r : s.recipients) recipients.push_back(r.c_str());
  for (auto& f : s.identity_files) identities.push_back(f.c_str());
  ro.recipients = recipients.data();
  ro.recipients_count = recipients.size();
  ro.recipients_file = c(s.recipients_file);
  ro.identity_files = identities.data();
  ro.identity_files_count = identities.size();
  ro.passphrase_file = c(s.passphrase_file);
  std::vector<const char*> verify_keys;
  for (auto& f : s.verify_key_files) verify_keys.push_back(f.c_str());
  ro.signing_key_file = c(s.signing_key_file);
  ro.verify_key_files = verify_keys.data();
  ro.verify_key_files_count = verify_keys.size();
  if (!s.max_rate.empty() && mevb_parse_rate(s.max_rate.c_str(), &ro.max_rate) != MEVB_OK) return nullptr;
  mevb_repo* repo = nullptr;
  if (mevb_repo_open(&repo, location.c_str(), &ro) != MEVB_OK) return nullptr;
  return repo;
}

mevb_repo* open_repo_at(const StorageOptions& s, const std::string& location) {
  mevb_repo* repo = try_open_repo_at(s, location);
  if (!repo) fail();
  return repo;
}

mevb_repo* open_repo(const RepoOptions& r) { return open_repo_at(r.storage, r.repo); }

void add_level_option(CLI::App* app, int& level) {
  app->add_option("--level", level, "compression level (gzip 1-3: ISA-L, 4-12: libdeflate; zstd 1-22)")
      ->type_name("N")->check(CLI::Range(1, 99));
}

nlohmann::json backup_json(const mevb_backup* b) {
  return {{"id", mevb_backup_id(b)},
          {"kind", mevb_backup_kind(b)},
          {"source", mevb_backup_source_name(b)},
          {"path", mevb_backup_path(b)},
          {"size", mevb_backup_size(b)},
          {"sha256", mevb_backup_sha256(b)},
          {"created_at", mevb_backup_created_at(b)},
          {"compression", mevb_backup_compression(b)},
          {"encrypted", mevb_backup_encrypted(b) != 0},
          {"signature", mevb_backup_signature(b)}};
}

int report_backup(mevb_repo* repo, mevb_backup* b, const OutputOptions& out) {
  if (out.json) {
    std::fputs(mevb_backup_manifest_json(b), stdout);
  } else if (!out.quiet) {
    std::printf("backup %s: %s (%llu bytes, sha256 %s)\n", mevb_backup_id(b), mevb_backup_path(b),
                static_cast<unsigned long long>(mevb_backup_size(b)), mevb_backup_sha256(b));
  }
  mevb_backup_free(b);
  mevb_repo_free(repo);
  return kExitOk;
}

std::string resolve_backup(mevb_repo* repo, const std::string& which, const char* kind, const char* source) {
  if (which != "latest") return which;
  mevb_backup* b = nullptr;
  if (mevb_repo_find(repo, which.c_str(), kind, source, &b) != MEVB_OK) fail();
  std::string id = mevb_backup_id(b);
  mevb_backup_free(b);
  return id;
}

void report_restore(const OutputOptions& out, const std::string& id, const char* kind, const std::string& detail,
                    nlohmann::json extra) {
  if (out.json) {
    nlohmann::json j = {{"restored", id}, {"kind", kind}};
    j.update(extra);
    std::printf("%s\n", j.dump(2).c_str());
  } else if (!out.quiet) {
    std::printf("restored %s%s\n", id.c_str(), detail.c_str());
  }
}

void warn_password_in_argv(const std::string& conninfo) {
  if (conninfo.find("password=") != std::string::npos ||
      (conninfo.find("://") != std::string::npos && conninfo.find('@') != std::string::npos &&
       conninfo.substr(0, conninfo.find('@')).find(':', conninfo.find("://") + 3) != std::string::npos))
    std::fprintf(stderr,
                 "mevbackup: warning: a password on the command line is visible to other users; use PGPASSWORD "
                 "or a passfile\n");
}

}  // namespace cli
