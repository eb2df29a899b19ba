#include "mevbackup/fs.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace mevbackup {

int Fs::open(const char* path, int flags, mode_t mode) { return ::open(path, flags | O_CLOEXEC, mode); }
ssize_t Fs::write(int fd, const void* buf, size_t n) { return ::write(fd, buf, n); }
ssize_t Fs::read(int fd, void* buf, size_t n) { return ::read(fd, buf, n); }
int Fs::fsync(int fd) { return ::fsync(fd); }
int Fs::close(int fd) { return ::close(fd); }
int Fs::unlink(const char* path) { return ::unlink(path); }
int Fs::mkdir(const char* path, mode_t mode) { return ::mkdir(path, mode); }

int Fs::rename_noreplace(const char* from, const char* to) {
  int rc = ::renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);
  if (rc == 0 || (errno != EINVAL && errno != ENOSYS)) return rc;
  // Filesystems without RENAME_NOREPLACE: link() also refuses an existing target.
  if (::link(from, to) != 0) return -1;
  ::unlink(from);
  return 0;
}

Fs& posix_fs() {
  static Fs fs;
  return fs;
}

}  // namespace mevbackup
