#include "subprocess.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

extern char** environ;

namespace mevbackup {

namespace {

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw sys_error(errno, "cannot create pipe");
    r = fds[0];
    w = fds[1];
  }
  void close_all() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
    r = w = -1;
  }
};

// Blocks SIGPIPE on this thread for the guard's life and discards one that arrived,
// so a write to a dead child yields EPIPE instead of killing the host process.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE)) {
        timespec zero{0, 0};
        while (sigtimedwait(&set_, nullptr, &zero) < 0 && errno == EINTR) {
        }
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t set_, old_;
  bool was_pending_ = false;
};

}  // namespace

const std::vector<std::string> kBaseEnv = {"PATH", "HOME", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR"};
const std::vector<std::string> kPgToolEnv = {"PG*"};

bool env_allowed(const std::string& name, const std::vector<std::string>& patterns) {
  for (auto& p : patterns) {
    if (!p.empty() && p.back() == '*') {
      if (name.compare(0, p.size() - 1, p, 0, p.size() - 1) == 0) return true;
    } else if (name == p) {
      return true;
    }
  }
  return false;
}

std::optional<std::string> find_in_path(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  // The process's own PATH, as execvp would search it (a documented provider: mevbackup.h).
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string dir = p.substr(start, end - start);
    if (dir.empty()) dir = ".";
    std::string cand = dir + "/" + name;
    if (::access(cand.c_str(), X_OK) == 0) return cand;
    start = end + 1;
  }
  return std::nullopt;
}

std::string this_host() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

bool process_gone(long pid) { return pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH; }

std::string describe_exit(int code) {
  if (code >= 128) return fmt::format("was killed by signal {}", code - 128);
  return fmt::format("exited with status {}", code);
}

Subprocess::Subprocess(const SpawnOptions& opts) : err_limit_(opts.stderr_limit) {
  if (opts.argv.empty()) throw Error(Code::invalid_argument, "no program to run");
  program_ = opts.argv[0];
  auto exe = find_in_path(program_);
  if (!exe) throw Error(Code::not_found, fmt::format("program \"{}\" not found in PATH", program_));

  // Environment: the allowed part of ours (a hook must not see PGPASSWORD, pg_dump not the
  // AWS secret), then the overrides.
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (!eq) continue;
    std::string name(*e, static_cast<size_t>(eq - *e));
    if (env_allowed(name, kBaseEnv) || env_allowed(name, opts.inherit_env)) env[name] = eq + 1;
  }
  for (auto& [k, v] : opts.env) {
    if (v) env[k] = *v;
    else env.erase(k);
  }
  std::vector<std::string> env_strs;
  for (auto& [k, v] : env) env_strs.push_back(k + "=" + v);
  std::vector<char*> envp, argv;
  for (auto& s : env_strs) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = opts.argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  Pipe in, out, err;
  if (!opts.pipe_stdin) in.close_all();
  if (!opts.pipe_stdout) out.close_all();
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (opts.pipe_stdin) posix_spawn_file_actions_adddup2(&fa, in.r, 0);
  else posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (opts.pipe_stdout) posix_spawn_file_actions_adddup2(&fa, out.w, 1);
  else posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, err.w, 2);
  if (!opts.cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, opts.cwd.c_str());
  // dup2 clears close-on-exec on the copy (glibc does so even when the numbers are equal).
  if (opts.pass_fd >= 0) posix_spawn_file_actions_adddup2(&fa, opts.pass_fd, 3);
  // Nothing else of this process reaches the child: not the embedding program's own files
  // opened without close-on-exec either.
  posix_spawn_file_actions_addclosefrom_np(&fa, opts.pass_fd >= 0 ? 4 : 3);
  // The child starts with default SIGPIPE handling and an empty signal mask.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, def;
  sigemptyset(&none);
  sigemptyset(&def);
  sigaddset(&def, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &def);
  // Its own process group, so terminate() also reaches anything it started (a wrapper
  // script's children would otherwise keep our pipes open).
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  int rc = posix_spawn(&pid_, exe->c_str(), &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    in.close_all();
    out.close_all();
    err.close_all();
    throw sys_error(rc, fmt::format("cannot start {}", *exe));
  }
  // 1 MiB pipes (Linux allows it unprivileged up to /proc/sys/fs/pipe-max-size): four
  // times fewer wake-ups than the default 64 KiB when streaming a dump. Best effort.
  if (opts.pipe_stdin) {
    ::close(in.r);
    in_fd_ = in.w;
    ::fcntl(in_fd_, F_SETPIPE_SZ, 1 << 20);
  }
  if (opts.pipe_stdout) {
    ::close(out.w);
    out_fd_ = out.r;
    ::fcntl(out_fd_, F_SETPIPE_SZ, 1 << 20);
  }
  ::close(err.w);
  err_fd_ = err.r;
  err_thread_ = std::thread([this] {
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(err_fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      std::lock_guard lk(err_m_);
      if (err_.size() < err_limit_) err_.append(buf, std::min<size_t>(n, err_limit_ - err_.size()));
    }
  });
}

Subprocess::~Subprocess() {
  if (in_fd_ >= 0) ::close(in_fd_);
  if (out_fd_ >= 0) ::close(out_fd_);
  if (!status_ && pid_ > 0) {
    ::kill(-pid_, SIGKILL);
    int st;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
  if (err_thread_.joinable()) err_thread_.join();
  if (err_fd_ >= 0) ::close(err_fd_);
}

size_t Subprocess::read_stdout(MutBytes buf) {
  for (;;) {
    ssize_t n = ::read(out_fd_, buf.data(), buf.size());
    if (n >= 0) return static_cast<size_t>(n);
    if (errno != EINTR) throw sys_error(errno, fmt::format("cannot read output of {}", program_));
  }
}

bool Subprocess::write_stdin(Bytes data) {
  SigpipeGuard guard;
  const std::byte* p = data.data();
  size_t left = data.size();
  while (left) {
    ssize_t n = ::write(in_fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE) return false;
      throw sys_error(errno, fmt::format("cannot write to {}", program_));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return true;
}

void Subprocess::close_stdin() {
  if (in_fd_ >= 0) ::close(in_fd_);
  in_fd_ = -1;
}

int Subprocess::wait() {
  if (status_) return *status_;
  close_stdin();
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0) {
    if (errno != EINTR) throw sys_error(errno, fmt::format("cannot wait for {}", program_));
  }
  if (err_thread_.joinable()) err_thread_.join();
  status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  return *status_;
}

ProgramOutput run_for_output(const std::vector<std::string>& argv, size_t limit) {
  SpawnOptions so;
  so.argv = argv;
  so.pipe_stdout = true;
  Subprocess p(so);
  ProgramOutput r;
  std::byte buf[4096];
  for (size_t n; (n = p.read_stdout(MutBytes(buf, sizeof buf))) > 0;)
    if (r.out.size() < limit) r.out.append(reinterpret_cast<const char*>(buf), std::min(n, limit - r.out.size()));
  r.status = p.wait();
  r.err = p.stderr_text();
  return r;
}

bool Subprocess::exited() {
  if (status_) return true;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r != pid_) return false;
  if (err_thread_.joinable()) err_thread_.join();
  status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  return true;
}

void Subprocess::terminate() noexcept {
  if (!status_ && pid_ > 0) ::kill(-pid_, SIGTERM);
}

void Subprocess::kill() noexcept {
  if (!status_ && pid_ > 0) ::kill(-pid_, SIGKILL);
}

std::string Subprocess::stderr_text() {
  std::lock_guard lk(err_m_);
  return one_line(err_);
}

}  // namespace mevbackup
