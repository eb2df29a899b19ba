#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "../helpers.hpp"
#include "mevbackup/error.hpp"
#include "mevbackup/pitr.hpp"

using namespace mevbackup;
using namespace mevbackup::pitr;
using testutil::TempDir;

namespace {

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  f << data;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("WAL file names: segments, history, backup labels, partial; timeline from the name") {
  auto s = parse_wal_file_name("00000002000000010000003A");
  CHECK(s.kind == WalFileKind::segment);
  CHECK(s.timeline == "00000002");
  CHECK(wal_payload_key(s) == "wal/00000002/00000002000000010000003A.gz");
  CHECK(wal_checksum_key(s) == "wal/00000002/00000002000000010000003A.sha256");
  CHECK(parse_wal_file_name("00000003.history").kind == WalFileKind::history);
  CHECK(parse_wal_file_name("00000003.history").timeline == "00000003");
  CHECK(parse_wal_file_name("000000010000000000000002.00000028.backup").kind == WalFileKind::backup_label);
  CHECK(parse_wal_file_name("000000010000000000000002.partial").kind == WalFileKind::partial);
  for (const char* bad : {"", "RECOVERYXLOG", "00000001000000000000000", "0000000100000000000000021",
                          "00000001000000000000000g", "../00000001.history", "00000001.histor",
                          "000000010000000000000002.backup"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(parse_wal_file_name(bad), Error);
  }
}

TEST_CASE("wal_push stores compressed and checksummed, idempotently; wal_fetch restores it") {
  TempDir repo_dir, pg;
  auto storage = make_local_storage(repo_dir.path());
  std::string seg = pg / "000000010000000000000005";
  std::string content(1 << 20, '\0');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>((i * 7) % 13);
  write_file(seg, content);

  CHECK(wal_push(*storage, seg) == PushResult::stored);
  auto info = storage->stat("wal/00000001/000000010000000000000005.gz");
  REQUIRE(info);
  CHECK(info->size < content.size());  // compressed
  CHECK(storage->stat("wal/00000001/000000010000000000000005.sha256"));
  // The same content again: success, nothing changes.
  CHECK(wal_push(*storage, seg) == PushResult::already_archived);

  // Different content under the same name: refused, naming the file.
  write_file(seg, content + "x");
  try {
    wal_push(*storage, seg);
    FAIL("a different segment replaced the archived one");
  } catch (const Error& e) {
    CHECK(e.code() == Code::exists);
    CHECK(std::string(e.what()).find("000000010000000000000005") != std::string::npos);
    CHECK(std::string(e.what()).find("different content") != std::string::npos);
  }

  std::string dest = pg / "RECOVERYXLOG";
  write_file(dest, "stale");  // PostgreSQL lets restore_command replace %p
  CHECK(wal_fetch(*storage, "000000010000000000000005", dest));
  CHECK(read_file(dest) == content);
  CHECK_FALSE(wal_fetch(*storage, "000000010000000000000006", pg / "other"));
  CHECK_FALSE(std::filesystem::exists(pg / "other"));
}

TEST_CASE("wal_fetch refuses an archived segment that does not match its checksum") {
  TempDir repo_dir, pg;
  auto storage = make_local_storage(repo_dir.path());
  std::string seg = pg / "000000010000000000000007";
  write_file(seg, "segment bytes");
  wal_push(*storage, seg);
  storage->remove("wal/00000001/000000010000000000000007.sha256");
  storage->write_small("wal/00000001/000000010000000000000007.sha256", std::string(64, '0') + "\n");
  try {
    wal_fetch(*storage, "000000010000000000000007", pg / "RECOVERYXLOG");
    FAIL("a corrupt segment was restored");
  } catch (const Error& e) {
    CHECK(e.code() == Code::corrupt);
  }
  CHECK_FALSE(std::filesystem::exists(pg / "RECOVERYXLOG"));
}

TEST_CASE("concurrent pushes of the same segment all succeed, storing it once") {
  TempDir repo_dir, pg;
  auto storage = make_local_storage(repo_dir.path());
  std::string seg = pg / "000000010000000000000009";
  write_file(seg, std::string(256 * 1024, 'w'));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      try {
        wal_push(*storage, seg);
      } catch (...) {
        ++failures;
      }
    });
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  CHECK(storage->list("wal/").size() == 2);
}

TEST_CASE("the catalog does not count archived WAL as incomplete backups (prune must not delete it)") {
  TempDir repo_dir, pg;
  Repository repo(make_local_storage(repo_dir.path()));
  std::string seg = pg / "00000001000000000000000A";
  write_file(seg, "wal");
  wal_push(repo.storage(), seg);
  auto cat = repo.catalog();
  CHECK(cat.incomplete.empty());
  CHECK(cat.backups.empty());
}

namespace {

// A WAL segment whose long page header declares `declared` bytes per segment, `size` long.
std::string fake_segment(uint32_t declared, size_t size) {
  std::string s(size, '\0');
  uint16_t info = 0x0002;  // XLP_LONG_HEADER
  uint32_t block = 8192;
  std::memcpy(s.data() + 2, &info, 2);
  std::memcpy(s.data() + 32, &declared, 4);
  std::memcpy(s.data() + 36, &block, 4);
  return s;
}

}  // namespace

TEST_CASE("wal_fetch stops writing into pg_wal as soon as the file passes a WAL segment's size") {
  TempDir repo_dir, pg;
  auto storage = make_local_storage(repo_dir.path());
  // Archived with matching checksums (the archive's word), but larger than any segment
  // of its server: 17 MiB without a header (bound: 16 MiB), 3 MiB with a header
  // declaring 1 MiB segments (bound: 1 MiB).
  struct Case {
    const char* name;
    std::string content;
    uint64_t bound;
  } cases[] = {{"000000010000000000000011", std::string(17 << 20, 'w'), 16 << 20},
               {"000000010000000000000012", fake_segment(1 << 20, 3 << 20), 1 << 20}};
  std::vector<std::string> written;
  for (auto& c : cases) {
    CAPTURE(c.name);
    write_file(pg / c.name, c.content);
    written.push_back(c.name);
    wal_push(*storage, pg / c.name);
    try {
      wal_fetch(*storage, c.name, pg / "RECOVERYXLOG");
      FAIL("an oversized WAL file was restored");
    } catch (const Error& e) {
      CHECK(e.code() == Code::corrupt);
      CHECK(std::string(e.what()).find(fmt::format("archived WAL file {} is larger than the {} bytes", c.name, c.bound)) ==
            0);
    }
    CHECK(testutil::files_under(pg.path()) == written);  // no RECOVERYXLOG, no temporary file
  }
  // A segment of the size its header declares restores.
  write_file(pg / "000000010000000000000013", fake_segment(1 << 20, 1 << 20));
  wal_push(*storage, pg / "000000010000000000000013");
  CHECK(wal_fetch(*storage, "000000010000000000000013", pg / "RECOVERYXLOG"));
  CHECK(read_file(pg / "RECOVERYXLOG") == fake_segment(1 << 20, 1 << 20));
}
