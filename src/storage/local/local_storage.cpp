// A repository directory. Publication is temp file (same directory, 0600) -> write ->
// fsync -> rename without replacing -> fsync of the directory, so a crash or a failed
// run never leaves a partial object under a final name.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <cerrno>
#include <random>

#include <fmt/format.h>

#include "mevbackup/file_stream.hpp"
#include "mevbackup/storage.hpp"

namespace mevbackup {

namespace {

constexpr const char* kTempMarker = ".tmp-";

bool is_temp_name(const std::string& name) {
  return !name.empty() && name[0] == '.' && name.find(kTempMarker) != std::string::npos;
}

std::string random_suffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}", rng());
}

class LocalStorage;

// The library's one file sink (src/io) over the temporary file put_local created through
// the root's descriptor, plus the candidate names of put_first_free.
class LocalSink final : public NamedSink {
 public:
  LocalSink(Fs& fs, std::string dir, const std::string& final_path, const std::string& tmp_path, int fd)
      : dir_(std::move(dir)) {
    FileSinkOptions o;
    o.next_path = [this](int attempt) { return next_candidate(attempt); };
    file_ = make_file_sink(final_path, tmp_path, fd, o, fs);
  }

  // put_first_free: publication under `key`, else under the next candidates.
  void set_candidates(std::string root, std::string key, std::function<std::string(int)> key_for, int tries) {
    root_ = std::move(root);
    key_ = std::move(key);
    key_for_ = std::move(key_for);
    tries_ = tries;
  }
  std::string key() const override { return key_; }

  void write(Bytes data) override { file_->write(data); }
  void commit() override { file_->commit(); }
  void abort() noexcept override { file_->abort(); }

 private:
  // The path of candidate `i`, or "" when there is none (or it lies in another directory:
  // a publish is only ever a rename within one).
  std::string next_candidate(int i) {
    if (i >= tries_ || !key_for_) return "";
    std::string key = key_for_(i);
    validate_key(key);
    std::string path = root_ + "/" + key;
    if (path.substr(0, path.rfind('/')) != dir_) return "";
    key_ = std::move(key);
    return path;
  }

  std::string dir_;
  std::unique_ptr<Sink> file_;
  std::string root_, key_;
  std::function<std::string(int)> key_for_;
  int tries_ = 1;
};

// A directory descriptor, closed when it goes out of scope.
class DirFd {
 public:
  explicit DirFd(int fd = -1) : fd_(fd) {}
  DirFd(DirFd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  DirFd& operator=(DirFd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  DirFd(const DirFd&) = delete;
  DirFd& operator=(const DirFd&) = delete;
  ~DirFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_;
};

// Everything below the root is reached relative to the root's directory descriptor,
// one component at a time with O_NOFOLLOW: a symbolic link planted inside the
// repository (repo/attic -> /srv) is never followed, so list, prune and get cannot
// reach, list or delete anything outside it. The root path itself may be a link (an
// administrator's choice, as /backups -> /mnt/disk).
class LocalStorage final : public Storage {
 public:
  LocalStorage(std::string root, Fs& fs) : root_(std::move(root)), fs_(fs) {
    while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
    if (root_.empty()) throw Error(Code::invalid_argument, "repository path is empty");
  }

  std::unique_ptr<Sink> put(const std::string& key) override { return put_local(key); }

  std::unique_ptr<NamedSink> put_first_free(const std::function<std::string(int)>& key_for, int tries) override {
    if (tries < 1) throw Error(Code::invalid_argument, "put_first_free: no candidate names");
    std::string key = key_for(0);
    auto sink = put_local(key);
    sink->set_candidates(root_, key, key_for, tries);
    return sink;
  }

  std::unique_ptr<LocalSink> put_local(const std::string& key) {
    validate_key(key);
    std::string path = path_of(key);
    std::string dir = path.substr(0, path.rfind('/'));
    std::string base = path.substr(path.rfind('/') + 1);
    make_dirs(root_);
    DirFd dfd = open_dir(parent_of(key), true);
    std::string tmp_base = fmt::format(".{}{}{}", base, kTempMarker, random_suffix());
    std::string tmp = dir + "/" + tmp_base;
    // Through the Fs seam (faults are injected there); O_EXCL never follows a link.
    int fd = fs_.open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
    if (fd < 0) throw sys_error(errno, fmt::format("cannot create {}", tmp));
    // The path was resolved again by name: it must have led into the directory the
    // descriptor walk found, not through a link swapped in meanwhile.
    struct stat by_fd, by_dir;
    if (::fstat(fd, &by_fd) != 0 || ::fstatat(dfd.get(), tmp_base.c_str(), &by_dir, AT_SYMLINK_NOFOLLOW) != 0 ||
        by_fd.st_dev != by_dir.st_dev || by_fd.st_ino != by_dir.st_ino) {
      fs_.close(fd);
      ::unlinkat(dfd.get(), tmp_base.c_str(), 0);
      throw Error(Code::permission, fmt::format("{} changed while a file was created in it; nothing was written", dir));
    }
    return std::make_unique<LocalSink>(fs_, dir, path, tmp, fd);
  }

  std::unique_ptr<Source> get(const std::string& key) override {
    validate_key(key);
    std::string path = path_of(key);
    DirFd dfd = open_dir(parent_of(key), false);
    if (!dfd) throw sys_error(ENOENT, fmt::format("cannot open {}", path));
    int fd = ::openat(dfd.get(), base_of(key).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ELOOP) throw link_error(key);
      throw sys_error(errno, fmt::format("cannot open {}", path));
    }
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw Error(Code::not_found, fmt::format("cannot open {}: not a regular file", path));
    }
    return make_fd_source(fd, true, path, fs_);
  }

  std::vector<ObjectInfo> list(const std::string& prefix) override { return list_matching(prefix, false); }
  std::vector<ObjectInfo> list_unfinished(const std::string& prefix) override { return list_matching(prefix, true); }

  std::optional<ObjectInfo> stat(const std::string& key) override {
    validate_key(key);
    DirFd dfd = open_dir(parent_of(key), false);
    if (!dfd) return std::nullopt;
    struct stat st;
    if (::fstatat(dfd.get(), base_of(key).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
      throw sys_error(errno, fmt::format("cannot stat {}", path_of(key)));
    }
    if (!S_ISREG(st.st_mode)) return std::nullopt;  // a link is not an object
    return ObjectInfo{key, static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtime), {}};
  }

  void remove(const std::string& key) override {
    validate_key(key);
    DirFd dfd = open_dir(parent_of(key), false);
    if (!dfd) return;  // already gone
    // unlinkat removes a link itself, never what it points to.
    if (::unlinkat(dfd.get(), base_of(key).c_str(), 0) != 0 && errno != ENOENT)
      throw sys_error(errno, fmt::format("cannot delete {}", path_of(key)));
  }

  std::string describe() const override { return root_; }
  bool local() const override { return true; }

  // Only a root that is not there at all; one that cannot be read is for list() to report.
  bool exists() override {
    struct stat st;
    return ::stat(root_.c_str(), &st) == 0 || (errno != ENOENT && errno != ENOTDIR);
  }

 private:
  std::string path_of(const std::string& key) const { return root_ + "/" + key; }
  static std::string parent_of(const std::string& key) {
    auto slash = key.rfind('/');
    return slash == std::string::npos ? "" : key.substr(0, slash);
  }
  static std::string base_of(const std::string& key) { return key.substr(key.rfind('/') + 1); }

  Error link_error(const std::string& rel) const {
    return Error(Code::permission,
                 fmt::format("{} is a symbolic link; the repository never follows links inside it", path_of(rel)));
  }

  // The directory root/rel_dir, each component opened with O_NOFOLLOW. A missing
  // component gives an empty DirFd, or (create) is made 0700; a link is an error.
  DirFd open_dir(const std::string& rel_dir, bool create) const {
    DirFd fd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) {
      if (errno == ENOENT && !create) return DirFd();
      throw sys_error(errno, fmt::format("cannot open directory {}", root_));
    }
    size_t start = 0;
    while (start < rel_dir.size()) {
      size_t end = rel_dir.find('/', start);
      if (end == std::string::npos) end = rel_dir.size();
      std::string name = rel_dir.substr(start, end - start), so_far = rel_dir.substr(0, end);
      int next = ::openat(fd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (next < 0 && errno == ENOENT && create) {
        if (::mkdirat(fd.get(), name.c_str(), 0700) != 0 && errno != EEXIST)
          throw sys_error(errno, fmt::format("cannot create directory {}", path_of(so_far)));
        next = ::openat(fd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      }
      if (next < 0) {
        int e = errno;
        struct stat st;
        if ((e == ELOOP || e == ENOTDIR) && ::fstatat(fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISLNK(st.st_mode))
          throw link_error(so_far);
        if (e == ENOENT) return DirFd();
        if (e == ENOTDIR)
          throw Error(Code::io, fmt::format("{} exists and is not a directory", path_of(so_far)));
        throw sys_error(e, fmt::format("cannot open directory {}", path_of(so_far)));
      }
      fd = DirFd(next);
      start = end + 1;
    }
    return fd;
  }

  std::vector<ObjectInfo> list_matching(const std::string& prefix, bool temporaries) {
    std::vector<ObjectInfo> out;
    // Walk only the directory the prefix names (plus below), not the whole repository.
    std::string dir_part = prefix.substr(0, prefix.rfind('/') == std::string::npos ? 0 : prefix.rfind('/'));
    DirFd dfd;
    try {
      dfd = open_dir(dir_part, false);
    } catch (const Error& e) {
      // A prefix naming a file holds nothing; one leading through a link is refused,
      // so an administrator sees why the backups there are not listed.
      if (dir_part.empty() || e.code() == Code::permission) throw;
      return out;
    }
    if (dfd) walk(std::move(dfd), dir_part, prefix, temporaries, out);
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.key < b.key; });
    return out;
  }

  // Creates the root (and its parents) by path: the root is the administrator's to name.
  void make_dirs(const std::string& dir) {
    struct stat st;
    if (::stat(dir.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) throw Error(Code::io, fmt::format("{} exists and is not a directory", dir));
      return;
    }
    auto slash = dir.rfind('/');
    if (slash != std::string::npos && slash > 0) make_dirs(dir.substr(0, slash));
    if (fs_.mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
      throw sys_error(errno, fmt::format("cannot create directory {}", dir));
  }

  // Regular files under rel_dir (open as `dfd`) whose key starts with `prefix`: committed
  // objects, or (temporaries=true) the temporary files of uploads that never committed.
  // Symbolic links are neither listed nor descended into.
  void walk(DirFd dfd, const std::string& rel_dir, const std::string& prefix, bool temporaries,
            std::vector<ObjectInfo>& out) {
    int dup = ::fcntl(dfd.get(), F_DUPFD_CLOEXEC, 0);
    if (dup < 0) throw sys_error(errno, fmt::format("cannot list {}", rel_dir.empty() ? root_ : path_of(rel_dir)));
    DIR* d = ::fdopendir(dup);
    if (!d) {
      int e = errno;
      ::close(dup);
      throw sys_error(e, fmt::format("cannot list {}", rel_dir.empty() ? root_ : path_of(rel_dir)));
    }
    std::vector<std::string> subdirs;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      std::string key = rel_dir.empty() ? name : rel_dir + "/" + name;
      struct stat st;
      if (::fstatat(dfd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // vanished meanwhile
      if (S_ISDIR(st.st_mode)) {
        if (prefix.compare(0, std::min(prefix.size(), key.size() + 1), key + "/", 0,
                           std::min(prefix.size(), key.size() + 1)) == 0)
          subdirs.push_back(name);
      } else if (S_ISREG(st.st_mode) && is_temp_name(name) == temporaries &&
                 key.compare(0, prefix.size(), prefix) == 0) {
        out.push_back(ObjectInfo{key, static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtime), {}});
      }
    }
    ::closedir(d);
    for (auto& s : subdirs) {
      DirFd sub(::openat(dfd.get(), s.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) continue;  // vanished, or replaced by a link meanwhile: not followed
      walk(std::move(sub), rel_dir.empty() ? s : rel_dir + "/" + s, prefix, temporaries, out);
    }
  }

  std::string root_;
  Fs& fs_;
};

}  // namespace

std::unique_ptr<Storage> make_local_storage(const std::string& root, Fs& fs) {
  return std::make_unique<LocalStorage>(root, fs);
}

}  // namespace mevbackup
