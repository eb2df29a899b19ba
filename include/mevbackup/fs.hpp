// The filesystem seam: local storage reaches the disk only through this, so tests
// can wrap the real one and inject ENOSPC, EIO or a failing rename (EnvWrapper-style).
// Every method follows POSIX conventions: -1 and errno on failure.
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace mevbackup {

class Fs {
 public:
  virtual ~Fs() = default;
  virtual int open(const char* path, int flags, mode_t mode);
  virtual ssize_t write(int fd, const void* buf, size_t n);
  virtual ssize_t read(int fd, void* buf, size_t n);
  virtual int fsync(int fd);
  virtual int close(int fd);
  // Renames without ever replacing an existing `to` (EEXIST instead).
  virtual int rename_noreplace(const char* from, const char* to);
  virtual int unlink(const char* path);
  virtual int mkdir(const char* path, mode_t mode);
};

// The process-wide real filesystem (stateless).
Fs& posix_fs();

}  // namespace mevbackup
