#include "mevbackup/file_stream.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
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

std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

// Writes every byte of a span to fd, naming `what` on failure.
void write_all(Fs& fs, int fd, Bytes data, const std::string& what) {
  const std::byte* p = data.data();
  size_t left = data.size();
  while (left) {
    ssize_t n = fs.write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw sys_error(errno, fmt::format("cannot write {}", what));
    if (n == 0) throw sys_error(ENOSPC, fmt::format("cannot write {}", what));
    p += n;
    left -= static_cast<size_t>(n);
  }
}

class FileSink final : public Sink {
 public:
  // Adopts a temporary file already open.
  FileSink(Fs& fs, std::string path, std::string tmp, int fd, FileSinkOptions o)
      : fs_(fs), path_(std::move(path)), dir_(dir_of(path_)), tmp_(std::move(tmp)), o_(std::move(o)), fd_(fd) {}

  FileSink(Fs& fs, std::string path, FileSinkOptions o) : fs_(fs), path_(std::move(path)), o_(std::move(o)) {
    auto slash = path_.rfind('/');
    dir_ = dir_of(path_);
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
    if (o_.on_open) {
      try {
        o_.on_open(fd_, tmp_);
      } catch (...) {
        abort();
        throw;
      }
    }
  }
  ~FileSink() override { abort(); }

  void write(Bytes data) override {
    if (fd_ < 0) throw Error(Code::internal, fmt::format("write to {} after it was closed", path_));
    write_all(fs_, fd_, data, tmp_);
  }

  void commit() override {
    if (fd_ < 0) throw Error(Code::internal, fmt::format("commit of {} after it was closed", path_));
    try {
      publish();
    } catch (...) {
      abort();  // a commit that fails leaves nothing, as abort() does
      throw;
    }
    int dfd = fs_.open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
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
  // The data on disk, the hook, then the rename; tmp_ is cleared once the file is in place.
  void publish() {
    if (fs_.fsync(fd_) != 0) throw sys_error(errno, fmt::format("cannot fsync {}", tmp_));
    int fd = fd_;
    fd_ = -1;
    if (fs_.close(fd) != 0) throw sys_error(errno, fmt::format("cannot close {}", tmp_));
    if (o_.before_publish) o_.before_publish();
    if (o_.replace) {
      if (::rename(tmp_.c_str(), path_.c_str()) != 0) throw sys_error(errno, fmt::format("cannot publish {}", path_));
    } else {
      for (int attempt = 1; fs_.rename_noreplace(tmp_.c_str(), path_.c_str()) != 0; ++attempt) {
        int e = errno;
        if (e == EEXIST && o_.next_path) {
          std::string next = o_.next_path(attempt);  // the name was taken meanwhile: the next one
          if (!next.empty() && dir_of(next) == dir_) {
            path_ = std::move(next);
            continue;
          }
        }
        if (e == EEXIST) throw Error(Code::exists, fmt::format("{} already exists; it was not overwritten", path_));
        throw sys_error(e, fmt::format("cannot publish {}", path_));
      }
    }
    tmp_.clear();
  }

  Fs& fs_;
  std::string path_, dir_, tmp_;
  FileSinkOptions o_;
  int fd_ = -1;
};

class StagingFileImpl final : public StagingFile {
 public:
  explicit StagingFileImpl(const std::string& dir) {
    // No directory given: TMPDIR, as mkstemp's callers do (a documented provider: mevbackup.h).
    const char* tmpdir = std::getenv("TMPDIR");
    dir_ = dir.empty() ? std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") : dir;
    std::string path = dir_ + "/mevbackup-staging-XXXXXX";
    fd_ = ::mkostemp(path.data(), O_CLOEXEC);  // 0600, O_EXCL
    if (fd_ < 0) throw sys_error(errno, fmt::format("cannot create a staging file in {}", dir_));
    if (::unlink(path.c_str()) != 0) {
      int e = errno;
      ::close(fd_);
      throw sys_error(e, fmt::format("cannot unlink the staging file {}", path));
    }
  }
  ~StagingFileImpl() override { ::close(fd_); }
  void write(Bytes data) override {
    if (done_) throw Error(Code::internal, fmt::format("write to a staging file in {} after it was committed", dir_));
    write_all(posix_fs(), fd_, data, "staging file in " + dir_);
  }
  void commit() override { done_ = true; }
  void abort() noexcept override { done_ = true; }
  int fd() const override { return fd_; }
  const std::string& dir() const override { return dir_; }

 private:
  std::string dir_;
  int fd_ = -1;
  bool done_ = false;
};

class NullSink final : public Sink {
 public:
  void write(Bytes) override {}
  void commit() override {}
  void abort() noexcept override {}
};

}  // namespace

std::unique_ptr<Source> make_fd_source(int fd, bool close_fd, std::string name, Fs& fs) {
  if (fd < 0) throw Error(Code::invalid_argument, fmt::format("file descriptor {} is not valid", fd));
  return std::make_unique<FdSource>(fs, fd, close_fd, std::move(name));
}

std::unique_ptr<Source> make_file_source(const std::string& path, Fs& fs) {
  if (path.empty()) throw Error(Code::invalid_argument, "file path is empty");
  int fd = fs.open(path.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) throw sys_error(errno, fmt::format("cannot open {}", path));
  return std::make_unique<FdSource>(fs, fd, true, path);
}

std::unique_ptr<Sink> make_file_sink(const std::string& path, bool replace, Fs& fs) {
  FileSinkOptions o;
  o.replace = replace;
  return make_file_sink(path, o, fs);
}

std::unique_ptr<Sink> make_file_sink(const std::string& path, const FileSinkOptions& o, Fs& fs) {
  if (path.empty()) throw Error(Code::invalid_argument, "file path is empty");
  return std::make_unique<FileSink>(fs, path, o);
}

std::unique_ptr<Sink> make_file_sink(const std::string& path, const std::string& tmp, int fd, const FileSinkOptions& o,
                                     Fs& fs) {
  if (path.empty() || tmp.empty() || fd < 0) throw Error(Code::invalid_argument, "make_file_sink: no file to adopt");
  return std::make_unique<FileSink>(fs, path, tmp, fd, o);
}

std::unique_ptr<StagingFile> make_staging_file(const std::string& dir) { return std::make_unique<StagingFileImpl>(dir); }

std::unique_ptr<Sink> make_null_sink() { return std::make_unique<NullSink>(); }

}  // namespace mevbackup
