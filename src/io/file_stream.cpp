#include "mevbackup/file_stream.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <random>

#include <fmt/format.h>

namespace mevbackup {

namespace {

class FdSource final : public Source {
 public:
  FdSource(Fs& fs, int fd, bool close_fd, std::string name)
      : fs_(fs), fd_(fd), close_(close_fd), name_(std::move(name)) {}
  ~FdSource() override {
    if (close_ && fd_ >= 0) fs_.close(fd_);
  }
  size_t read(MutBytes buf) override {
    for (;;) {
      ssize_t n = fs_.read(fd_, buf.data(), buf.size());
      if (n >= 0) return static_cast<size_t>(n);
      if (errno != EINTR) throw sys_error(errno, fmt::format("cannot read {}", name_));
    }
  }

 private:
  Fs& fs_;
  int fd_;
  bool close_;
  std::string name_;
};

std::string temp_suffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}", rng());
}

class FileSink final : public Sink {
 public:
  FileSink(Fs& fs, std::string path, bool replace) : fs_(fs), path_(std::move(path)), replace_(replace) {
    auto slash = path_.rfind('/');
    dir_ = slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash));
    std::string base = slash == std::string::npos ? path_ : path_.substr(slash + 1);
    if (base.empty() || base == "." || base == "..")
      throw Error(Code::invalid_argument, fmt::format("\"{}\" does not name a file", path_));
    tmp_ = fmt::format("{}/.{}.tmp-{}", dir_, base, temp_suffix());
    fd_ = fs_.open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd_ < 0) {
      int e = errno;
      tmp_.clear();
      throw sys_error(e, fmt::format("cannot create a temporary file beside {}", path_));
    }
  }
  ~FileSink() override { abort(); }

  void write(Bytes data) override {
    if (fd_ < 0) throw Error(Code::internal, fmt::format("write to {} after it was closed", path_));
    const std::byte* p = data.data();
    size_t left = data.size();
    while (left) {
      ssize_t n = fs_.write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw sys_error(errno, fmt::format("cannot write {}", tmp_));
      if (n == 0) throw sys_error(ENOSPC, fmt::format("cannot write {}", tmp_));
      p += n;
      left -= static_cast<size_t>(n);
    }
  }

  void commit() override {
    if (fd_ < 0) throw Error(Code::internal, fmt::format("commit of {} after it was closed", path_));
    if (fs_.fsync(fd_) != 0) throw sys_error(errno, fmt::format("cannot fsync {}", tmp_));
    int fd = fd_;
    fd_ = -1;
    if (fs_.close(fd) != 0) throw sys_error(errno, fmt::format("cannot close {}", tmp_));
    int rc = replace_ ? ::rename(tmp_.c_str(), path_.c_str()) : fs_.rename_noreplace(tmp_.c_str(), path_.c_str());
    if (rc != 0) {
      int e = errno;
      if (e == EEXIST)
        throw Error(Code::exists, fmt::format("{} already exists; it was not overwritten", path_));
      throw sys_error(e, fmt::format("cannot publish {}", path_));
    }
    tmp_.clear();
    int dfd = fs_.open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (dfd < 0) throw sys_error(errno, fmt::format("cannot open directory {}", dir_));
    rc = fs_.fsync(dfd);
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
  std::string path_, dir_, tmp_;
  bool replace_;
  int fd_ = -1;
};

}  // namespace

std::unique_ptr<Source> make_fd_source(int fd, bool close_fd, std::string name) {
  if (fd < 0) throw Error(Code::invalid_argument, fmt::format("file descriptor {} is not valid", fd));
  return std::make_unique<FdSource>(posix_fs(), fd, close_fd, std::move(name));
}

std::unique_ptr<Source> make_file_source(const std::string& path, Fs& fs) {
  if (path.empty()) throw Error(Code::invalid_argument, "file path is empty");
  int fd = fs.open(path.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) throw sys_error(errno, fmt::format("cannot open {}", path));
  return std::make_unique<FdSource>(fs, fd, true, path);
}

std::unique_ptr<Sink> make_file_sink(const std::string& path, bool replace, Fs& fs) {
  if (path.empty()) throw Error(Code::invalid_argument, "file path is empty");
  return std::make_unique<FileSink>(fs, path, replace);
}

}  // namespace mevbackup
