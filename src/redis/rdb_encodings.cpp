#include "rdb_encodings.hpp"

#include <string>
#include <unordered_set>

#include <fmt/format.h>

#include "mevbackup/error.hpp"

namespace mevbackup::redis {

namespace {

[[noreturn]] void bad(const char* what, const std::string& why) {
  throw Error(Code::corrupt, fmt::format("{}: {}", what, why));
}

uint64_t le(const unsigned char* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

int64_t sle(const unsigned char* p, int n) {
  uint64_t v = le(p, n);
  if (n < 8 && (v >> (8 * n - 1)) & 1) v |= ~0ull << (8 * n);  // sign-extend
  return static_cast<int64_t>(v);
}

// Remembers the first element of every group and refuses a repeated one.
class Groups {
 public:
  Groups(const char* what, PackShape s) : what_(what), s_(s.group ? s : PackShape{1, s.unique_first}) {}
  void add(std::string value) {
    if (s_.unique_first && count_ % s_.group == 0 && !seen_.insert(std::move(value)).second)
      bad(what_, fmt::format("element {} repeats an earlier one", count_));
    ++count_;
  }
  uint64_t finish() const {
    if (count_ % s_.group)
      bad(what_, fmt::format("{} elements do not make whole groups of {}", count_, s_.group));
    return count_;
  }

 private:
  const char* what_;
  PackShape s_;
  uint64_t count_ = 0;
  std::unordered_set<std::string> seen_;
};

}  // namespace

uint64_t check_ziplist(std::string_view blob, PackShape shape) {
  const char* what = "ziplist";
  auto* zl = reinterpret_cast<const unsigned char*>(blob.data());
  const size_t size = blob.size();
  if (size < 11) bad(what, fmt::format("{} bytes, shorter than a header and its end byte", size));
  if (le(zl, 4) != size) bad(what, fmt::format("zlbytes says {}, the blob has {} bytes", le(zl, 4), size));
  if (zl[size - 1] != 0xff) bad(what, "the last byte is not the zlend marker 0xff");
  const uint64_t tail = le(zl + 4, 4), header_count = le(zl + 8, 2);
  if (tail > size - 1) bad(what, fmt::format("zltail {} points past the end", tail));
  const size_t last = size - 1;  // where zlend sits
  Groups groups(what, shape);
  size_t p = 10, prev = 0, prev_size = 0;
  bool any = false;
  while (zl[p] != 0xff) {
    // prevlen: 1 byte, or 0xfe and 4 bytes
    size_t h = zl[p] == 0xfe ? 5 : 1;
    if (p + h > last) bad(what, fmt::format("entry at offset {} runs past the end", p));
    uint64_t prevlen = h == 5 ? le(zl + p + 1, 4) : zl[p];
    if (prevlen != prev_size)
      bad(what, fmt::format("entry at offset {} says the previous one has {} bytes, it has {}", p, prevlen, prev_size));
    if (p + 1 > last) bad(what, fmt::format("entry at offset {} has no encoding", p));
    const unsigned char enc = zl[p + h];
    size_t lensize = 0, len = 0;
    std::string value;
    bool is_int = true;
    int64_t iv = 0;
    auto need = [&](size_t n) {
      if (p + h + n > last) bad(what, fmt::format("entry at offset {} runs past the end", p));
    };
    switch (enc >> 6) {
      case 0: lensize = 1; len = enc & 0x3f; is_int = false; break;
      case 1: need(2); lensize = 2; len = ((enc & 0x3f) << 8) | zl[p + h + 1]; is_int = false; break;
      case 2: {
        need(5);
        lensize = 5;
        uint64_t l = 0;
        for (int i = 1; i <= 4; ++i) l = (l << 8) | zl[p + h + i];
        len = static_cast<size_t>(l);
        is_int = false;
        break;
      }
      default:
        lensize = 1;
        if (enc == 0xc0) len = 2;
        else if (enc == 0xd0) len = 4;
        else if (enc == 0xe0) len = 8;
        else if (enc == 0xf0) len = 3;
        else if (enc == 0xfe) len = 1;
        else if (enc >= 0xf1 && enc <= 0xfd) len = 0, iv = (enc & 0x0f) - 1;
        else bad(what, fmt::format("entry at offset {} has the unknown encoding 0x{:02x}", p, enc));
    }
    const size_t head = h + lensize;
    if (p + head > last || len > last - p - head)
      bad(what, fmt::format("entry at offset {} ({} bytes) runs past the end", p, head + len));
    const unsigned char* data = zl + p + head;
    if (is_int) {
      if (len) iv = sle(data, static_cast<int>(len));
      value = std::to_string(iv);
    } else if (shape.unique_first) {
      value.assign(reinterpret_cast<const char*>(data), len);
    }
    groups.add(std::move(value));
    prev = p;
    prev_size = head + len;
    p += prev_size;
    any = true;
  }
  if (p != last) bad(what, fmt::format("a 0xff byte at offset {} ends the entries before zlend", p));
  if (any && prev != tail) bad(what, fmt::format("zltail says {}, the last entry is at {}", tail, prev));
  uint64_t count = groups.finish();
  if (header_count != 0xffff && count != header_count)
    bad(what, fmt::format("zllen says {} entries, it holds {}", header_count, count));
  return count;
}

uint64_t check_listpack(std::string_view blob, PackShape shape) {
  const char* what = "listpack";
  auto* lp = reinterpret_cast<const unsigned char*>(blob.data());
  const size_t size = blob.size();
  if (size < 7) bad(what, fmt::format("{} bytes, shorter than a header and its terminator", size));
  if (le(lp, 4) != size) bad(what, fmt::format("its total-bytes field says {}, the blob has {} bytes", le(lp, 4), size));
  if (lp[size - 1] != 0xff) bad(what, "the last byte is not the terminator 0xff");
  const uint64_t header_count = le(lp + 4, 2);
  const size_t last = size - 1;
  Groups groups(what, shape);
  size_t p = 6;
  while (lp[p] != 0xff) {
    const unsigned char enc = lp[p];
    uint64_t len;         // encoding + data
    size_t data_at = 1;   // offset of a string's bytes
    bool is_str = false;
    int64_t iv = 0;
    auto need = [&](size_t n) {
      if (p + n > last) bad(what, fmt::format("entry at offset {} runs past the end", p));
    };
    if (enc < 0x80) {
      len = 1, iv = enc;
    } else if ((enc & 0xc0) == 0x80) {
      len = 1 + (enc & 0x3f), is_str = true;
    } else if ((enc & 0xe0) == 0xc0) {
      need(2);
      len = 2;
      iv = ((enc & 0x1f) << 8) | lp[p + 1];
      if (iv >= 1 << 12) iv -= 1 << 13;
    } else if ((enc & 0xf0) == 0xe0) {
      need(2);
      len = 2 + (((enc & 0x0f) << 8) | lp[p + 1]), data_at = 2, is_str = true;
    } else if (enc == 0xf0) {
      need(5);
      len = 5 + le(lp + p + 1, 4), data_at = 5, is_str = true;
    } else if (enc >= 0xf1 && enc <= 0xf4) {
      static const int widths[] = {2, 3, 4, 8};
      int w = widths[enc - 0xf1];
      need(1 + static_cast<size_t>(w));
      len = 1 + static_cast<uint64_t>(w);
      iv = sle(lp + p + 1, w);
    } else {
      bad(what, fmt::format("entry at offset {} has the unknown encoding 0x{:02x}", p, enc));
    }
    const uint64_t backlen_bytes = len <= 127 ? 1 : len < 16383 ? 2 : len < 2097151 ? 3 : len < 268435455 ? 4 : 5;
    if (len + backlen_bytes > last - p)
      bad(what, fmt::format("entry at offset {} ({} bytes) runs past the end", p, len + backlen_bytes));
    // The back-length, read right to left from the entry's last byte.
    size_t q = p + static_cast<size_t>(len + backlen_bytes) - 1;
    uint64_t back = 0;
    for (int shift = 0;; shift += 7) {
      if (shift > 28 || q < 6) bad(what, fmt::format("entry at offset {} has a malformed back-length", p));
      back |= static_cast<uint64_t>(lp[q] & 0x7f) << shift;
      if (!(lp[q] & 0x80)) break;
      --q;
    }
    if (back != len)
      bad(what, fmt::format("entry at offset {} has {} bytes but its back-length says {}", p, len, back));
    if (shape.unique_first) {
      groups.add(is_str ? std::string(reinterpret_cast<const char*>(lp + p + data_at), static_cast<size_t>(len) - data_at)
                        : std::to_string(iv));
    } else {
      groups.add({});
    }
    p += static_cast<size_t>(len + backlen_bytes);
  }
  if (p != last) bad(what, fmt::format("a 0xff byte at offset {} ends the entries before the terminator", p));
  uint64_t count = groups.finish();
  if (header_count != 0xffff && count != header_count)
    bad(what, fmt::format("its header says {} elements, it holds {}", header_count, count));
  return count;
}

uint64_t check_intset(std::string_view blob) {
  const char* what = "intset";
  auto* is = reinterpret_cast<const unsigned char*>(blob.data());
  if (blob.size() < 8) bad(what, fmt::format("{} bytes, shorter than its header", blob.size()));
  uint64_t enc = le(is, 4), count = le(is + 4, 4);
  if (enc != 2 && enc != 4 && enc != 8) bad(what, fmt::format("encoding {} (not 2, 4 or 8)", enc));
  if (8 + count * enc != blob.size())
    bad(what, fmt::format("{} integers of {} bytes do not fill its {} bytes", count, enc, blob.size()));
  if (count == 0) bad(what, "it is empty");
  for (uint64_t i = 1; i < count; ++i)
    if (sle(is + 8 + (i - 1) * enc, static_cast<int>(enc)) >= sle(is + 8 + i * enc, static_cast<int>(enc)))
      bad(what, fmt::format("integer {} is not greater than the one before (unsorted or repeated)", i));
  return count;
}

uint64_t check_zipmap(std::string_view blob) {
  const char* what = "zipmap";
  auto* zm = reinterpret_cast<const unsigned char*>(blob.data());
  const size_t size = blob.size();
  if (size < 2) bad(what, fmt::format("{} bytes, too short", size));
  if (zm[size - 1] != 0xff) bad(what, "the last byte is not the end marker 0xff");
  const size_t last = size - 1;
  std::unordered_set<std::string> fields;
  uint64_t count = 0;
  size_t p = 1;
  // A length: one byte below 254, else 254 (or 255) and 4 bytes.
  auto length = [&](size_t at, uint64_t& len) -> size_t {
    size_t s = zm[at] < 254 ? 1 : 5;
    if (at + s > last) bad(what, fmt::format("a length at offset {} runs past the end", at));
    len = s == 1 ? zm[at] : le(zm + at + 1, 4);
    return s;
  };
  while (zm[p] != 0xff) {
    uint64_t flen, vlen;
    size_t s = length(p, flen);
    if (flen > last - p - s) bad(what, fmt::format("field at offset {} runs past the end", p));
    std::string field(reinterpret_cast<const char*>(zm + p + s), static_cast<size_t>(flen));
    p += s + static_cast<size_t>(flen);
    s = length(p, vlen);
    p += s;
    if (p > last) bad(what, fmt::format("value at offset {} runs past the end", p));
    uint64_t free = zm[p++];
    if (vlen + free > last - std::min(p, last)) bad(what, fmt::format("value at offset {} runs past the end", p));
    p += static_cast<size_t>(vlen + free);
    if (p > last) bad(what, fmt::format("value at offset {} runs past the end", p));
    if (!fields.insert(std::move(field)).second) bad(what, fmt::format("field {} repeats an earlier one", count));
    ++count;
  }
  if (count == 0) bad(what, "it is empty");
  if (zm[0] != 254 && zm[0] != count) bad(what, fmt::format("its header says {} pairs, it holds {}", zm[0], count));
  return count;
}

}  // namespace mevbackup::redis
