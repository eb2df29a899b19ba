// A repository directory. Publication is temp file (same directory, 0600) -> write ->
// fsync -> rename without replacing -> fsync of the directory, so a crash or a failed
// run never leaves a partial object under a final name.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <random>

#include <fmt/format.h>

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

class LocalSink final : public Sink {
 public:
  LocalSink(Fs& fs, std::string dir, std::string final_path, std::string tmp_path, int fd)
      : fs_(fs), dir_(std::move(dir)), final_(std::move(final_path)), tmp_(std::move(tmp_path)), fd_(fd) {}
  ~LocalSink() override { abort(); }

  void write(Bytes data) override {
    if (fd_ < 0) throw Error(Code::internal, "write to a closed local sink");
    const std::byte* p = data.data();
    size_t left = data.size();
    while (left) {
      ssize_t n = fs_.write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw sys_error(errno, fmt::format("cannot write {}", tmp_));
      }
      if (n == 0) throw sys_error(ENOSPC, fmt::format("cannot write {}", tmp_));
      p += n;
      left -= static_cast<size_t>(n);
    }
  }

  void commit() override {
    if (fd_ < 0) throw Error(Code::internal, "commit of a closed local sink");
    if (fs_.fsync(fd_) != 0) throw sys_error(errno, fmt::format("cannot fsync {}", tmp_));
    int fd = fd_;
    fd_ = -1;
    if (fs_.close(fd) != 0) {
      int e = errno;
      fs_.unlink(tmp_.c_str());
      throw sys_error(e, fmt::format("cannot close {}", tmp_));
    }
    if (fs_.rename_noreplace(tmp_.c_str(), final_.c_str()) != 0) {
      int e = errno;
      fs_.unlink(tmp_.c_str());
      if (e == EEXIST) throw Error(Code::exists, fmt::format("{} already exists; it was not overwritten", final_));
      throw sys_error(e, fmt::format("cannot publish {}", final_));
    }
    tmp_.clear();
    int dfd = fs_.open(dir_.c_str(), O_RDONLY | O_DIRECTORY, 0);
    if (dfd < 0) throw sys_error(errno, fmt::format("cannot open directory {}", dir_));
    int rc = fs_.fsync(dfd);
    int e = errno;
    fs_.close(dfd);
    if (rc != 0) throw sys_error(e, fmt::format("cannot fsync directory {}", dir_));
  }

  void abort() noexcept override {
    if (fd_ >= 0) {
      fs_.close(fd_);
      fd_ = -1;
    }
    if (!tmp_.empty()) {
      fs_.unlink(tmp_.c_str());
      tmp_.clear();
    }
  }

 private:
  Fs& fs_;
  std::string dir_, final_, tmp_;
  int fd_;
};

class LocalSource final : public Source {
 public:
  LocalSource(Fs& fs, std::string path, int fd) : fs_(fs), path_(std::move(path)), fd_(fd) {}
  ~LocalSource() override { fs_.close(fd_); }
  size_t read(MutBytes buf) override {
    for (;;) {
      ssize_t n = fs_.read(fd_, buf.data(), buf.size());
      if (n >= 0) return static_cast<size_t>(n);
      if (errno != EINTR) throw sys_error(errno, fmt::format("cannot read {}", path_));
    }
  }

 private:
  Fs& fs_;
  std::string path_;
  int fd_;
};

class LocalStorage final : public Storage {
 public:
  LocalStorage(std::string root, Fs& fs) : root_(std::move(root)), fs_(fs) {
    while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
    if (root_.empty()) throw Error(Code::invalid_argument, "repository path is empty");
  }

  std::unique_ptr<Sink> put(const std::string& key) override {
    validate_key(key);
    std::string path = path_of(key);
    std::string dir = path.substr(0, path.rfind('/'));
    std::string base = path.substr(path.rfind('/') + 1);
    make_dirs(dir);
    std::string tmp = fmt::format("{}/.{}{}{}", dir, base, kTempMarker, random_suffix());
    int fd = fs_.open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) throw sys_error(errno, fmt::format("cannot create {}", tmp));
    return std::make_unique<LocalSink>(fs_, dir, path, tmp, fd);
  }

  std::unique_ptr<Source> get(const std::string& key) override {
    validate_key(key);
    std::string path = path_of(key);
    int fd = fs_.open(path.c_str(), O_RDONLY, 0);
    if (fd < 0) throw sys_error(errno, fmt::format("cannot open {}", path));
    return std::make_unique<LocalSource>(fs_, path, fd);
  }

  std::vector<ObjectInfo> list(const std::string& prefix) override { return list_matching(prefix, false); }
  std::vector<ObjectInfo> list_unfinished(const std::string& prefix) override { return list_matching(prefix, true); }

  std::optional<ObjectInfo> stat(const std::string& key) override {
    validate_key(key);
    struct stat st;
    std::string path = path_of(key);
    if (::stat(path.c_str(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
      throw sys_error(errno, fmt::format("cannot stat {}", path));
    }
    if (!S_ISREG(st.st_mode)) return std::nullopt;
    return ObjectInfo{key, static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtime), {}};
  }

  void remove(const std::string& key) override {
    validate_key(key);
    std::string path = path_of(key);
    if (fs_.unlink(path.c_str()) != 0 && errno != ENOENT)
      throw sys_error(errno, fmt::format("cannot delete {}", path));
  }

  std::string describe() const override { return root_; }

  // Only a root that is not there at all; one that cannot be read is for list() to report.
  bool exists() override {
    struct stat st;
    return ::stat(root_.c_str(), &st) == 0 || (errno != ENOENT && errno != ENOTDIR);
  }

 private:
  std::string path_of(const std::string& key) const { return root_ + "/" + key; }

  std::vector<ObjectInfo> list_matching(const std::string& prefix, bool temporaries) {
    std::vector<ObjectInfo> out;
    // Walk only the directory the prefix names (plus below), not the whole repository.
    std::string dir_part = prefix.substr(0, prefix.rfind('/') == std::string::npos ? 0 : prefix.rfind('/'));
    walk(dir_part, prefix, temporaries, out);
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.key < b.key; });
    return out;
  }

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

  // Regular files under rel_dir whose key starts with `prefix`: committed objects, or
  // (temporaries=true) the temporary files of uploads that never committed.
  void walk(const std::string& rel_dir, const std::string& prefix, bool temporaries, std::vector<ObjectInfo>& out) {
    std::string path = rel_dir.empty() ? root_ : path_of(rel_dir);
    DIR* d = ::opendir(path.c_str());
    if (!d) {
      if (errno == ENOENT) return;  // nothing stored there yet
      if (errno == ENOTDIR && !rel_dir.empty()) return;  // a prefix that names a file
      throw sys_error(errno, fmt::format("cannot list {}", path));
    }
    std::vector<std::string> subdirs;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      std::string key = rel_dir.empty() ? name : rel_dir + "/" + name;
      struct stat st;
      if (::stat((path + "/" + name).c_str(), &st) != 0) continue;  // vanished meanwhile
      if (S_ISDIR(st.st_mode)) {
        if (prefix.compare(0, std::min(prefix.size(), key.size() + 1), key + "/", 0,
                           std::min(prefix.size(), key.size() + 1)) == 0)
          subdirs.push_back(key);
      } else if (S_ISREG(st.st_mode) && is_temp_name(name) == temporaries &&
                 key.compare(0, prefix.size(), prefix) == 0) {
        out.push_back(ObjectInfo{key, static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtime), {}});
      }
    }
    ::closedir(d);
    for (auto& s : subdirs) walk(s, prefix, temporaries, out);
  }

  std::string root_;
  Fs& fs_;
};

}  // namespace

std::unique_ptr<Storage> make_local_storage(const std::string& root, Fs& fs) {
  return std::make_unique<LocalStorage>(root, fs);
}

}  // namespace mevbackup
