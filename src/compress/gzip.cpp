// gzip through zlib: deflate with a gzip wrapper; inflate with member concatenation.
#include <zlib.h>

#include <fmt/format.h>

#include "mevbackup/compress.hpp"

namespace mevbackup {

namespace {

uInt clamp_uint(size_t n) { return n > 0x40000000u ? 0x40000000u : static_cast<uInt>(n); }

class GzipCompressor final : public Filter {
 public:
  explicit GzipCompressor(int level) {
    if (level < -1 || level > 9)
      throw Error(Code::invalid_argument, fmt::format("gzip level {} is out of range 1..9", level));
    if (deflateInit2(&z_, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
      throw Error(Code::no_memory, "gzip: deflateInit2 failed");
  }
  ~GzipCompressor() override { deflateEnd(&z_); }
  const char* name() const override { return "gzip"; }

  bool process(InBuf& in, OutBuf& out, bool finish) override {
    if (done_) return true;
    z_.next_in = const_cast<Bytef*>(reinterpret_cast<const Bytef*>(in.p + in.pos));
    z_.avail_in = clamp_uint(in.left());
    z_.next_out = reinterpret_cast<Bytef*>(out.p + out.pos);
    z_.avail_out = clamp_uint(out.room());
    size_t in0 = z_.avail_in, out0 = z_.avail_out;
    int rc = deflate(&z_, finish ? Z_FINISH : Z_NO_FLUSH);
    in.pos += in0 - z_.avail_in;
    out.pos += out0 - z_.avail_out;
    if (rc == Z_STREAM_END) return done_ = true;
    if (rc != Z_OK && rc != Z_BUF_ERROR)
      throw Error(Code::internal, fmt::format("gzip: deflate failed ({})", rc));
    return false;
  }

 private:
  z_stream z_{};
  bool done_ = false;
};

class GzipDecompressor final : public Filter {
 public:
  GzipDecompressor() {
    if (inflateInit2(&z_, 15 + 16) != Z_OK) throw Error(Code::no_memory, "gzip: inflateInit2 failed");
  }
  ~GzipDecompressor() override { inflateEnd(&z_); }
  const char* name() const override { return "gunzip"; }

  bool process(InBuf& in, OutBuf& out, bool finish) override {
    for (;;) {
      if (between_members_) {
        if (in.left() == 0) {
          if (finish) return true;
          return false;
        }
        inflateReset(&z_);
        between_members_ = false;
      }
      z_.next_in = const_cast<Bytef*>(reinterpret_cast<const Bytef*>(in.p + in.pos));
      z_.avail_in = clamp_uint(in.left());
      z_.next_out = reinterpret_cast<Bytef*>(out.p + out.pos);
      z_.avail_out = clamp_uint(out.room());
      size_t in0 = z_.avail_in, out0 = z_.avail_out;
      int rc = inflate(&z_, Z_NO_FLUSH);
      in.pos += in0 - z_.avail_in;
      out.pos += out0 - z_.avail_out;
      if (rc == Z_STREAM_END) {
        between_members_ = true;
        continue;
      }
      if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT)
        throw Error(Code::corrupt, fmt::format("gzip data is corrupt: {}", z_.msg ? z_.msg : "invalid data"));
      if (rc == Z_MEM_ERROR) throw Error(Code::no_memory, "gzip: out of memory");
      // Z_OK or Z_BUF_ERROR: needs more input or more room.
      if (out.room() == 0) return false;
      if (in.left() == 0) {
        if (finish) throw Error(Code::corrupt, "gzip data is truncated (unexpected end of stream)");
        return false;
      }
    }
  }

 private:
  z_stream z_{};
  bool between_members_ = false;
};

}  // namespace

std::unique_ptr<Filter> make_gzip_compressor(int level) { return std::make_unique<GzipCompressor>(level); }
std::unique_ptr<Filter> make_gzip_decompressor() { return std::make_unique<GzipDecompressor>(); }

}  // namespace mevbackup
