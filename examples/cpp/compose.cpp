// Composes the stream layer through the C++ API (mevbackup.hpp): the caller's bytes
// (generated here) -> zstd -> S3 (or any storage), then the object read back -> zstd
// decompression -> the caller's sink, which compares every byte with what was sent.
//
//   mevb_example_compose_cpp URL [BYTES]     e.g. s3://backups/demo 5000000
//
// URL is "s3://bucket/prefix" or a local directory. S3 settings and credentials come from
// the AWS_* environment variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), never from
// the command line. Exits 0 when the bytes read back are the bytes sent, 1 otherwise.
// Built against the installed package only: it needs mevbackup.hpp and -lmevbackup.
#include <mevbackup.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace {

unsigned char byte_at(std::uint64_t i) {
  // The same pattern as examples/c/compose.c: compressible but not trivial.
  static const char text[] = "{\"id\": 0000, \"state\": \"protected\", \"note\": \"composed by the stream layer\"}\n";
  return static_cast<unsigned char>(text[i % (sizeof text - 1)] + static_cast<unsigned char>((i / 997) % 3));
}

int compose(const std::string& url, std::uint64_t total) {
  const std::string key = "compose/payload-cpp.bin.zst";
  mevb::Storage storage = mevb::Storage::open(url);
  storage.remove(key);  // a run before this one

  // Up: the caller's bytes -> observer (what was sent) -> zstd -> storage.
  std::uint64_t sent = 0;
  mevb::Source src = mevb::Source::from_callback([&](void* buf, std::size_t cap) {
    auto* out = static_cast<unsigned char*>(buf);
    std::size_t n = 0;
    while (n < cap && sent < total) out[n++] = byte_at(sent++);
    return n;
  });
  mevb::Filter sent_hash = mevb::Filter::observer();
  mevb::Filter zstd = mevb::Filter::compressor(mevb::Compression::zstd, 3);
  mevb::Sink put = storage.put(key);
  mevb::run(src, {&sent_hash, &zstd}, put);
  const mevb::ObjectInfo info = storage.stat(key);

  // Down: storage -> zstd decompression -> observer (what came back) -> the caller's check.
  std::uint64_t seen = 0, mismatches = 0;
  bool committed = false;
  mevb::Source get = storage.get(key);
  mevb::Filter unzstd = mevb::Filter::decompressor(mevb::Compression::zstd);
  mevb::Filter got_hash = mevb::Filter::observer();
  mevb::Sink check = mevb::Sink::from_callbacks(
      [&](const void* data, std::size_t size) {
        const auto* d = static_cast<const unsigned char*>(data);
        for (std::size_t i = 0; i < size; ++i)
          if (d[i] != byte_at(seen + i)) ++mismatches;
        seen += size;
      },
      [&] { committed = true; });
  mevb::run(get, {&unzstd, &got_hash}, check);

  if (!committed || seen != total || mismatches != 0 || sent_hash.sha256() != got_hash.sha256()) {
    std::fprintf(stderr, "compose: MISMATCH: sent %llu bytes (sha256 %s), got %llu (sha256 %s), %llu differ\n",
                 static_cast<unsigned long long>(total), sent_hash.sha256().c_str(),
                 static_cast<unsigned long long>(seen), got_hash.sha256().c_str(),
                 static_cast<unsigned long long>(mismatches));
    return 1;
  }
  std::printf("compose: %llu bytes -> zstd -> %s (%llu bytes stored) -> back, identical, sha256 %s\n",
              static_cast<unsigned long long>(total), key.c_str(), static_cast<unsigned long long>(info.size),
              got_hash.sha256().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s URL [BYTES]\n", argv[0]);
    return 2;
  }
  const std::uint64_t total = argc == 3 ? std::strtoull(argv[2], nullptr, 10) : 5000000ULL;
  try {
    return compose(argv[1], total);
  } catch (const mevb::Error& e) {
    std::fprintf(stderr, "compose: %s (%s)\n", e.what(), mevb_status_str(e.code()));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compose: %s\n", e.what());
  }
  return 1;
}
