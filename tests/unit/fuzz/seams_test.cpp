// The functions the fuzz targets call (tests/fuzz), on their committed seeds: the S3
// answer parsers and the files restorer's member checks behave as the code that uses
// them expects, so that fuzzing them fuzzes what a restore or a listing runs.
#include <doctest/doctest.h>

#include <filesystem>
#include <functional>
#include <fstream>

#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "files/files_common.hpp"
#include "mevbackup/compress.hpp"
#include "mevbackup/pitr.hpp"
#include "redis/replication_source.hpp"
#include "storage/s3/s3_client.hpp"
#include "storage/s3/s3_storage.hpp"

using namespace mevbackup;

namespace {

std::string seed(const std::string& rel) {
  namespace fs = std::filesystem;
  // The build passes the source tree's corpus directory: __FILE__ may be relative.
  for (fs::path p : {fs::path(MEVB_FUZZ_CORPUS_DIR) / rel}) {
    std::ifstream f(p, std::ios::binary);
    if (f) return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }
  FAIL("seed not found: " << rel);
  return {};
}

Code code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return Code::ok;
}

std::vector<std::string> members(const std::string& tar, size_t chunk = 509) {
  Manifest m;
  m.id = "seed";
  m.kind = "files";
  return files::check_tar_members(Bytes(reinterpret_cast<const std::byte*>(tar.data()), tar.size()), m, std::nullopt, chunk);
}

// What a replica sync reads when the server answers SYNC with `reply` and closes.
std::string replicate(const std::string& reply) {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  std::thread server([&] {
    char sync[6];
    size_t got = 0;
    while (got < sizeof sync) {
      ssize_t r = ::recv(sv[1], sync + got, sizeof sync - got, 0);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    (void)::send(sv[1], reply.data(), reply.size(), MSG_NOSIGNAL);
    ::shutdown(sv[1], SHUT_WR);
  });
  struct Close {
    int* sv;
    std::thread& t;
    ~Close() {
      ::shutdown(sv[0], SHUT_RDWR);
      t.join();
      ::close(sv[0]);
      ::close(sv[1]);
    }
  } close_both{sv, server};
  redis::ReplicationSource src(sv[0], "seed", 5, 5, nullptr);
  src.start();
  std::string out;
  std::vector<std::byte> buf(997);
  while (size_t n = src.read(MutBytes(buf.data(), buf.size()))) out.append(reinterpret_cast<char*>(buf.data()), n);
  return out;
}

std::vector<std::string> pitr_members(const std::string& tar, const char* part = "base.tar") {
  return pitr::check_basebackup_tar(Bytes(reinterpret_cast<const std::byte*>(tar.data()), tar.size()), part);
}

}  // namespace

TEST_CASE("replication framing: length and EOF-mark payloads, keepalives, refusals and cuts") {
  CHECK(replicate(seed("replication/length.bin")) == "REDIS0011");
  CHECK(replicate(seed("replication/keepalive_then_length.bin")) == "REDIS");
  CHECK(replicate(seed("replication/diskless.bin")) == "REDIS0011\xff payload");
  CHECK(code_of([] { replicate(seed("replication/noperm.bin")); }) == Code::permission);
  for (const char* cut : {"diskless_no_mark.bin", "short.bin", "bad_length.bin", "short_mark.bin"}) {
    CAPTURE(cut);
    CHECK(code_of([&] { replicate(seed(std::string("replication/") + cut)); }) == Code::dump_failed);
  }
}

TEST_CASE("PITR base backup member checks: a base backup passes, hostile and sparse members are corrupt") {
  CHECK(pitr_members(seed("pitr_tar/base.tar")) ==
        std::vector<std::string>{"global", "PG_VERSION", "global/pg_control", "pg_tblspc", "pg_tblspc/16389"});
  CHECK(pitr_members(seed("pitr_tar/tablespace.tar"), "16389.tar") ==
        std::vector<std::string>{"PG_15_202209061", "PG_15_202209061/16390"});
  // A tablespace archive holds no links at all.
  CHECK(code_of([] { pitr_members(seed("pitr_tar/base.tar"), "16389.tar"); }) == Code::corrupt);
  for (const char* hostile : {"dotdot.tar", "symlink_elsewhere.tar", "hardlink.tar", "device.tar", "sparse_1pib.tar"}) {
    CAPTURE(hostile);
    std::string tar = seed(std::string("pitr_tar/") + hostile);
    CHECK(code_of([&] { pitr_members(tar); }) == Code::corrupt);
  }
}

TEST_CASE("s3 listing parser: keys under the prefix only, sizes, dates, continuation") {
  auto p = s3::parse_list_page(seed("s3_xml/list_truncated.xml"), "prefix/", "s3://bucket/prefix");
  REQUIRE(p.objects.size() == 2);
  CHECK(p.objects[0].key == "postgres/a.dump.gz");
  CHECK(p.objects[0].size == 123456);
  CHECK(p.objects[0].mtime == 1795744807);
  CHECK(p.truncated);
  CHECK(p.next_token == "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
  auto last = s3::parse_list_page(seed("s3_xml/list_last.xml"), "prefix/", "s3://bucket/prefix");
  CHECK_FALSE(last.truncated);
  REQUIRE(last.objects.size() == 1);
  CHECK(last.objects[0].key == "redis/r.rdb.zst");
  CHECK(code_of([] { s3::parse_list_page("<ListBucketResult", "", "s3://b"); }) == Code::io);
  CHECK(code_of([] { s3::parse_list_page("<Error/>", "", "s3://b"); }) == Code::io);
}

TEST_CASE("s3 multipart uploads listing parser: uploads under the prefix, Initiated, markers") {
  auto p = s3::parse_uploads_page(seed("s3_xml/uploads_truncated.xml"), "prefix/", "s3://bucket/prefix");
  REQUIRE(p.uploads.size() == 2);  // "prefixed-elsewhere/..." is not under "prefix/"
  CHECK(p.uploads[0].key == "database/a.dump.gz");
  CHECK(p.uploads[0].upload_id == "a-upload-1");
  CHECK(p.uploads[0].mtime == 1795744807);
  CHECK(p.uploads[0].size == 0);
  CHECK(p.uploads[1].upload_id == "b-upload-2");
  CHECK(p.truncated);
  CHECK(p.next_key_marker == "prefix/database/b.dump.gz");
  CHECK(p.next_upload_id_marker == "b-upload-2");
  auto all = s3::parse_uploads_page(seed("s3_xml/uploads_truncated.xml"), "", "s3://bucket");
  CHECK(all.uploads.size() == 3);
  CHECK(code_of([] {
          s3::parse_uploads_page("<ListMultipartUploadsResult><IsTruncated>true</IsTruncated></ListMultipartUploadsResult>",
                                 "", "s3://b");
        }) == Code::io);  // truncated, but no marker to go on from
  CHECK(code_of([] { s3::parse_uploads_page("<ListBucketResult/>", "", "s3://b"); }) == Code::io);
  CHECK(code_of([] { s3::parse_uploads_page("<ListMultipartUploadsResult", "", "s3://b"); }) == Code::io);
  auto empty = s3::parse_uploads_page("<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>"
                                      "</ListMultipartUploadsResult>", "", "s3://b");
  CHECK(empty.uploads.empty());
  CHECK_FALSE(empty.truncated);
}

TEST_CASE("s3 answer parsers: UploadId, CompleteMultipartUpload, DeleteObjects, <Error>") {
  CHECK(s3::parse_upload_id(seed("s3_xml/initiate.xml")) == "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA");
  CHECK(s3::parse_upload_id("not xml").empty());
  CHECK(s3::parse_complete_result(seed("s3_xml/complete.xml"), "s3://b/k").code.empty());
  auto e = s3::parse_complete_result(seed("s3_xml/error.xml"), "s3://b/k");
  CHECK(e.code == "SlowDown");
  CHECK(e.message == "Please reduce your request rate.");
  CHECK(code_of([] { s3::parse_complete_result("", "s3://b/k"); }) == Code::io);
  auto f = s3::parse_delete_result(seed("s3_xml/delete_errors.xml"), "prefix/", "s3://b/prefix");
  REQUIRE(f.size() == 2);
  CHECK(f[0].key == "b");
  CHECK(f[0].reason == "AccessDenied: Access Denied");
  CHECK(f[1].key == "elsewhere/c");
  CHECK(code_of([] { s3::parse_delete_result("<x/>", "", "s3://b"); }) == Code::io);
}

TEST_CASE("files restorer member checks on tars: the tree passes, hostile members are refused") {
  for (size_t chunk : {size_t(1), size_t(509), size_t(1) << 20})
    CHECK(members(seed("tar_members/tree.tar"), chunk) ==
          std::vector<std::string>{"nginx", "nginx/nginx.conf", "current.conf", "nginx/copy.conf", "nginx/up.conf",
                                   "empty"});
  for (const char* hostile : {"dotdot_name.tar", "dotdot_symlink.tar", "through_symlink.tar", "absolute.tar",
                              "device.tar", "duplicate.tar", "below_file.tar", "sparse_1mib.tar", "sparse_1pib.tar"}) {
    CAPTURE(hostile);
    std::string tar = seed(std::string("tar_members/") + hostile);
    CHECK(code_of([&] { members(tar); }) == Code::restore_failed);
  }
  std::string truncated = seed("tar_members/tree.tar").substr(0, 700);
  CHECK(code_of([&] { members(truncated); }) == Code::corrupt);
}

// Findings of the fuzz targets (docs/fuzzing.md), kept as seeds and checked here.
TEST_CASE("fuzz findings: manifest_version not a positive integer is corrupt, not a crash") {
  for (const char* f : {"manifest/version_string.json", "manifest/version_huge_float.json"}) {
    CAPTURE(f);
    std::string text = seed(f);
    CHECK(code_of([&] { Manifest::parse(text, f); }) == Code::corrupt);
  }
  CHECK(code_of([] { Manifest::parse(R"({"manifest_version": -1})", "m"); }) == Code::corrupt);
  CHECK(code_of([] { Manifest::parse(R"({"manifest_version": 2})", "m"); }) == Code::unsupported);
}

TEST_CASE("fuzz findings: S3 dates out of range read as 0, without overflow") {
  CHECK(s3::parse_iso8601("-2147483648-01-01T00:00:00Z") == 0);
  CHECK(s3::parse_iso8601("2026-13-01T00:00:00Z") == 0);
  CHECK(s3::parse_iso8601("2026-11-27T05:11:39Z") == 1795756299);
  auto p = s3::parse_list_page(seed("s3_xml/list_year_overflow.xml"), "", "s3://b");
  REQUIRE(p.objects.size() == 1);
  CHECK(p.objects[0].mtime == 0);
  CHECK(s3::parse_iso8601("1013-11-27T02:00:07.000Z") == 0);  // system_clock's nanoseconds would overflow
  auto q = s3::parse_list_page(seed("s3_xml/list_year_1013.xml"), "", "s3://b");
  REQUIRE_FALSE(q.objects.empty());
  CHECK(q.objects[0].mtime == 0);
}

// corpus/gzip/split-header-crc.gz: a header CRC that does not match. Refused whole and
// when cut inside the header (docs/fuzzing.md, "What the targets found").
TEST_CASE("fuzz findings: a gzip header CRC that is wrong is refused however the input is cut") {
  std::string z = seed("gzip/split-header-crc.gz");
  for (size_t step : {z.size(), size_t{1}, size_t{13}}) {
    CAPTURE(step);
    auto d = make_decompressor(Compression::gzip);
    Code c = code_of([&] {
      std::vector<std::byte> buf(61);
      for (size_t pos = 0;;) {
        size_t n = std::min(step, z.size() - pos);
        bool last = pos + n == z.size();
        InBuf in{reinterpret_cast<const std::byte*>(z.data()) + pos, n, 0};
        for (;;) {
          OutBuf out{buf.data(), buf.size(), 0};
          bool done = d->process(in, out, last);
          if (last ? done : in.left() == 0) break;
        }
        pos += n;
        if (last) break;
      }
    });
    CHECK(c == Code::corrupt);
  }
}
