#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>

#include "../helpers.hpp"
#include "mevbackup/file_stream.hpp"

using namespace mevbackup;
using testutil::files_under;
using testutil::slurp;
using testutil::TempDir;

namespace {

Bytes as_bytes(const std::string& s) { return Bytes(reinterpret_cast<const std::byte*>(s.data()), s.size()); }

class FaultyFs final : public Fs {
 public:
  enum class Fail { none, write, fsync, rename };
  Fail fail = Fail::none;
  ssize_t write(int fd, const void* b, size_t n) override {
    if (fail == Fail::write) return errno = ENOSPC, -1;
    return Fs::write(fd, b, n);
  }
  int fsync(int fd) override {
    if (fail == Fail::fsync) return errno = EIO, -1;
    return Fs::fsync(fd);
  }
  int rename_noreplace(const char* a, const char* b) override {
    if (fail == Fail::rename) return errno = EIO, -1;
    return Fs::rename_noreplace(a, b);
  }
};

}  // namespace

TEST_CASE("a file sink publishes only on commit, with mode 0600, and never replaces unless asked") {
  TempDir dir;
  std::string path = dir / "out.bin";
  auto sink = make_file_sink(path, false);
  sink->write(as_bytes("hello "));
  sink->write(as_bytes("world"));
  CHECK(::access(path.c_str(), F_OK) != 0);
  sink->commit();
  CHECK(slurp(path) == "hello world");
  CHECK(testutil::mode_of(path) == 0600);
  CHECK(files_under(dir.path()).size() == 1);

  auto again = make_file_sink(path, false);
  again->write(as_bytes("other"));
  try {
    again->commit();
    FAIL("the commit replaced an existing file");
  } catch (const Error& e) {
    CHECK(e.code() == Code::exists);
  }
  again->abort();
  CHECK(slurp(path) == "hello world");
  CHECK(files_under(dir.path()).size() == 1);

  auto replace = make_file_sink(path, true);
  replace->write(as_bytes("new"));
  replace->commit();
  CHECK(slurp(path) == "new");
}

TEST_CASE("a file sink that fails to write, fsync or rename, or is dropped, leaves nothing") {
  for (auto fail : {FaultyFs::Fail::write, FaultyFs::Fail::fsync, FaultyFs::Fail::rename}) {
    TempDir dir;
    FaultyFs fs;
    std::string path = dir / "out.bin";
    {
      auto sink = make_file_sink(path, false, fs);
      fs.fail = fail;
      try {
        sink->write(as_bytes("data"));
        sink->commit();
        FAIL("no error");
      } catch (const Error& e) {
        CHECK(std::string(e.what()).find("out.bin") != std::string::npos);
      }
      sink->abort();
    }
    CHECK(files_under(dir.path()).empty());
  }
  TempDir dir;
  { auto dropped = make_file_sink(dir / "x", false); dropped->write(as_bytes("x")); }
  CHECK(files_under(dir.path()).empty());
}

TEST_CASE("file sources read a path or a descriptor to its end") {
  TempDir dir;
  std::string path = dir / "in.bin";
  std::ofstream(path, std::ios::binary) << std::string(100000, 'q');
  auto src = make_file_source(path);
  std::vector<std::byte> buf(4096);
  size_t total = 0;
  for (size_t n; (n = src->read(MutBytes(buf.data(), buf.size()))) > 0;) total += n;
  CHECK(total == 100000);
  CHECK_THROWS_AS(make_file_source(dir / "missing"), Error);
  CHECK_THROWS_AS(make_fd_source(-1, false, "nothing"), Error);
  int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  {
    auto by_fd = make_fd_source(fd, true, "in.bin");
    CHECK(by_fd->read(MutBytes(buf.data(), 10)) == 10);
  }
  CHECK(::close(fd) != 0);  // closed by the source
}

TEST_CASE("a file sink's hooks: on_open sees the temporary file, a throwing before_publish publishes nothing") {
  TempDir dir;
  std::string path = dir / "dump.rdb";
  {
    std::ofstream(path) << "old";
  }
  std::string seen_tmp;
  FileSinkOptions o;
  o.replace = true;
  o.on_open = [&](int fd, const std::string& tmp) {
    seen_tmp = tmp;
    CHECK(::fchmod(fd, 0640) == 0);
  };
  o.before_publish = [] { throw Error(Code::restore_failed, "the before hook failed"); };
  auto sink = make_file_sink(path, o);
  CHECK(seen_tmp.find(dir.path()) == 0);
  CHECK(::access(seen_tmp.c_str(), F_OK) == 0);
  sink->write(as_bytes("new"));
  CHECK_THROWS_WITH_AS(sink->commit(), "the before hook failed", Error);
  CHECK(slurp(path) == "old");  // the old file is untouched
  CHECK(files_under(dir.path()).size() == 1);

  bool called = false;
  o.before_publish = [&] {
    called = true;
    CHECK(slurp(path) == "old");  // the data is on disk, not yet in place
  };
  auto ok = make_file_sink(path, o);
  ok->write(as_bytes("new"));
  ok->commit();
  CHECK(called);
  CHECK(slurp(path) == "new");
  CHECK(testutil::mode_of(path) == 0640);
  CHECK(files_under(dir.path()).size() == 1);

  // A throwing on_open leaves no temporary file behind.
  FileSinkOptions bad;
  bad.on_open = [](int, const std::string&) { throw Error(Code::permission, "cannot give it away"); };
  CHECK_THROWS_AS(make_file_sink(dir / "other", bad), Error);
  CHECK(files_under(dir.path()).size() == 1);
}

TEST_CASE("a staging file has no name, is readable through its fd until its sink is gone; the null sink keeps nothing") {
  TempDir dir;
  {
    auto f = make_staging_file(dir.path());
    CHECK(f->dir() == dir.path());
    CHECK(files_under(dir.path()).empty());  // unlinked at once: nothing to leave behind
    CHECK((::fcntl(f->fd(), F_GETFD) & FD_CLOEXEC) != 0);
    struct stat st {};
    REQUIRE(::fstat(f->fd(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(st.st_nlink == 0);
    f->write(as_bytes("dump bytes"));
    f->commit();
    // What a child given the fd reads: the whole file, from its start.
    CHECK(slurp("/proc/self/fd/" + std::to_string(f->fd())) == "dump bytes");
    CHECK_THROWS_AS(f->write(as_bytes("late")), Error);
  }
  {
    auto f = make_staging_file(dir.path());
    f->write(as_bytes("partial"));
  }
  CHECK(files_under(dir.path()).empty());
  CHECK_THROWS_AS(make_staging_file(dir / "missing"), Error);

  auto null = make_null_sink();
  null->write(as_bytes("anything"));
  null->commit();
  CHECK(files_under(dir.path()).empty());
}
