// File endpoints of the stream layer, the only ones in the library: a Source reading a
// descriptor or a path, a Sink publishing a file atomically (temporary file, fsync,
// rename, fsync of the directory), a private staging file, and a Sink that discards.
// Errors throw mevbackup::Error naming the path.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "mevbackup/fs.hpp"
#include "mevbackup/stream.hpp"

namespace mevbackup {

// Reads `fd` to its end; closes it when destroyed if `close_fd`. `name` is for messages.
std::unique_ptr<Source> make_fd_source(int fd, bool close_fd, std::string name, Fs& fs = posix_fs());
// Opens `path` now (not_found when missing).
std::unique_ptr<Source> make_file_source(const std::string& path, Fs& fs = posix_fs());
// The file appears under `path` only when commit() succeeds; an existing file fails the
// commit with Code::exists unless `replace`. abort() (or destruction) leaves nothing.
std::unique_ptr<Sink> make_file_sink(const std::string& path, bool replace, Fs& fs = posix_fs());

struct FileSinkOptions {
  bool replace = false;
  // Called once the temporary file is open (mode 0600), e.g. to give it its final owner
  // and mode with fchown / fchmod; `tmp` names it for messages.
  std::function<void(int fd, const std::string& tmp)> on_open;
  // Called after the data is on disk and before the rename that publishes it; throwing
  // aborts the publish and removes the temporary file.
  std::function<void()> before_publish;
  // The name was taken when the rename came (never with `replace`): returns another path
  // in the same directory to publish under instead, or "" to fail with Code::exists.
  // `attempt` counts from 1.
  std::function<std::string(int attempt)> next_path;
};
std::unique_ptr<Sink> make_file_sink(const std::string& path, const FileSinkOptions& o, Fs& fs = posix_fs());
// The same over a temporary file the caller already created (O_EXCL, 0600) as `tmp` in
// the directory of `path`, open as `fd`; the sink owns fd and tmp from now on. on_open
// is not called.
std::unique_ptr<Sink> make_file_sink(const std::string& path, const std::string& tmp, int fd, const FileSinkOptions& o,
                                     Fs& fs = posix_fs());

// A private temporary file in `dir`, or in TMPDIR (else /tmp) when `dir` is empty, for a
// consumer that needs a seekable file (pg_restore --jobs). It has no name: it is unlinked
// as soon as it is made (mkstemp, 0600), so nothing is left behind whatever ends the
// process, and its space is freed when fd() is closed, with the sink. A child reads it
// through its own copy of fd() (the library's children get it as /dev/fd/3). commit()
// ends the writing; the file stays readable until the sink is destroyed.
class StagingFile : public Sink {
 public:
  virtual int fd() const = 0;
  virtual const std::string& dir() const = 0;  // where its blocks are, for messages
};
std::unique_ptr<StagingFile> make_staging_file(const std::string& dir);

// Discards every byte: lets a pipeline's observers and checks run over a stream that is
// not kept (hashing a file, checking a copy already in place).
std::unique_ptr<Sink> make_null_sink();

}  // namespace mevbackup
