// File endpoints of the stream layer: a Source reading a descriptor or a path, and a
// Sink publishing a file atomically (temporary file, fsync, rename, fsync of the
// directory). Errors throw mevbackup::Error naming the path.
#pragma once

#include <memory>
#include <string>

#include "mevbackup/fs.hpp"
#include "mevbackup/stream.hpp"

namespace mevbackup {

// Reads `fd` to its end; closes it when destroyed if `close_fd`. `name` is for messages.
std::unique_ptr<Source> make_fd_source(int fd, bool close_fd, std::string name);
// Opens `path` now (not_found when missing).
std::unique_ptr<Source> make_file_source(const std::string& path, Fs& fs = posix_fs());
// The file appears under `path` only when commit() succeeds; an existing file fails the
// commit with Code::exists unless `replace`. abort() (or destruction) leaves nothing.
std::unique_ptr<Sink> make_file_sink(const std::string& path, bool replace, Fs& fs = posix_fs());

}  // namespace mevbackup
