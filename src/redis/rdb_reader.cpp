#include "rdb_reader.hpp"

#include <array>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <unordered_set>

#include <fmt/format.h>

#include "mevbackup/digest.hpp"
#include "rdb_encodings.hpp"

namespace mevbackup::redis {

namespace {

// Reflected table of the Jones polynomial 0xad93d23594c935a9 (bit-reversed: 0x95ac9329ac4bc9b5).
std::array<uint64_t, 256> make_table() {
  std::array<uint64_t, 256> t{};
  for (uint64_t i = 0; i < 256; ++i) {
    uint64_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x95ac9329ac4bc9b5ull : c >> 1;
    t[i] = c;
  }
  return t;
}

const std::array<uint64_t, 256>& table() {
  static const std::array<uint64_t, 256> t = make_table();
  return t;
}

enum : uint8_t {
  kOpSlotInfo = 0xF4, kOpFunction2 = 0xF5, kOpFunctionPreGa = 0xF6, kOpModuleAux = 0xF7, kOpIdle = 0xF8, kOpFreq = 0xF9,
  kOpAux = 0xFA, kOpResizeDb = 0xFB, kOpExpireMs = 0xFC, kOpExpire = 0xFD, kOpSelectDb = 0xFE, kOpEof = 0xFF,
};

// LZF decompression into exactly `out_len` bytes; false on any inconsistency.
bool lzf_decompress(const std::string& in, std::string& out, size_t out_len) {
  out.clear();
  out.reserve(out_len);
  size_t ip = 0;
  while (ip < in.size()) {
    unsigned ctrl = static_cast<unsigned char>(in[ip++]);
    if (ctrl < 32) {  // literal run of ctrl+1 bytes
      size_t n = ctrl + 1;
      if (ip + n > in.size() || out.size() + n > out_len) return false;
      out.append(in, ip, n);
      ip += n;
    } else {  // back reference
      size_t len = ctrl >> 5;
      if (len == 7) {
        if (ip >= in.size()) return false;
        len += static_cast<unsigned char>(in[ip++]);
      }
      if (ip >= in.size()) return false;
      size_t back = ((ctrl & 0x1f) << 8) + static_cast<unsigned char>(in[ip++]) + 1;
      len += 2;
      if (back > out.size() || out.size() + len > out_len) return false;
      size_t from = out.size() - back;
      for (size_t i = 0; i < len; ++i) out.push_back(out[from + i]);  // may overlap
    }
  }
  return out.size() == out_len;
}

}  // namespace

uint64_t crc64(uint64_t crc, const void* data, size_t n) {
  auto& t = table();
  auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) crc = t[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

const char* rdb_type_family(int type) {
  switch (type) {
    case kString: return "string";
    case kList: case kListZiplist: case kListQuicklist: case kListQuicklist2: return "list";
    case kSet: case kSetIntset: case kSetListpack: return "set";
    case kZset: case kZset2: case kZsetZiplist: case kZsetListpack: return "zset";
    case kHash: case kHashZipmap: case kHashZiplist: case kHashListpack: case kHashMetadataPreGa:
    case kHashListpackExPreGa: case kHashMetadata: case kHashListpackEx: return "hash";
    case kStreamListpacks: case kStreamListpacks2: case kStreamListpacks3: return "stream";
    case kModule2: return "module";
    default: return "unknown";
  }
}

RdbReader::RdbReader(Source& src, RdbLimits limits) : src_(src), lim_(limits), buf_(64 * 1024) {}

void RdbReader::fail(const std::string& what) const {
  throw Error(Code::corrupt, fmt::format("RDB corrupt at byte {}: {}", pos_, what));
}

void RdbReader::fill(size_t need) {
  if (end_ - beg_ >= need) return;
  if (beg_) {
    std::memmove(buf_.data(), buf_.data() + beg_, end_ - beg_);
    end_ -= beg_;
    beg_ = 0;
  }
  while (end_ < need) {
    size_t n = eof_ ? 0 : src_.read(MutBytes(buf_.data() + end_, buf_.size() - end_));
    if (n == 0) {
      eof_ = true;
      fail("the file ends too early (truncated)");
    }
    end_ += n;
  }
}

// Every consumed byte goes through here: the CRC, the position and the capture.
#define MEVB_CONSUME(ptr, n)                                                          \
  do {                                                                                \
    crc_ = crc64(crc_, (ptr), (n));                                                   \
    pos_ += (n);                                                                      \
    if (cap_) {                                                                       \
      if (cap_->size() + (n) > lim_.max_value) fail("a value is larger than allowed"); \
      cap_->append(reinterpret_cast<const char*>(ptr), (n));                          \
    }                                                                                 \
  } while (0)

uint8_t RdbReader::u8() {
  fill(1);
  const std::byte* p = buf_.data() + beg_;
  MEVB_CONSUME(p, 1);
  ++beg_;
  return static_cast<uint8_t>(*p);
}

void RdbReader::raw(void* out, size_t n) {
  auto* o = static_cast<char*>(out);
  while (n) {
    fill(1);
    size_t k = std::min(n, end_ - beg_);
    std::memcpy(o, buf_.data() + beg_, k);
    MEVB_CONSUME(buf_.data() + beg_, k);
    beg_ += k;
    o += k;
    n -= k;
  }
}

void RdbReader::skip(uint64_t n) {
  while (n) {
    fill(1);
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, end_ - beg_));
    MEVB_CONSUME(buf_.data() + beg_, k);
    beg_ += k;
    n -= k;
  }
}

uint64_t RdbReader::length(bool* encoded) {
  if (encoded) *encoded = false;
  uint8_t b = u8();
  switch (b >> 6) {
    case 0: return b & 0x3f;
    case 1: return (static_cast<uint64_t>(b & 0x3f) << 8) | u8();
    case 2: {
      int n = b == 0x80 ? 4 : b == 0x81 ? 8 : 0;
      if (!n) fail(fmt::format("bad length prefix 0x{:02x}", b));
      uint64_t v = 0;
      for (int i = 0; i < n; ++i) v = (v << 8) | u8();
      return v;
    }
    default:
      if (!encoded) fail("an encoded string where a length belongs");
      *encoded = true;
      return b & 0x3f;
  }
}

std::string RdbReader::string(uint64_t max) {
  bool enc;
  uint64_t len = length(&enc);
  if (enc) {
    switch (len) {
      case 0: return std::to_string(static_cast<int8_t>(u8()));
      case 1: {
        uint8_t b[2];
        raw(b, 2);
        return std::to_string(static_cast<int16_t>(b[0] | (b[1] << 8)));
      }
      case 2: {
        uint8_t b[4];
        raw(b, 4);
        return std::to_string(static_cast<int32_t>(b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24)));
      }
      case 3: {
        uint64_t clen = length(), ulen = length();
        if (clen > max || ulen > max) fail(fmt::format("a compressed string of {} bytes exceeds the limit", ulen));
        if (ulen > clen * 100 + 64) fail("an LZF string claims an impossible expansion");
        std::string c;
        while (c.size() < clen) {
          size_t k = static_cast<size_t>(std::min<uint64_t>(clen - c.size(), 64 * 1024));
          size_t at = c.size();
          c.resize(at + k);
          raw(c.data() + at, k);
        }
        std::string out;
        if (!lzf_decompress(c, out, static_cast<size_t>(ulen))) fail("an LZF string does not decompress");
        return out;
      }
      default: fail(fmt::format("unknown string encoding {}", len));
    }
  }
  if (len > max) fail(fmt::format("a string of {} bytes exceeds the limit", len));
  std::string s;
  while (s.size() < len) {
    size_t k = static_cast<size_t>(std::min<uint64_t>(len - s.size(), 64 * 1024));
    size_t at = s.size();
    s.resize(at + k);
    raw(s.data() + at, k);
  }
  return s;
}

void RdbReader::skip_string() {
  bool enc;
  uint64_t len = length(&enc);
  if (enc) {
    switch (len) {
      case 0: skip(1); return;
      case 1: skip(2); return;
      case 2: skip(4); return;
      case 3: {
        uint64_t clen = length(), ulen = length();
        if (clen > lim_.max_string || ulen > lim_.max_string) fail("a compressed string exceeds the limit");
        skip(clen);
        return;
      }
      default: fail(fmt::format("unknown string encoding {}", len));
    }
  }
  if (len > lim_.max_string) fail(fmt::format("a string of {} bytes exceeds the limit", len));
  skip(len);
}

uint64_t RdbReader::module_value() {
  // Module-serialized data: (opcode, value) pairs up to RDB_MODULE_OPCODE_EOF.
  for (uint64_t i = 0;; ++i) {
    if (i > lim_.max_elements) fail("a module value never ends");
    uint64_t op = length();
    switch (op) {
      case 0: return i;
      case 1: case 2: length(); break;
      case 3: skip(4); break;
      case 4: skip(8); break;
      case 5: skip_string(); break;
      default: fail(fmt::format("unknown module opcode {}", op));
    }
  }
}

// A module type id: 9 characters of a 64-character set in the top 54 bits, the
// encoding version in the low 10.
std::string RdbReader::module_name(uint64_t id) const {
  static const char set[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string name;
  for (int j = 0; j < 9; ++j) name += set[(id >> (10 + (8 - j) * 6)) & 63];
  return name;
}

// A packed encoding (ziplist, listpack, intset, zipmap) as one string.
std::string RdbReader::blob(const char* what) {
  std::string b = string(lim_.max_string);
  if (b.empty()) fail(fmt::format("an empty {}", what));
  return b;
}

namespace {

bool is_nan_double(const unsigned char b[8]) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return ((v >> 52) & 0x7ff) == 0x7ff && (v & ((1ull << 52) - 1)) != 0;
}

constexpr uint64_t kHashExpireMax = (1ull << 48) - 1;  // EB_EXPIRE_TIME_MAX

}  // namespace

// Returns false for an empty collection (which Redis skips on load).
bool RdbReader::value(int type) {
  auto count = [&](uint64_t mul = 1) {
    uint64_t n = length();
    if (n > lim_.max_elements / mul) fail(fmt::format("a collection of {} elements exceeds the limit", n));
    return n;
  };
  // Members that must be unique (set members, hash fields, zset members).
  std::unordered_set<std::string> seen;
  auto unique = [&](std::string m, const char* what) {
    if (!seen.insert(std::move(m)).second) fail(fmt::format("a {} holds the same member twice", what));
  };
  switch (type) {
    case kString:
      skip_string();
      return true;
    case kList: {
      uint64_t n = count();
      for (uint64_t i = n; i; --i) skip_string();
      return n != 0;
    }
    case kSet: {
      uint64_t n = count();
      for (uint64_t i = n; i; --i) unique(string(lim_.max_string), "set");
      return n != 0;
    }
    case kHash: {
      uint64_t n = count(2);
      for (uint64_t i = n; i; --i) {
        unique(string(lim_.max_string), "hash");
        skip_string();
      }
      return n != 0;
    }
    case kZset: case kZset2: {
      uint64_t n = count();
      for (uint64_t i = n; i; --i) {
        unique(string(lim_.max_string), "sorted set");
        if (type == kZset2) {
          unsigned char b[8];
          raw(b, 8);
          if (is_nan_double(b)) fail("a sorted set member has a NaN score");
        } else {
          uint8_t l = u8();
          if (l == 253) fail("a sorted set member has a NaN score");
          if (l < 253) {
            std::string d(l, '\0');
            raw(d.data(), l);
            if (std::isnan(std::strtod(d.c_str(), nullptr))) fail("a sorted set member has a NaN score");
          }
        }
      }
      return n != 0;
    }
    case kHashMetadataPreGa: case kHashMetadata: {
      uint64_t min_expire = 0;
      if (type == kHashMetadata) {
        unsigned char b[8];
        raw(b, 8);
        for (int i = 7; i >= 0; --i) min_expire = (min_expire << 8) | b[i];
        if (min_expire > kHashExpireMax + 1) fail(fmt::format("a hash has the invalid minimum field expiry {}", min_expire));
      }
      uint64_t n = count(3);
      for (uint64_t i = n; i; --i) {
        uint64_t ttl = length();
        uint64_t at = type == kHashMetadata ? (ttl ? ttl + min_expire - 1 : 0) : ttl;
        if (at > kHashExpireMax) fail(fmt::format("a hash field has the invalid expiry {}", at));
        unique(string(lim_.max_string), "hash");
        skip_string();
      }
      return n != 0;
    }
    case kListQuicklist: case kListQuicklist2:
      return quicklist(type);
    case kModule2: {
      uint64_t id = length();  // module id (name and encoding version)
      ++module_values_[module_name(id)];
      module_value();
      return true;
    }
    case kStreamListpacks: case kStreamListpacks2: case kStreamListpacks3:
      stream(type);
      return true;
    default:
      return packed_value(type);
  }
}

bool RdbReader::packed_value(int type) {
  auto checked = [&](auto check) {
    try {
      return check();
    } catch (const Error& e) {
      if (e.code() != Code::corrupt) throw;
      fail(fmt::format("a value of type {}: {}", type, e.what()));
    }
  };
  switch (type) {
    case kHashZipmap: {
      std::string b = blob("zipmap");
      checked([&] { return check_zipmap(b); });
      return true;
    }
    case kListZiplist: {
      std::string b = blob("ziplist");
      return checked([&] { return check_ziplist(b); }) != 0;
    }
    case kZsetZiplist: case kHashZiplist: {
      std::string b = blob("ziplist");
      return checked([&] { return check_ziplist(b, {2, true}); }) != 0;
    }
    case kSetIntset: {
      std::string b = blob("intset");
      checked([&] { return check_intset(b); });
      return true;
    }
    case kSetListpack: case kZsetListpack: case kHashListpack: case kHashListpackExPreGa: case kHashListpackEx: {
      if (type == kHashListpackEx) skip(8);  // the minimum field expiry
      unsigned group = type == kSetListpack ? 1 : type == kZsetListpack || type == kHashListpack ? 2 : 3;
      std::string b = blob("listpack");
      return checked([&] { return check_listpack(b, {group, true}); }) != 0;
    }
    default:
      throw Error(Code::unsupported, fmt::format("RDB value type {} at byte {} is not supported", type, pos_));
  }
}

bool RdbReader::quicklist(int type) {
  uint64_t nodes = length();
  if (nodes > lim_.max_elements) fail(fmt::format("a list of {} nodes exceeds the limit", nodes));
  uint64_t elements = 0;
  for (uint64_t n = nodes; n; --n) {
    uint64_t container = 2;  // packed
    if (type == kListQuicklist2) {
      container = length();
      if (container != 1 && container != 2) fail(fmt::format("bad quicklist container {}", container));
    }
    std::string b = blob("quicklist node");
    if (container == 1) {
      ++elements;
      continue;
    }
    try {
      elements += type == kListQuicklist2 ? check_listpack(b) : check_ziplist(b);
    } catch (const Error& e) {
      if (e.code() != Code::corrupt) throw;
      fail(fmt::format("a quicklist node: {}", e.what()));
    }
  }
  return elements != 0;  // empty nodes are dropped on load, an empty list is skipped
}

void RdbReader::stream(int type) {
  auto count = [&] {
    uint64_t n = length();
    if (n > lim_.max_elements) fail(fmt::format("a collection of {} elements exceeds the limit", n));
    return n;
  };
  uint64_t listpacks = count();
  for (uint64_t n = listpacks; n; --n) {
    std::string nodekey = string(64);
    if (nodekey.size() != 16) fail("a stream node key is not 16 bytes");
    std::string b = string(lim_.max_string);
    try {
      if (check_listpack(b) == 0) fail("an empty listpack inside a stream");
    } catch (const Error& e) {
      if (e.code() != Code::corrupt) throw;
      fail(fmt::format("a stream node: {}", e.what()));
    }
  }
  uint64_t entries = length();
  if (entries && !listpacks) fail("a stream of entries without listpacks");
  length();  // last id ms
  length();  // last id seq
  if (type >= kStreamListpacks2)
    for (int i = 0; i < 5; ++i) length();  // first id, max deleted id, entries added
  for (uint64_t g = count(); g; --g) {
    skip_string();  // group name
    length();
    length();  // last delivered id
    if (type >= kStreamListpacks2) length();  // entries read
    for (uint64_t p = count(); p; --p) {
      skip(16);  // entry id
      skip(8);   // delivery time
      length();  // delivery count
    }
    for (uint64_t c = count(); c; --c) {
      skip_string();  // consumer name
      skip(8);        // seen time
      if (type >= kStreamListpacks3) skip(8);  // active time
      for (uint64_t p = count(); p; --p) skip(16);
    }
  }
}

int RdbReader::version() {
  if (version_ >= 0) return version_;
  char head[9];
  raw(head, 9);
  if (std::memcmp(head, "REDIS", 5) != 0) fail("no REDIS header");
  int v = 0;
  for (int i = 5; i < 9; ++i) {
    if (head[i] < '0' || head[i] > '9') fail("bad version digits in the header");
    v = v * 10 + (head[i] - '0');
  }
  if (v < 1 || v > lim_.max_version)
    throw Error(Code::unsupported, fmt::format("RDB version {} is not supported (at most {})", v, lim_.max_version));
  version_ = v;
  return v;
}

bool RdbReader::next(RdbEntry& e, bool capture) {
  version();
  if (done_) return false;
  int64_t expire = -1;
  for (;;) {
    uint8_t t = u8();
    switch (t) {
      case kOpExpire: {
        uint8_t b[4];
        raw(b, 4);
        expire = static_cast<int64_t>(b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24)) * 1000;
        continue;
      }
      case kOpExpireMs: {
        uint8_t b[8];
        raw(b, 8);
        uint64_t v = 0;
        for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
        expire = static_cast<int64_t>(v);
        continue;
      }
      case kOpFreq: u8(); continue;
      case kOpIdle: length(); continue;
      case kOpSelectDb: {
        uint64_t db = length();
        if (db > 1000000) fail(fmt::format("database number {} is not plausible", db));
        db_ = static_cast<int>(db);
        continue;
      }
      case kOpResizeDb: length(); length(); continue;
      case kOpAux: {
        std::string k = string(1024);
        std::string v = string(lim_.max_string);
        if (aux_.size() < 64 && v.size() <= 1024) aux_[k] = v;
        continue;
      }
      case kOpSlotInfo: length(); length(); length(); continue;  // slot id, keys, expires (cluster)
      case kOpModuleAux: {
        uint64_t id = length();
        if (length() != 2) fail("a module aux field without its 'when' opcode");
        length();
        module_value();
        ++module_aux_[module_name(id)];
        continue;
      }
      case kOpFunction2: {
        std::string code = string(lim_.max_string);
        ++function_count_;
        if (keep_functions_) functions_.push_back(std::move(code));
        continue;
      }
      case kOpFunctionPreGa:
        throw Error(Code::unsupported, "RDB functions of Redis 7.0 release candidates are not supported");
      case kOpEof: {
        uint64_t computed = crc_;
        if (version_ >= 5) {
          fill(8);
          uint64_t stored = 0;
          for (int i = 7; i >= 0; --i) stored = (stored << 8) | static_cast<uint8_t>(buf_[beg_ + i]);
          beg_ += 8;
          pos_ += 8;
          if (stored != 0) {
            if (stored != computed)
              fail(fmt::format("CRC-64 mismatch: the footer says {:016x}, the data gives {:016x}", stored, computed));
            crc_checked_ = true;
          }
        }
        done_ = true;
        return false;
      }
      default: {
        e.db = db_;
        e.type = t;
        e.expire_ms = expire;
        e.value.clear();
        e.key = string(lim_.max_string);
        if (std::string_view(rdb_type_family(t)) == "unknown")
          throw Error(Code::unsupported, fmt::format("RDB value type {} of key at byte {} is not supported", t, pos_));
        if (capture) cap_ = &e.value;
        bool loaded;
        try {
          loaded = value(t);
        } catch (...) {
          cap_ = nullptr;
          throw;
        }
        cap_ = nullptr;
        if (!loaded) {  // an empty collection: Redis skips it on load
          ++empty_skipped_;
          expire = -1;
          continue;
        }
        return true;
      }
    }
  }
}

#undef MEVB_CONSUME

std::string dump_payload(int type, const std::string& value, int rdb_version) {
  std::string p;
  p.reserve(value.size() + 11);
  p += static_cast<char>(type);
  p += value;
  p += static_cast<char>(rdb_version & 0xff);
  p += static_cast<char>((rdb_version >> 8) & 0xff);
  uint64_t crc = crc64(0, p.data(), p.size());
  for (int i = 0; i < 8; ++i) p += static_cast<char>((crc >> (8 * i)) & 0xff);
  return p;
}

RdbSummary summarize_rdb(Source& src, uint64_t sample_size, RdbLimits limits) {
  RdbReader r(src, limits);
  RdbSummary s;
  s.version = r.version();
  Sha256 sha;
  RdbEntry e;
  while (r.next(e)) {
    ++s.keys[e.db];
    if (e.expire_ms >= 0) ++s.expires[e.db];
    ++s.types[rdb_type_family(e.type)];
    if (s.sample < sample_size) {
      std::string line = fmt::format("{}\t{}\t", e.db, rdb_type_family(e.type));
      line += e.key;
      line += '\n';
      sha.update(Bytes(reinterpret_cast<const std::byte*>(line.data()), line.size()));
      ++s.sample;
    }
  }
  sha.finish();
  s.sample_sha256 = sha.hex();
  s.checksum_verified = r.checksum_verified();
  s.functions = r.functions();
  s.module_values = r.module_values();
  s.module_aux = r.module_aux();
  s.empty_keys_skipped = r.empty_keys_skipped();
  s.bytes = r.bytes_read();
  return s;
}

struct RdbSummaryObserver::Impl final : Source {
  std::mutex m;
  std::condition_variable cv;
  std::deque<std::vector<std::byte>> q;
  std::vector<std::byte> cur;
  size_t cur_pos = 0;
  bool ended = false, aborted = false, stopped = false;
  bool failed = false;  // stopped with an error other than unsupported
  uint64_t shown = 0;  // bytes given to update()
  RdbSummary summary;
  std::exception_ptr error;
  std::thread th;
  static constexpr size_t kMaxQueued = 8;

  size_t read(MutBytes buf) override {
    if (cur_pos == cur.size()) {
      std::unique_lock lk(m);
      cv.wait(lk, [&] { return !q.empty() || ended || aborted; });
      if (aborted) throw Error(Code::cancelled, "RDB check stopped");
      if (q.empty()) return 0;
      cur = std::move(q.front());
      q.pop_front();
      cur_pos = 0;
      cv.notify_all();
    }
    size_t n = std::min(buf.size(), cur.size() - cur_pos);
    std::memcpy(buf.data(), cur.data() + cur_pos, n);
    cur_pos += n;
    return n;
  }
};

RdbSummaryObserver::RdbSummaryObserver(std::function<void(Source&)> parse, uint64_t sample_size)
    : impl_(std::make_unique<Impl>()) {
  Impl* im = impl_.get();
  im->th = std::thread([im, parse = std::move(parse), sample_size] {
    try {
      if (parse) parse(*im);
      else im->summary = summarize_rdb(*im, sample_size);
    } catch (const Error& e) {
      im->error = std::current_exception();
      im->failed = e.code() != Code::unsupported;
    } catch (...) {
      im->error = std::current_exception();
      im->failed = true;
    }
    std::lock_guard lk(im->m);
    im->stopped = true;
    im->q.clear();
    im->cv.notify_all();
  });
}

RdbSummaryObserver::~RdbSummaryObserver() {
  {
    std::lock_guard lk(impl_->m);
    impl_->aborted = true;
    impl_->cv.notify_all();
  }
  if (impl_->th.joinable()) impl_->th.join();
}

void RdbSummaryObserver::update(Bytes data) {
  std::unique_lock lk(impl_->m);
  impl_->cv.wait(lk, [&] { return impl_->q.size() < Impl::kMaxQueued || impl_->stopped; });
  impl_->shown += data.size();
  if (impl_->stopped) {
    if (impl_->failed) std::rethrow_exception(impl_->error);
    return;  // the parse ended (done, or a type not understood): the rest is not needed
  }
  impl_->q.emplace_back(data.begin(), data.end());
  impl_->cv.notify_all();
}

void RdbSummaryObserver::finish() {
  std::lock_guard lk(impl_->m);
  impl_->ended = true;
  impl_->cv.notify_all();
}

uint64_t RdbSummaryObserver::trailing_bytes() const {
  std::lock_guard lk(impl_->m);
  if (!impl_->stopped || impl_->error || !impl_->summary.bytes) return 0;
  return impl_->shown - impl_->summary.bytes;
}

RdbSummary RdbSummaryObserver::result() {
  finish();
  if (impl_->th.joinable()) impl_->th.join();
  if (impl_->error) std::rethrow_exception(impl_->error);
  return impl_->summary;
}

}  // namespace mevbackup::redis
