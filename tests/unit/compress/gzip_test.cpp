#include <doctest/doctest.h>

#include <cstdio>
#include <functional>

#include <zlib.h>

#include "../helpers.hpp"

using namespace mevbackup;
using testutil::random_bytes;

namespace mevbackup {
std::unique_ptr<Filter> make_gzip_compressor(int level);  // the zlib reference
std::unique_ptr<Filter> make_gzip_decompressor();
std::unique_ptr<Filter> make_isal_gzip_compressor(int level);
std::unique_ptr<Filter> make_parallel_gzip_compressor(int level, size_t chunk, unsigned threads);
}  // namespace mevbackup

namespace {

// Drives a filter by hand with the given input slice size and output buffer size.
std::vector<std::byte> run_filter(Filter& f, const std::vector<std::byte>& in, size_t in_step, size_t out_size) {
  std::vector<std::byte> out, buf(out_size);
  size_t fed = 0;
  for (;;) {
    size_t n = std::min(in_step, in.size() - fed);
    bool last = fed + n == in.size();
    InBuf ib{in.data() + fed, n, 0};
    for (;;) {
      OutBuf ob{buf.data(), buf.size(), 0};
      bool done = f.process(ib, ob, last);
      out.insert(out.end(), buf.begin(), buf.begin() + ob.pos);
      if (last ? done : (ib.left() == 0 && ob.pos < ob.n)) break;
    }
    fed += n;
    if (last) return out;
  }
}

std::vector<std::byte> through_pipeline(Filter& f, const std::vector<std::byte>& in, size_t chunk) {
  MemorySource src(in);
  MemorySink sink;
  PipelineOptions o;
  o.chunk_size = chunk;
  Pipeline(src).then(f).run(sink, nullptr, {}, o);
  return sink.data;
}

std::string shell(const std::string& cmd, const std::vector<std::byte>& input) {
  char name[] = "/tmp/mevb-gz-XXXXXX";
  int fd = mkstemp(name);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, input.data(), input.size()) == static_cast<ssize_t>(input.size()));
  ::close(fd);
  FILE* p = popen((cmd + " < " + name).c_str(), "r");
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = pclose(p);
  ::unlink(name);
  REQUIRE(rc == 0);
  return out;
}

}  // namespace

TEST_CASE("gzip round-trips with input slices {1, 7, 4096, 1 MiB} and 1-byte output buffers") {
  auto data = random_bytes(300000);
  for (size_t step : {size_t(1), size_t(7), size_t(4096), size_t(1 << 20)}) {
    CAPTURE(step);
    auto c = make_compressor(Compression::gzip, 6);
    auto d = make_decompressor(Compression::gzip);
    auto input = step == 1 ? std::vector<std::byte>(data.begin(), data.begin() + 20000) : data;
    auto z = run_filter(*c, input, step, step == 1 ? 1 : 65536);
    CHECK(z.size() < input.size() * 3 / 5);
    auto back = run_filter(*d, z, step, 1);
    CHECK(back == input);
  }
}

TEST_CASE("gzip output is read by stock gunzip, and stock gzip output is read by us") {
  auto data = random_bytes(2 << 20, 7);
  auto c = make_compressor(Compression::gzip, 1);
  auto z = through_pipeline(*c, data, 4096);
  CHECK(shell("gzip -dc", z) == testutil::to_string(data));

  std::string stock = shell("gzip -c -9", data);
  std::vector<std::byte> sv(reinterpret_cast<const std::byte*>(stock.data()),
                            reinterpret_cast<const std::byte*>(stock.data()) + stock.size());
  auto d = make_decompressor(Compression::gzip);
  CHECK(through_pipeline(*d, sv, 1000) == data);
}

TEST_CASE("concatenated gzip members decompress to the concatenation, as gunzip does") {
  auto a = random_bytes(10000, 1), b = random_bytes(20000, 2);
  auto ca = make_compressor(Compression::gzip), cb = make_compressor(Compression::gzip);
  auto za = through_pipeline(*ca, a, 4096), zb = through_pipeline(*cb, b, 4096);
  za.insert(za.end(), zb.begin(), zb.end());
  auto d = make_decompressor(Compression::gzip);
  auto out = through_pipeline(*d, za, 777);
  a.insert(a.end(), b.begin(), b.end());
  CHECK(out == a);
}

TEST_CASE("truncated or bit-flipped gzip is reported as corrupt") {
  auto data = random_bytes(100000, 3, false);
  auto c = make_compressor(Compression::gzip);
  auto z = through_pipeline(*c, data, 4096);
  SUBCASE("truncated") {
    z.resize(z.size() - 10);
    auto d = make_decompressor(Compression::gzip);
    try {
      through_pipeline(*d, z, 4096);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.code() == Code::corrupt);
    }
  }
  SUBCASE("flipped byte") {
    z[z.size() / 2] ^= std::byte{0x40};
    auto d = make_decompressor(Compression::gzip);
    try {
      through_pipeline(*d, z, 4096);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.code() == Code::corrupt);
    }
  }
}

TEST_CASE("codecs are chosen by name and detected by magic") {
  CHECK(parse_compression("gzip") == Compression::gzip);
  CHECK(parse_compression("zstd") == Compression::zstd);
  CHECK(parse_compression("none") == Compression::none);
  CHECK_THROWS_WITH_AS(parse_compression("lz4"), "unknown compression \"lz4\" (expected gzip, zstd or none)", Error);
  std::byte zs[] = {std::byte{0x28}, std::byte{0xb5}, std::byte{0x2f}, std::byte{0xfd}};
  CHECK(detect_compression(Bytes(zs, 4)) == Compression::zstd);
  CHECK(compression_suffix(Compression::zstd) == ".zst");
  std::byte gz[] = {std::byte{0x1f}, std::byte{0x8b}, std::byte{8}};
  std::byte pg[] = {std::byte{'P'}, std::byte{'G'}, std::byte{'D'}, std::byte{'M'}};
  CHECK(detect_compression(Bytes(gz, 3)) == Compression::gzip);
  CHECK(detect_compression(Bytes(pg, 4)) == Compression::none);
  CHECK_FALSE(detect_compression(Bytes(pg, 3)).has_value());
  CHECK_FALSE(detect_compression(Bytes(gz, 1)).has_value());
  CHECK_THROWS_AS(make_compressor(Compression::gzip, 13), Error);
  CHECK_THROWS_AS(make_compressor(Compression::gzip, 0), Error);
  CHECK_THROWS_AS(make_compressor(Compression::zstd, 40), Error);
  CHECK(make_compressor(Compression::none) == nullptr);
}

namespace {

struct Engine {
  const char* name;
  std::function<std::unique_ptr<Filter>()> make;
  const char* stock_reader;  // a stock command that must read the output
};

std::vector<Engine> engines() {
  return {
      {"zlib", [] { return make_gzip_compressor(6); }, "gzip -dc"},
      {"isa-l 1 (default)", [] { return make_compressor(Compression::gzip); }, "gzip -dc"},
      {"isa-l 3", [] { return make_isal_gzip_compressor(3); }, "gzip -dc"},
      {"libdeflate parallel", [] { return make_parallel_gzip_compressor(6, 64 * 1024, 2); }, "gzip -dc"},
      {"zstd", [] { return make_compressor(Compression::zstd); }, "zstd -dc"},
  };
}

}  // namespace

TEST_CASE("every engine round-trips with 1-byte output buffers and odd slices, and stock tools read it") {
  auto data = random_bytes(400000, 11);
  for (auto& e : engines()) {
    CAPTURE(e.name);
    for (size_t step : {size_t(7), size_t(4096), size_t(1 << 20)}) {
      CAPTURE(step);
      auto c = e.make();
      auto z = run_filter(*c, data, step, step == 7 ? 1 : 65536);
      CHECK(z.size() < data.size() * 3 / 5);
      bool zstd = std::string(e.name) == "zstd";
      auto d = make_decompressor(zstd ? Compression::zstd : Compression::gzip);
      CHECK(run_filter(*d, z, step, 1) == data);
      if (!zstd) {
        auto ref = make_gzip_decompressor();  // zlib agrees with ISA-L
        CHECK(run_filter(*ref, z, step, 65536) == data);
      }
      if (step == 4096) CHECK(shell(e.stock_reader, z) == testutil::to_string(data));
    }
  }
}

TEST_CASE("empty input gives a valid empty stream with every engine") {
  for (auto& e : engines()) {
    CAPTURE(e.name);
    auto c = e.make();
    auto z = through_pipeline(*c, {}, 4096);
    CHECK_FALSE(z.empty());
    CHECK(shell(e.stock_reader, z).empty());
  }
}

TEST_CASE("parallel members: many chunks come out in order") {
  auto data = random_bytes(3 * 1024 * 1024 + 12345, 5);
  auto c = make_parallel_gzip_compressor(6, 64 * 1024, 3);
  auto z = through_pipeline(*c, data, 100000);
  auto d = make_decompressor(Compression::gzip);
  CHECK(through_pipeline(*d, z, 77777) == data);
  CHECK(shell("gzip -dc", z) == testutil::to_string(data));
}

TEST_CASE("truncated or flipped zstd and ISA-L gzip are corrupt") {
  auto data = random_bytes(200000, 9, false);
  for (auto comp : {Compression::gzip, Compression::zstd}) {
    auto c = make_compressor(comp);
    auto z = through_pipeline(*c, data, 4096);
    auto t = z;
    t.resize(t.size() - 5);
    auto d1 = make_decompressor(comp);
    try {
      through_pipeline(*d1, t, 4096);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.code() == Code::corrupt);
    }
    z[z.size() / 2] ^= std::byte{0x20};
    auto d2 = make_decompressor(comp);
    try {
      through_pipeline(*d2, z, 4096);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.code() == Code::corrupt);
    }
  }
}

// A gzip member whose header has every optional field (RFC 1952: FEXTRA, FNAME,
// FCOMMENT, FHCRC), its header CRC right or wrong. Read in slices of every size, each
// reader gives one verdict: igzip on its own skipped the header CRC when a slice ended
// inside the header (found by fuzz_gzip).
TEST_CASE("a gzip header with every optional field reads the same in slices of any size") {
  auto data = random_bytes(5000, 21, false);
  auto c = make_compressor(Compression::gzip);
  auto plain = through_pipeline(*c, data, 4096);
  REQUIRE(plain.size() > 18);
  std::vector<uint8_t> h(reinterpret_cast<const uint8_t*>(plain.data()), reinterpret_cast<const uint8_t*>(plain.data()) + 10);
  h[3] = 0x02 | 0x04 | 0x08 | 0x10;
  for (uint8_t b : std::initializer_list<uint8_t>{2, 0, 'x', 'y', 'n', 'a', 'm', 'e', 0, 'c', 0}) h.push_back(b);
  uint32_t crc = static_cast<uint32_t>(crc32(0, h.data(), static_cast<uInt>(h.size())));
  for (bool good : {true, false}) {
    CAPTURE(good);
    std::vector<std::byte> z;
    for (uint8_t b : h) z.push_back(std::byte{b});
    uint16_t hcrc = static_cast<uint16_t>(good ? crc : crc ^ 0x5a5a);
    z.push_back(std::byte(hcrc & 0xff));
    z.push_back(std::byte(hcrc >> 8));
    z.insert(z.end(), plain.begin() + 10, plain.end());
    if (good) CHECK(shell("gzip -dc", z) == testutil::to_string(data));
    for (size_t step = 1; step <= h.size() + 4; ++step) {
      CAPTURE(step);
      for (int engine = 0; engine < 2; ++engine) {
        CAPTURE(engine);
        auto d = engine == 0 ? make_decompressor(Compression::gzip) : make_gzip_decompressor();
        if (good) {
          CHECK(run_filter(*d, z, step, 61) == data);
        } else {
          try {
            run_filter(*d, z, step, 61);
            FAIL("a wrong header CRC was accepted");
          } catch (const Error& e) {
            CHECK(e.code() == Code::corrupt);
          }
        }
      }
    }
  }
}

TEST_CASE("an empty input is not a gzip stream") {
  auto d = make_decompressor(Compression::gzip);
  try {
    run_filter(*d, {}, 1, 64);
    FAIL("empty input accepted");
  } catch (const Error& e) {
    CHECK(e.code() == Code::corrupt);
  }
}
