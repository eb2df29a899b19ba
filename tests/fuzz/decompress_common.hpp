// Drives a decompressing Filter the way the Pipeline does (src/io/pipeline.cpp): input
// in chunks, output into a bounded buffer, finish=true on the last call, and the same
// "no progress" rule. Output beyond `cap` bytes is dropped (a small input can inflate
// to gigabytes). Used by the gzip and zstd fuzz targets.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "mevbackup/compress.hpp"
#include "mevbackup/error.hpp"

namespace fuzzsupport {

struct Outcome {
  bool ok = false;
  bool capped = false;
  mevbackup::Code code = mevbackup::Code::ok;
  std::vector<std::byte> out;
};

inline Outcome drive(mevbackup::Filter& f, const uint8_t* data, size_t size, size_t in_chunk, size_t out_room,
                     size_t cap) {
  using namespace mevbackup;
  Outcome r;
  std::vector<std::byte> buf(out_room);
  try {
    size_t pos = 0;
    for (;;) {
      bool last = pos >= size;
      size_t n = last ? 0 : std::min(in_chunk, size - pos);
      InBuf ib{reinterpret_cast<const std::byte*>(data) + pos, n, 0};
      for (;;) {
        OutBuf ob{buf.data(), buf.size(), 0};
        size_t in_before = ib.pos;
        bool done = f.process(ib, ob, last);
        if (ib.pos > ib.n || ob.pos > ob.n) std::abort();  // a filter overran its buffers
        r.out.insert(r.out.end(), buf.begin(), buf.begin() + static_cast<long>(ob.pos));
        if (r.out.size() > cap) {
          r.capped = true;
          return r;
        }
        bool progressed = ib.pos != in_before || ob.pos != 0 || ob.room() == 0;
        if (last ? done : ib.left() == 0) break;
        if (!progressed) {
          // The pipeline turns this into Code::internal: a filter must either move or
          // say what is wrong with its input.
          std::abort();
        }
      }
      pos += n;
      if (last) break;
    }
    r.ok = true;
  } catch (const Error& e) {
    r.code = e.code();
    if (e.code() != Code::corrupt) std::abort();  // bad input is "corrupt", nothing else
  }
  return r;
}

}  // namespace fuzzsupport
