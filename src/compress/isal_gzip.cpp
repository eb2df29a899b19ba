// gzip through ISA-L's igzip: several times faster than zlib at the same output size
// (level 1 ~ gzip -6), and the output is an ordinary .gz that stock gunzip reads.
#include <isa-l/igzip_lib.h>

#include <memory>
#include <vector>

#include <fmt/format.h>

#include "mevbackup/compress.hpp"

namespace mevbackup {

namespace {

uint32_t clamp32(size_t n) { return n > 0x40000000u ? 0x40000000u : static_cast<uint32_t>(n); }

size_t level_buf_size(int level) {
  switch (level) {
    case 1: return ISAL_DEF_LVL1_DEFAULT;
    case 2: return ISAL_DEF_LVL2_DEFAULT;
    case 3: return ISAL_DEF_LVL3_DEFAULT;
    default: return 0;
  }
}

class IsalCompressor final : public Filter {
 public:
  explicit IsalCompressor(int level) : level_buf_(level_buf_size(level)) {
    isal_deflate_init(&z_);
    z_.level = static_cast<uint32_t>(level);
    z_.gzip_flag = IGZIP_GZIP;
    z_.level_buf = level_buf_.empty() ? nullptr : level_buf_.data();
    z_.level_buf_size = static_cast<uint32_t>(level_buf_.size());
  }
  const char* name() const override { return "gzip (isa-l)"; }

  bool process(InBuf& in, OutBuf& out, bool finish) override {
    if (done_) return true;
    z_.next_in = const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(in.p + in.pos));
    z_.avail_in = clamp32(in.left());
    z_.next_out = reinterpret_cast<uint8_t*>(out.p + out.pos);
    z_.avail_out = clamp32(out.room());
    z_.end_of_stream = finish && z_.avail_in == in.left() ? 1 : 0;
    uint32_t in0 = z_.avail_in, out0 = z_.avail_out;
    int rc = isal_deflate(&z_);
    in.pos += in0 - z_.avail_in;
    out.pos += out0 - z_.avail_out;
    if (rc != COMP_OK) throw Error(Code::internal, fmt::format("gzip (isa-l): deflate failed ({})", rc));
    if (z_.end_of_stream && z_.internal_state.state == ZSTATE_END) return done_ = true;
    return false;
  }

 private:
  isal_zstream z_{};
  std::vector<uint8_t> level_buf_;
  bool done_ = false;
};

// Inflates gzip members one after another (as gunzip does), checking each CRC and size.
class IsalDecompressor final : public Filter {
 public:
  IsalDecompressor() : st_(std::make_unique<inflate_state>()) { reset(); }
  const char* name() const override { return "gunzip (isa-l)"; }

  bool process(InBuf& in, OutBuf& out, bool finish) override {
    for (;;) {
      if (between_members_) {
        if (in.left() == 0) {
          if (finish) return true;
          return false;
        }
        reset();
        between_members_ = false;
      }
      st_->next_in = const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(in.p + in.pos));
      st_->avail_in = clamp32(in.left());
      st_->next_out = reinterpret_cast<uint8_t*>(out.p + out.pos);
      st_->avail_out = clamp32(out.room());
      uint32_t in0 = st_->avail_in, out0 = st_->avail_out;
      int rc = isal_inflate(st_.get());
      in.pos += in0 - st_->avail_in;
      out.pos += out0 - st_->avail_out;
      if (rc < 0 || rc == ISAL_NEED_DICT)
        throw Error(Code::corrupt, fmt::format("gzip data is corrupt ({})", describe(rc)));
      if (st_->block_state == ISAL_BLOCK_FINISH) {
        between_members_ = true;
        continue;
      }
      if (out.room() == 0) return false;
      if (in.left() == 0) {
        if (finish) throw Error(Code::corrupt, "gzip data is truncated (unexpected end of stream)");
        return false;
      }
      if (in0 == st_->avail_in && out0 == st_->avail_out)
        throw Error(Code::corrupt, "gzip data is corrupt (no progress)");
    }
  }

 private:
  void reset() {
    isal_inflate_init(st_.get());
    st_->crc_flag = ISAL_GZIP;
  }
  static const char* describe(int rc) {
    switch (rc) {
      case ISAL_INVALID_BLOCK: return "invalid deflate block";
      case ISAL_INVALID_SYMBOL: return "invalid deflate symbol";
      case ISAL_INVALID_LOOKBACK: return "invalid lookback distance";
      case ISAL_INVALID_WRAPPER: return "invalid gzip header";
      case ISAL_UNSUPPORTED_METHOD: return "unsupported compression method";
      case ISAL_INCORRECT_CHECKSUM: return "CRC mismatch";
      default: return "invalid data";
    }
  }
  std::unique_ptr<inflate_state> st_;
  bool between_members_ = false;
};

}  // namespace

std::unique_ptr<Filter> make_isal_gzip_compressor(int level) {
  if (level < 0 || level > ISAL_DEF_MAX_LEVEL)
    throw Error(Code::invalid_argument, fmt::format("isa-l gzip level {} is out of range 0..{}", level, ISAL_DEF_MAX_LEVEL));
  return std::make_unique<IsalCompressor>(level);
}

std::unique_ptr<Filter> make_isal_gzip_decompressor() { return std::make_unique<IsalDecompressor>(); }

}  // namespace mevbackup
