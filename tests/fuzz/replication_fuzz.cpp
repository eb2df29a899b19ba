// libFuzzer target for the framing of a Redis replica sync (src/redis/replication_source.hpp):
// the input is what the server answers to SYNC ("$<length>\r\n" + payload, or
// "$EOF:<mark>\r\n" + payload + mark, keepalive newlines before, or an error line),
// sent over a socketpair and closed. Any input must end in the payload or an Error
// (dump_failed, permission for NOPERM); a payload in the length framing is exactly
// the announced length, a diskless one never holds the mark at its end.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "mevbackup/error.hpp"
#include "redis/replication_source.hpp"

using namespace mevbackup;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  // The "server": takes the SYNC line, sends the input, closes its side.
  std::thread server([&] {
    char sync[6];
    size_t got = 0;
    while (got < sizeof sync) {
      ssize_t r = ::recv(sv[1], sync + got, sizeof sync - got, 0);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    for (size_t off = 0; off < size;) {
      ssize_t w = ::send(sv[1], data + off, size - off, MSG_NOSIGNAL);
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
    ::shutdown(sv[1], SHUT_WR);
  });
  std::string payload;
  bool diskless = false;
  uint64_t announced = 0;
  bool ok = false;
  try {
    redis::ReplicationSource src(sv[0], "fuzz", 5, 5, nullptr);
    src.start();
    diskless = src.diskless();
    announced = src.announced();
    std::vector<std::byte> buf(997);  // odd reads: the mark straddles them
    while (size_t n = src.read(MutBytes(buf.data(), buf.size()))) payload.append(reinterpret_cast<char*>(buf.data()), n);
    ok = true;
  } catch (const Error& e) {
    if (e.code() != Code::dump_failed && e.code() != Code::permission) std::abort();
  }
  ::shutdown(sv[0], SHUT_RDWR);
  server.join();
  ::close(sv[0]);
  ::close(sv[1]);
  if (ok && !diskless && payload.size() != announced) std::abort();
  if (ok && payload.size() > size) std::abort();
  return 0;
}
