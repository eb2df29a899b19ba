#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "../helpers.hpp"
#include "redis/rdb_reader.hpp"

using namespace mevbackup;
using namespace mevbackup::redis;

namespace {

std::vector<std::byte> corpus(const char* name) {
  namespace fs = std::filesystem;
  // The build passes the source tree's corpus directory: __FILE__ may be relative.
  for (fs::path p : {fs::path(MEVB_FUZZ_CORPUS_DIR) / "rdb" / name}) {
    std::ifstream f(p, std::ios::binary);
    if (!f) continue;
    std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::vector<std::byte> v(s.size());
    std::memcpy(v.data(), s.data(), s.size());
    return v;
  }
  FAIL("corpus file not found: " << name);
  return {};
}

std::vector<std::byte> bytes(const std::string& s) {
  std::vector<std::byte> v(s.size());
  std::memcpy(v.data(), s.data(), s.size());
  return v;
}

// A hand-made RDB: the header, the given body, the EOF opcode and a correct CRC.
std::vector<std::byte> rdb(const std::string& body, const char* version = "0010") {
  std::string s = std::string("REDIS") + version + body + "\xff";
  uint64_t crc = crc64(0, s.data(), s.size());
  for (int i = 0; i < 8; ++i) s += static_cast<char>((crc >> (8 * i)) & 0xff);
  return bytes(s);
}

RdbSummary summarize(std::vector<std::byte> data, size_t max_read = SIZE_MAX, RdbLimits lim = {}) {
  MemorySource src(std::move(data), max_read);
  return summarize_rdb(src, 1000, lim);
}

}  // namespace

TEST_CASE("crc64 is Redis' CRC-64/Jones") {
  CHECK(crc64(0, "123456789", 9) == 0xe9c6d914c4b8d9caull);
  CHECK(crc64(0, "", 0) == 0);
  // Incremental use gives the same result.
  CHECK(crc64(crc64(0, "1234", 4), "56789", 5) == 0xe9c6d914c4b8d9caull);
}

TEST_CASE("dump_payload frames a value as DUMP does") {
  std::string value = std::string("\x03", 1) + "bar";
  std::string p = dump_payload(kString, value, 10);
  REQUIRE(p.size() == 1 + value.size() + 2 + 8);
  CHECK(p[0] == '\0');
  CHECK(p.substr(1, value.size()) == value);
  CHECK(p[1 + value.size()] == 10);
  CHECK(p[2 + value.size()] == 0);
  // With init 0 and no final xor, the CRC of data followed by its little-endian CRC is 0.
  CHECK(crc64(0, p.data(), p.size()) == 0);
}

TEST_CASE("a real RDB of every type, read in chunks of any size") {
  for (size_t step : {size_t(1), size_t(7), size_t(4096), SIZE_MAX}) {
    RdbSummary s = summarize(corpus("all_types.rdb"), step);
    CHECK(s.version == 10);
    CHECK(s.keys[0] == 53);
    CHECK(s.keys[3] == 1);
    CHECK(s.expires[0] == 1);
    CHECK(s.types["stream"] == 1);
    CHECK(s.types["zset"] == 2);
    CHECK(s.types["hash"] == 2);
    CHECK(s.types["set"] == 3);
    CHECK(s.types["list"] == 1);
    CHECK(s.types["string"] == 45);
    CHECK(s.checksum_verified);
    CHECK(s.sample == 54);
  }
}

TEST_CASE("keys, expiries and captured values") {
  MemorySource src(corpus("all_types.rdb"));
  RdbReader r(src);
  RdbEntry e;
  std::map<std::string, RdbEntry> seen;
  while (r.next(e, true)) seen[e.key] = e;
  CHECK(r.aux().at("redis-ver") == "7.0.15");
  REQUIRE(seen.count("lzf"));
  CHECK(seen["ttl"].expire_ms > 1700000000000);
  CHECK(seen["str:1"].expire_ms == -1);
  CHECK(seen["str:1"].value == std::string("\x07value-1", 8));
  CHECK(seen["other"].db == 3);
  // An LZF-compressed value is captured as stored (RESTORE accepts it).
  CHECK(static_cast<unsigned char>(seen["lzf"].value[0]) == 0xC3);
}

TEST_CASE("hand-made RDBs: integers, LZF keys, old versions") {
  // db 0, a key "k" holding the 8-bit integer -5, a key given as an INT16.
  RdbSummary s = summarize(rdb(std::string("\xfe\x00\x00\x01k\xc0\xfb\x00\xc1\x39\x30\x01v", 13)));
  CHECK(s.keys[0] == 2);
  // Version 3 files have no CRC footer.
  std::string v3 = std::string("REDIS0003\x00\x01k\x01v\xff", 15);
  CHECK(summarize(bytes(v3)).keys[0] == 1);
  CHECK_THROWS_AS(summarize(rdb("", "0099")), Error);
  try {
    summarize(rdb("", "0099"));
  } catch (const Error& e) {
    CHECK(e.code() == Code::unsupported);
  }
}

TEST_CASE("every truncation fails cleanly") {
  for (const char* name : {"one_key.rdb", "all_types.rdb"}) {
    auto full = corpus(name);
    for (size_t n = 0; n < full.size(); n += (full.size() > 2000 ? 3 : 1)) {
      std::vector<std::byte> cut(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
      try {
        summarize(cut);
        FAIL("a truncated RDB of " << n << " bytes parsed");
      } catch (const Error& e) {
        CHECK(e.code() == Code::corrupt);
      }
    }
  }
}

TEST_CASE("every flipped byte is caught") {
  auto full = corpus("one_key.rdb");
  for (size_t i = 0; i < full.size(); ++i) {
    auto bad = full;
    bad[i] ^= std::byte{0x5a};
    CHECK_THROWS_AS(summarize(bad), Error);
  }
}

TEST_CASE("hostile lengths are refused before anything is allocated") {
  // A key claiming 2^62 bytes; a set claiming 2^62 members; an LZF string claiming 1 GiB.
  std::string huge_key = std::string("\x00\x81\x40\x00\x00\x00\x00\x00\x00\x00", 10);
  std::string huge_set = std::string("\x02\x01k\x81\x40\x00\x00\x00\x00\x00\x00\x00", 12);
  std::string huge_lzf = std::string("\x00\x01k\xc3\x05\x80\x40\x00\x00\x00", 10) + "abcde";
  for (auto& body : {huge_key, huge_set, huge_lzf}) {
    try {
      summarize(rdb(body));
      FAIL("parsed");
    } catch (const Error& e) {
      CHECK(e.code() == Code::corrupt);
    }
  }
  // A limit below the data is enforced too.
  RdbLimits small;
  small.max_string = 4;
  CHECK_THROWS_AS(summarize(corpus("all_types.rdb"), SIZE_MAX, small), Error);
}

TEST_CASE("RdbSummaryObserver parses what it is shown, or stops cleanly") {
  auto full = corpus("all_types.rdb");
  {
    RdbSummaryObserver o;
    for (size_t i = 0; i < full.size(); i += 1000) o.update(Bytes(full.data() + i, std::min<size_t>(1000, full.size() - i)));
    RdbSummary s = o.result();
    CHECK(s.keys[0] == 53);
  }
  {
    RdbSummaryObserver o;
    o.update(Bytes(full.data(), 100));
    CHECK_THROWS_AS(o.result(), Error);
  }
  {
    RdbSummaryObserver o;  // abandoned mid-stream: the destructor stops the parse
    o.update(Bytes(full.data(), 100));
  }
}

TEST_CASE("RDB 12: hash field expiry in all four forms, slot info, a function library") {
  for (size_t step : {size_t(1), size_t(5), SIZE_MAX}) {
    RdbSummary s = summarize(corpus("v12_hash_field_expiry.rdb"), step);
    CHECK(s.version == 12);
    CHECK(s.keys[0] == 5);
    CHECK(s.types["hash"] == 4);
    CHECK(s.types["string"] == 1);
    CHECK(s.functions == 1);
    CHECK(s.checksum_verified);
  }
  MemorySource src(corpus("v12_hash_field_expiry.rdb"));
  RdbReader r(src);
  r.keep_functions(true);
  RdbEntry e;
  std::vector<std::string> keys;
  std::vector<int> types;
  while (r.next(e, true)) {
    keys.push_back(e.key);
    types.push_back(e.type);
  }
  CHECK(keys == std::vector<std::string>{"h:lpex", "h:meta", "h:lpex-rc", "h:meta-rc", "s"});
  CHECK(types == std::vector<int>{kHashListpackEx, kHashMetadata, kHashListpackExPreGa, kHashMetadataPreGa, kString});
  auto libs = r.take_functions();
  REQUIRE(libs.size() == 1);
  CHECK(libs[0].rfind("#!lua name=seedlib\n", 0) == 0);
}

TEST_CASE("RDB 12 values Redis 7.4 refuses are refused") {
  auto refused = [](const std::string& body) {
    try {
      summarize(rdb(body, "0012"));
    } catch (const Error& e) {
      CHECK(e.code() == Code::corrupt);
      return std::string(e.what());
    }
    FAIL("accepted");
    return std::string();
  };
  std::string ms = std::string("\x00\xb4\xc5\xda\xb8\x01\x00\x00", 8);  // 1893456000000
  // Hash metadata with a repeated field; with an expiry past EB_EXPIRE_TIME_MAX.
  CHECK(refused("\x18\x01h" + ms + std::string("\x02\x00\x01" "f\x01" "1\x00\x01" "f\x01" "2", 11)).find("same member twice") !=
        std::string::npos);
  CHECK(refused("\x16\x01h\x01\x81" + std::string("\x00\x01\x00\x00\x00\x00\x00\x00", 8) + "\x01" "f\x01" "1")
            .find("invalid expiry") != std::string::npos);
  // A listpack-ex hash must hold whole (field, value, TTL) triples.
  std::string lp = std::string("\x0d\x00\x00\x00\x02\x00\x81" "f\x02\x81" "v\x02\xff", 13);
  CHECK(refused("\x19\x01h" + ms + "\x0d" + lp).find("groups of 3") != std::string::npos);
}

TEST_CASE("inner encodings are validated as Redis loads them") {
  CHECK(summarize(corpus("good_packed.rdb")).keys[0] == 3);
  for (auto [name, what] : {std::pair{"bad_ziplist_truncated.rdb", "ziplist: zlbytes says"},
                            std::pair{"bad_listpack_backlen.rdb", "back-length says 5"},
                            std::pair{"bad_intset_encoding.rdb", "intset: encoding 3"}}) {
    try {
      summarize(corpus(name));
      FAIL(name << " accepted");
    } catch (const Error& e) {
      CHECK(e.code() == Code::corrupt);
      CHECK_MESSAGE(std::string(e.what()).find(what) != std::string::npos, name << ": " << e.what());
    }
  }
}

TEST_CASE("an empty collection is skipped as Redis skips it, not counted") {
  RdbSummary s = summarize(corpus("empty_list_skipped.rdb"));
  CHECK(s.keys[0] == 1);
  CHECK(s.empty_keys_skipped == 1);
  MemorySource src(corpus("empty_list_skipped.rdb"));
  RdbReader r(src);
  RdbEntry e;
  REQUIRE(r.next(e, true));
  CHECK(e.key == "k");
  CHECK_FALSE(r.next(e, true));
}

TEST_CASE("module values and module aux data are counted per module name") {
  // Module id of "mevbmodul" version 3: 9 six-bit characters then 10 bits of version.
  static const std::string set = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  uint64_t id = 0;
  for (char c : std::string("mevbmodul")) id = (id << 6) | set.find(c);
  id = (id << 10) | 3;
  std::string idlen = "\x81";
  for (int i = 7; i >= 0; --i) idlen += static_cast<char>((id >> (8 * i)) & 0xff);
  // A key of the module (an unsigned 5 and EOF) and a module aux record (when=2, 1).
  std::string body = "\xf7" + idlen + std::string("\x02\x01\x02\x07\x00", 5) + "\x07\x01m" + idlen +
                     std::string("\x02\x05\x00", 3);
  RdbSummary s = summarize(rdb(body));
  CHECK(s.keys[0] == 1);
  CHECK(s.types["module"] == 1);
  CHECK(s.module_values["mevbmodul"] == 1);
  CHECK(s.module_aux["mevbmodul"] == 1);
}

TEST_CASE("RdbSummaryObserver refuses more bytes once the parse failed") {
  // A stream invalid from byte 10 (an unknown opcode), fed in 1 KiB chunks: the parse
  // fails on the first, and update() throws once the queue (8 chunks) is used up.
  std::vector<std::byte> chunk(1024, std::byte{0xf0});
  std::memcpy(chunk.data(), "REDIS0010", 9);
  RdbSummaryObserver o;
  int accepted = 0;
  try {
    for (; accepted < 1000; ++accepted) o.update(Bytes(chunk.data(), chunk.size()));
  } catch (const Error& e) {
    CHECK(e.code() == Code::corrupt);
  }
  CHECK(accepted <= 10);
  CHECK_THROWS_AS(o.result(), Error);
}

TEST_CASE("RdbSummaryObserver tells how many bytes follow the RDB's end") {
  auto full = corpus("one_key.rdb");
  {
    RdbSummaryObserver o;
    o.update(Bytes(full.data(), full.size()));
    o.result();
    CHECK(o.trailing_bytes() == 0);
  }
  {
    RdbSummaryObserver o;
    full.resize(full.size() + 70000, std::byte{'x'});
    o.update(Bytes(full.data(), full.size()));
    o.result();
    CHECK(o.trailing_bytes() == 70000);
  }
}
