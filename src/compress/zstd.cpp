// zstd through libzstd, multi-threaded on the compression side (ZSTD_c_nbWorkers).
#include <zstd.h>

#include <thread>

#include <fmt/format.h>

#include "mevbackup/compress.hpp"

namespace mevbackup {

namespace {

void check(size_t rc, const char* what) {
  if (ZSTD_isError(rc)) throw Error(Code::internal, fmt::format("zstd: {}: {}", what, ZSTD_getErrorName(rc)));
}

class ZstdCompressor final : public Filter {
 public:
  ZstdCompressor(int level, unsigned threads) : c_(ZSTD_createCCtx()) {
    if (!c_) throw Error(Code::no_memory, "zstd: cannot create a compression context");
    check(ZSTD_CCtx_setParameter(c_, ZSTD_c_compressionLevel, level), "level");
    check(ZSTD_CCtx_setParameter(c_, ZSTD_c_checksumFlag, 1), "checksum");
    if (threads > 1) {
      // Fails harmlessly on a single-threaded libzstd: then it compresses inline.
      ZSTD_CCtx_setParameter(c_, ZSTD_c_nbWorkers, static_cast<int>(threads));
      // Smaller jobs than the default (4 x the window): each worker holds its job's input
      // and output, so this keeps peak memory low at a negligible cost in ratio.
      ZSTD_CCtx_setParameter(c_, ZSTD_c_jobSize, 2 << 20);
    }
  }
  ~ZstdCompressor() override { ZSTD_freeCCtx(c_); }
  const char* name() const override { return "zstd"; }

  bool process(InBuf& in, OutBuf& out, bool finish) override {
    if (done_) return true;
    ZSTD_inBuffer ib{in.p, in.n, in.pos};
    ZSTD_outBuffer ob{out.p, out.n, out.pos};
    size_t left = ZSTD_compressStream2(c_, &ob, &ib, finish ? ZSTD_e_end : ZSTD_e_continue);
    check(left, "compress");
    in.pos = ib.pos;
    out.pos = ob.pos;
    if (finish && ib.pos == ib.size && left == 0) done_ = true;
    return done_;
  }

 private:
  ZSTD_CCtx* c_;
  bool done_ = false;
};

class ZstdDecompressor final : public Filter {
 public:
  ZstdDecompressor() : d_(ZSTD_createDCtx()) {
    if (!d_) throw Error(Code::no_memory, "zstd: cannot create a decompression context");
  }
  ~ZstdDecompressor() override { ZSTD_freeDCtx(d_); }
  const char* name() const override { return "unzstd"; }

  bool process(InBuf& in, OutBuf& out, bool finish) override {
    for (;;) {
      if (out.room() == 0) return false;
      if (in.left() == 0 && !frame_open_) {
        if (finish && !seen_input_) throw Error(Code::corrupt, "zstd data is empty (no frame)");
        return finish;
      }
      seen_input_ = true;
      ZSTD_inBuffer ib{in.p, in.n, in.pos};
      ZSTD_outBuffer ob{out.p, out.n, out.pos};
      size_t rc = ZSTD_decompressStream(d_, &ob, &ib);
      bool progress = ib.pos != in.pos || ob.pos != out.pos;
      in.pos = ib.pos;
      out.pos = ob.pos;
      if (ZSTD_isError(rc)) throw Error(Code::corrupt, fmt::format("zstd data is corrupt: {}", ZSTD_getErrorName(rc)));
      frame_open_ = rc != 0;
      if (!progress) {
        if (finish && in.left() == 0) throw Error(Code::corrupt, "zstd data is truncated (unexpected end of stream)");
        return false;
      }
    }
  }

 private:
  ZSTD_DCtx* d_;
  bool frame_open_ = false;
  bool seen_input_ = false;
};

}  // namespace

std::unique_ptr<Filter> make_zstd_compressor(int level, unsigned threads) {
  if (level < 1 || level > ZSTD_maxCLevel())
    throw Error(Code::invalid_argument, fmt::format("zstd level {} is out of range 1..{}", level, ZSTD_maxCLevel()));
  return std::make_unique<ZstdCompressor>(level, threads);
}

std::unique_ptr<Filter> make_zstd_decompressor() { return std::make_unique<ZstdDecompressor>(); }

}  // namespace mevbackup
