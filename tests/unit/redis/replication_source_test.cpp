#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "../helpers.hpp"
#include "redis/replication_source.hpp"

using namespace mevbackup;
using mevbackup::redis::ReplicationSource;

namespace {

// Plays the master: expects SYNC, then sends `pieces` one write at a time and closes.
struct FakeMaster {
  int fds[2] = {-1, -1};
  std::thread th;
  std::string got;

  explicit FakeMaster(std::vector<std::string> pieces) {
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    th = std::thread([this, pieces = std::move(pieces)] {
      char buf[6];
      size_t have = 0;
      while (have < 6) {
        ssize_t n = ::read(fds[1], buf + have, 6 - have);
        if (n <= 0) break;
        have += static_cast<size_t>(n);
      }
      got.assign(buf, have);
      for (auto& p : pieces)
        if (::send(fds[1], p.data(), p.size(), MSG_NOSIGNAL) < 0) break;
      ::shutdown(fds[1], SHUT_WR);
    });
  }
  ~FakeMaster() {
    ::shutdown(fds[0], SHUT_RDWR);
    th.join();
    ::close(fds[0]);
    ::close(fds[1]);
  }
};

std::string drain(ReplicationSource& s, size_t step) {
  std::string out;
  std::vector<std::byte> buf(step);
  for (size_t n; (n = s.read(MutBytes(buf.data(), buf.size()))) > 0;) out.append(reinterpret_cast<char*>(buf.data()), n);
  return out;
}

const std::string kMark = "0123456789abcdef0123456789abcdef01234567";

}  // namespace

TEST_CASE("length framing: exactly the announced bytes, keepalives skipped") {
  std::string payload = testutil::to_string(testutil::random_bytes(100000, 7, false));
  for (size_t step : {size_t(1), size_t(4096), size_t(1 << 20)}) {
    FakeMaster m({"\n", "\n", "$" + std::to_string(payload.size()) + "\r\n", payload.substr(0, 333), payload.substr(333),
                  "*1\r\n$4\r\nPING\r\n"});
    ReplicationSource s(m.fds[0], "redis://test", 10, 10, nullptr);
    s.start();
    CHECK_FALSE(s.diskless());
    CHECK(drain(s, step) == payload);
    CHECK(m.got == "SYNC\r\n");
  }
}

TEST_CASE("EOF framing: the mark ends the payload even when split across reads") {
  // The payload itself holds most of the mark, to make sure only the real end counts.
  std::string payload = "REDIS0010" + kMark.substr(0, 39) + std::string(5000, 'x') + kMark.substr(1);
  std::string wire = payload + kMark;
  std::vector<std::string> pieces = {"$EOF:" + kMark + "\r\n"};
  for (size_t i = 0; i < wire.size(); i += 37) pieces.push_back(wire.substr(i, 37));
  FakeMaster m(pieces);
  ReplicationSource s(m.fds[0], "redis://test", 10, 10, nullptr);
  s.start();
  CHECK(s.diskless());
  CHECK(drain(s, 100) == payload);
}

TEST_CASE("a stream cut before its end is an error, in both framings") {
  for (std::string head : {std::string("$5000\r\n"), "$EOF:" + kMark + "\r\n"}) {
    FakeMaster m({head, std::string(2000, 'r')});
    ReplicationSource s(m.fds[0], "redis://test", 10, 10, nullptr);
    s.start();
    try {
      drain(s, 4096);
      FAIL("a cut stream ended normally");
    } catch (const Error& e) {
      CHECK(e.code() == Code::dump_failed);
      CHECK(std::string(e.what()).find("was cut after 2000 bytes") != std::string::npos);
    }
  }
}

TEST_CASE("refusals and nonsense") {
  {
    FakeMaster m({"-NOPERM this user has no permissions to run the 'sync' command\r\n"});
    ReplicationSource s(m.fds[0], "redis://test", 10, 10, nullptr);
    try {
      s.start();
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK(e.code() == Code::permission);
    }
  }
  for (const std::string& bad : std::vector<std::string>{"$-1\r\n", "$EOF:short\r\n", "+FULLRESYNC x 0\r\n", "$12x\r\n", std::string(600, 'a')}) {
    FakeMaster m({bad});
    ReplicationSource s(m.fds[0], "redis://test", 10, 10, nullptr);
    CHECK_THROWS_AS(s.start(), Error);
  }
  {
    FakeMaster m({});  // closes at once
    ReplicationSource s(m.fds[0], "redis://test", 10, 10, nullptr);
    CHECK_THROWS_AS(s.start(), Error);
  }
}

TEST_CASE("cancellation stops a wait for the payload") {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  CancelToken cancel;
  ReplicationSource s(fds[0], "redis://test", 60, 60, &cancel);
  std::thread t([&] {
    char b[6];
    (void)::read(fds[1], b, sizeof b);
    cancel.cancel();
  });
  try {
    s.start();
    FAIL("not cancelled");
  } catch (const Error& e) {
    CHECK(e.code() == Code::cancelled);
  }
  t.join();
  ::close(fds[0]);
  ::close(fds[1]);
}
