// Shared pieces of the mevbackup CLI: option groups, callbacks, error reporting.
//
// Each area file (postgres.cpp, files.cpp, ...) defines one setup function per
// subcommand: it declares the subcommand's options on a CLI11 App and returns the
// action that runs once the command line is parsed. main.cpp lists them in a table.
#pragma once

#include <mevbackup.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace cli {

// Exit statuses of every command but `check` (which keeps the Nagios codes 0-3).
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitLocked = 11;  // the repository is locked by another run: try again later

struct UsageError {
  std::string msg;
};

// What a parsed subcommand runs; it returns the exit status.
using Action = std::function<int()>;
// Declares a subcommand's options on `app` and returns its action.
using Setup = Action (*)(CLI::App* app);

// Options of the storage (S3 repositories), accepted by every command that opens one.
struct StorageOptions {
  std::string storage_class, endpoint_url, region, ca_bundle, sse, sse_kms_key_id, profile;
  unsigned part_size_mib = 0;
  bool no_verify_tls = false, path_style = false, unsigned_payload = false;
  // Encryption (age): public keys for backups, identity and passphrase files for reads.
  std::vector<std::string> recipients, identity_files;
  std::string recipients_file, passphrase_file;
  // Signed manifests: the signing key (backups) and the verify keys (everything reading).
  std::string signing_key_file;
  std::vector<std::string> verify_key_files;
  std::string max_rate;  // --max-rate RATE: every upload and download
  // As command-line words, for a program that runs mevbackup again (restore_command).
  std::vector<std::string> as_args() const;
};

// -r/--repo (or MEVBACKUP_REPO) and the storage options.
struct RepoOptions {
  std::string repo;
  StorageOptions storage;
};

// Output options: -q/--quiet (nothing printed on success), -v/--verbose, --json.
struct OutputOptions {
  bool quiet = false, verbose = false, json = false;
};

void add_storage_options(CLI::App* app, StorageOptions& s);
void add_repo_options(CLI::App* app, RepoOptions& r);
// `json`: the command reports something and so takes --json.
void add_output_options(CLI::App* app, OutputOptions& o, bool json = true);

// Applies the output options (verbosity, progress, JSON errors); first thing an action does.
void apply_output(const OutputOptions& o);

// One duration syntax everywhere: plain seconds ("90") or numbers with units s, m, h, d, w
// ("90s", "30m", "25h", "2d", "1w", "1d12h"). Throws UsageError naming `what`.
long long parse_duration(const std::string& what, const std::string& value, bool allow_zero = false);
// This program's absolute path (/proc/self/exe), for commands it writes for others to run
// (a restore_command's wal-fetch); "mevbackup" when it cannot be read.
std::string self_path();
// A CLI11 validator accepting exactly what parse_duration accepts.
CLI::Validator duration_validator(bool allow_zero = false);

inline bool g_verbose = false;
inline bool g_progress = false;
inline bool g_json_errors = false;

void on_log(int level, const char* message, void*);
int on_progress(const mevb_progress* p, void*);

// Reports the last library error (as JSON on stderr with --json) and exits 1, or 11 when
// the repository was locked.
[[noreturn]] void fail();
// The same for a failure found by the CLI itself (a bad MEVBACKUP_* variable): `code` is a mevb_status.
[[noreturn]] void fail_with(int code, const std::string& message, bool retriable = false);
// The JSON object a failure prints on stderr with --json.
nlohmann::json error_json(const char* code_name, int status, int exit_status, const std::string& message);

// What every repository is opened with: the log, and MEVBACKUP_STALL_TIMEOUT and the
// lock variables of the environment.
mevb_repo_opts base_repo_opts();
mevb_repo* open_repo(const RepoOptions& r);
// Opens `location` with the storage options of the command line.
mevb_repo* open_repo_at(const StorageOptions& s, const std::string& location);
// The same, without exiting: nullptr (the library's error is set) when it fails.
mevb_repo* try_open_repo_at(const StorageOptions& s, const std::string& location);

// --level N: its range depends on the codec, so the library checks it and names the
// valid range; -1 (absent): the codec's default.
void add_level_option(CLI::App* app, int& level);

// Prints a new backup (its manifest with --json, else one line unless quiet), frees both handles.
int report_backup(mevb_repo* repo, mevb_backup* b, const OutputOptions& out);

// The id `which` ("latest" or an id) stands for, resolved before a restore so that the
// restore works on, and reports, one definite backup.
std::string resolve_backup(mevb_repo* repo, const std::string& which, const char* kind, const char* source);

// Prints the result of a restore: "restored ID" (plus `detail`), or a JSON object.
void report_restore(const OutputOptions& out, const std::string& id, const char* kind, const std::string& detail,
                    nlohmann::json extra = nlohmann::json::object());

void warn_password_in_argv(const std::string& conninfo);

nlohmann::json backup_json(const mevb_backup* b);

}  // namespace cli
