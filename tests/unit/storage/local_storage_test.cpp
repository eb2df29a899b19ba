#include <doctest/doctest.h>

#include <cerrno>

#include "../helpers.hpp"

using namespace mevbackup;
using testutil::files_under;
using testutil::TempDir;

namespace {

Bytes as_bytes(const std::string& s) { return Bytes(reinterpret_cast<const std::byte*>(s.data()), s.size()); }

// Wraps the real filesystem and fails one kind of call on demand.
class FaultyFs final : public Fs {
 public:
  enum class Fail { none, write, fsync, rename, close };
  Fail fail = Fail::none;
  int err = ENOSPC;
  size_t writes_before_failure = 0;

  ssize_t write(int fd, const void* b, size_t n) override {
    if (fail == Fail::write && writes_before_failure-- == 0) return errno = err, -1;
    return Fs::write(fd, b, n);
  }
  int fsync(int fd) override {
    if (fail == Fail::fsync) return errno = err, -1;
    return Fs::fsync(fd);
  }
  int close(int fd) override {
    if (fail == Fail::close) {
      Fs::close(fd);
      return errno = err, -1;
    }
    return Fs::close(fd);
  }
  int rename_noreplace(const char* a, const char* b) override {
    if (fail == Fail::rename) return errno = err, -1;
    return Fs::rename_noreplace(a, b);
  }
};

}  // namespace

TEST_CASE("put is invisible until commit, then the object reads back; modes 0600 / 0700") {
  TempDir dir;
  std::string root = dir / "repo";
  auto st = make_local_storage(root);
  auto sink = st->put("database/a.dump.gz");
  sink->write(as_bytes("hello "));
  sink->write(as_bytes("world"));
  CHECK_FALSE(st->stat("database/a.dump.gz").has_value());
  CHECK(st->list("").empty());  // the temp file is never listed
  sink->commit();
  CHECK(st->stat("database/a.dump.gz")->size == 11);
  CHECK(st->read_small("database/a.dump.gz") == "hello world");
  CHECK(testutil::mode_of(root + "/database/a.dump.gz") == 0600);
  CHECK(testutil::mode_of(root + "/database") == 0700);
  CHECK(testutil::mode_of(root) == 0700);
  CHECK(files_under(root) == std::vector<std::string>{"database/a.dump.gz"});
}

TEST_CASE("abort, and destruction without commit, leave nothing behind") {
  TempDir dir;
  auto st = make_local_storage(dir.path());
  {
    auto sink = st->put("x/one");
    sink->write(as_bytes("partial"));
    sink->abort();
  }
  {
    auto sink = st->put("x/two");
    sink->write(as_bytes("partial"));
  }
  CHECK(files_under(dir.path()).empty());
}

TEST_CASE("an existing object is never overwritten") {
  TempDir dir;
  auto st = make_local_storage(dir.path());
  st->write_small("k", "first");
  try {
    st->write_small("k", "second");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Code::exists);
    CHECK(std::string(e.what()).find("not overwritten") != std::string::npos);
  }
  CHECK(st->read_small("k") == "first");
  CHECK(files_under(dir.path()) == std::vector<std::string>{"k"});
}

TEST_CASE("injected write, fsync, close and rename failures publish nothing and name the cause") {
  using F = FaultyFs::Fail;
  for (auto [fail, err, code] : {std::tuple{F::write, ENOSPC, Code::no_space}, std::tuple{F::fsync, EIO, Code::io},
                                 std::tuple{F::close, EIO, Code::io}, std::tuple{F::rename, EACCES, Code::permission}}) {
    CAPTURE(static_cast<int>(fail));
    TempDir dir;
    FaultyFs fs;
    auto st = make_local_storage(dir.path(), fs);
    st->write_small("keep/old", "earlier backup");
    fs.fail = fail;
    fs.err = err;
    fs.writes_before_failure = 1;
    auto sink = st->put("keep/new");
    try {
      sink->write(as_bytes("aaaa"));
      sink->write(as_bytes("bbbb"));
      sink->commit();
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.code() == code);
      CHECK(std::string(e.what()).find("keep") != std::string::npos);
      sink->abort();
    }
    CHECK(files_under(dir.path()) == std::vector<std::string>{"keep/old"});
    CHECK(st->read_small("keep/old") == "earlier backup");
  }
}

TEST_CASE("list walks only under the prefix and returns sorted keys") {
  TempDir dir;
  auto st = make_local_storage(dir.path());
  for (auto k : {"database/b", "database/a", "redis/r", "config/c", "databases/x"}) st->write_small(k, k);
  std::vector<std::string> keys;
  for (auto& o : st->list("database/")) keys.push_back(o.key);
  CHECK(keys == std::vector<std::string>{"database/a", "database/b"});
  CHECK(st->list("").size() == 5);
  CHECK(st->list("data").size() == 3);
  CHECK(st->list("nothing/").empty());
  st->remove("database/a");
  st->remove("database/a");  // removing a missing key is fine
  CHECK(st->list("database/").size() == 1);
}

TEST_CASE("keys that could escape the repository are refused") {
  TempDir dir;
  auto st = make_local_storage(dir.path());
  for (auto k : {"", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a/"}) {
    CAPTURE(k);
    CHECK_THROWS_AS(st->put(k), Error);
    CHECK_THROWS_AS(st->get(k), Error);
  }
}

TEST_CASE("a repository path under a regular file is an error naming the path") {
  TempDir dir;
  auto st0 = make_local_storage(dir.path());
  st0->write_small("file", "x");
  auto st = make_local_storage(dir / "file/repo");
  try {
    st->write_small("database/a", "x");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find(dir / "file") != std::string::npos);
  }
}

TEST_CASE("open_storage takes paths and file:// URLs and names unsupported schemes") {
  TempDir dir;
  CHECK(open_storage(dir.path())->describe() == dir.path());
  CHECK(open_storage("file://" + dir.path())->describe() == dir.path());
  CHECK_THROWS_WITH_AS(open_storage("ftp://host/x"),
                       "repository \"ftp://host/x\": scheme \"ftp\" is not supported (use a local path)", Error);
  CHECK_THROWS_AS(open_storage(""), Error);
}

TEST_CASE("links planted inside a local repository are never followed: not listed, read, written or deleted through") {
  TempDir dir;
  std::string outside = dir / "outside", root = dir / "repo";
  auto out = make_local_storage(outside);
  out->write_small("a", "not the repository's");
  out->write_small("sub/b", "not the repository's either");
  auto st = make_local_storage(root);
  st->write_small("database/x", "x");
  REQUIRE(symlink(outside.c_str(), (root + "/attic").c_str()) == 0);
  REQUIRE(symlink((outside + "/a").c_str(), (root + "/database/evil.dump.gz").c_str()) == 0);
  REQUIRE(symlink(outside.c_str(), (root + "/database/linked").c_str()) == 0);

  std::vector<std::string> keys;
  for (auto& o : st->list("")) keys.push_back(o.key);
  CHECK(keys == std::vector<std::string>{"database/x"});
  CHECK_THROWS_WITH_AS(st->list("attic/"),
                       (root + "/attic is a symbolic link; the repository never follows links inside it").c_str(), Error);
  CHECK_THROWS_AS(st->list("database/linked/"), Error);
  CHECK(st->list_unfinished("").empty());
  CHECK_FALSE(st->stat("database/evil.dump.gz").has_value());
  for (auto key : {"attic/a", "database/evil.dump.gz", "database/linked/a"}) {
    CAPTURE(key);
    try {
      st->get(key);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.code() == Code::permission);
      CHECK(std::string(e.what()).find("is a symbolic link") != std::string::npos);
    }
  }
  CHECK_THROWS_AS(st->remove("attic/a"), Error);
  CHECK_THROWS_AS(st->remove("database/linked/sub/b"), Error);
  CHECK_THROWS_AS(st->write_small("attic/new", "x"), Error);
  CHECK(st->remove_many({"attic/a", "attic/sub/b"}).size() == 2);
  st->remove("database/evil.dump.gz");  // the link itself goes, never its target
  CHECK(files_under(outside) == std::vector<std::string>{"a", "sub/b"});
  CHECK(out->read_small("a") == "not the repository's");
  CHECK(std::filesystem::is_symlink(root + "/attic"));
  CHECK_FALSE(std::filesystem::exists(std::filesystem::symlink_status(root + "/database/evil.dump.gz")));
}

TEST_CASE("a repository root that is itself a link is followed: it is the administrator's to name") {
  TempDir dir;
  auto real = make_local_storage(dir / "disk");
  real->write_small("database/x", "x");
  REQUIRE(symlink((dir / "disk").c_str(), (dir / "backups").c_str()) == 0);
  auto st = make_local_storage(dir / "backups");
  CHECK(st->list("").size() == 1);
  CHECK(st->read_small("database/x") == "x");
  st->write_small("database/y", "y");
  CHECK(real->read_small("database/y") == "y");
}
