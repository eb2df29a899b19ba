// A child process with piped stdin/stdout and captured stderr; no shell, and the
// environment is given explicitly so secrets travel there and never through argv.
#pragma once

#include <sys/types.h>

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mevbackup/stream.hpp"

namespace mevbackup {

struct SpawnOptions {
  std::vector<std::string> argv;                         // argv[0] is looked up in PATH
  // The child's environment is built, never inherited whole: from this process's environment
  // only kBaseEnv and the names listed here (a trailing '*' makes a prefix), then `env`.
  std::vector<std::string> inherit_env;
  std::map<std::string, std::optional<std::string>> env; // overrides; nullopt removes
  bool pipe_stdin = false;
  bool pipe_stdout = false;
  size_t stderr_limit = 16 * 1024;                      // bytes of stderr kept for messages
  std::string cwd;                                       // the child's working directory; empty: ours
  int pass_fd = -1;  // >= 0: this open file is the child's fd 3 (it reads it as kPassedFdPath)
};

// The path under which a child reads the file given as SpawnOptions::pass_fd.
inline constexpr const char* kPassedFdPath = "/dev/fd/3";

// What every child inherits: PATH, HOME, LANG, LC_*, TZ, TMPDIR. Nothing secret.
extern const std::vector<std::string> kBaseEnv;
// For pg_dump/pg_restore and other libpq programs: PG* too (PGPASSWORD, PGSSLMODE, ...).
extern const std::vector<std::string> kPgToolEnv;

// True when the environment variable `name` is allowed by `patterns` (see inherit_env).
bool env_allowed(const std::string& name, const std::vector<std::string>& patterns);

class Subprocess {
 public:
  explicit Subprocess(const SpawnOptions& opts);
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // Reads the child's stdout; 0 at EOF. Throws io on read errors.
  size_t read_stdout(MutBytes buf);
  // Writes all of `data` to the child's stdin. Returns false when the child closed
  // its end (EPIPE); SIGPIPE never reaches the process.
  bool write_stdin(Bytes data);
  void close_stdin();
  // Waits for exit; returns the exit code, or 128+signal when killed by a signal.
  int wait();
  // True once the child has exited (reaping it: wait() then returns its status at once).
  bool exited();
  // Asks the child to stop (SIGTERM); safe from another thread.
  void terminate() noexcept;
  // Kills the child and its process group (SIGKILL), for one that ignored terminate().
  void kill() noexcept;
  // stderr as captured so far (complete after wait()), folded into one line.
  std::string stderr_text();
  const std::string& program() const { return program_; }

 private:
  std::string program_;
  pid_t pid_ = -1;
  int in_fd_ = -1, out_fd_ = -1, err_fd_ = -1;
  std::thread err_thread_;
  std::mutex err_m_;
  std::string err_;
  size_t err_limit_;
  std::optional<int> status_;
};

// Runs `argv` (no stdin, the base environment) to its end: its exit status, the first
// `limit` bytes of its stdout and its stderr folded into one line. For `prog --version`.
struct ProgramOutput {
  int status = 0;
  std::string out, err;
};
ProgramOutput run_for_output(const std::vector<std::string>& argv, size_t limit = 64 * 1024);

// One line of text naming how the child ended, e.g. "exited with status 1".
std::string describe_exit(int code);

// The full path of `name` in PATH, or nullopt.
std::optional<std::string> find_in_path(const std::string& name);

// This machine's host name ("unknown" if it has none), as written into lock objects and
// staging-database comments so that a later run can tell its own host's leftovers.
std::string this_host();

// True when no process `pid` exists on this host (kill(pid, 0) says ESRCH); a process of
// another user still counts as running.
bool process_gone(long pid);

}  // namespace mevbackup
