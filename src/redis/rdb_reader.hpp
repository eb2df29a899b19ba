// A streaming reader of Redis RDB files (versions 1 to 12): it pulls bytes from a
// Source and hands out one key at a time, never holding more than one value (and only
// when asked to capture it). Every value is checked as redis-server checks it on
// load (the packed encodings inside too, see rdb_encodings.hpp), so a file that reads
// here is one Redis loads. Every length is bounded and no allocation is sized from
// a length field before the bytes arrived, so any input, however hostile, ends in an
// Error(corrupt) or Error(unsupported), never in a crash or a huge allocation.
//
// Thread safety: one reader per thread. Errors: throws mevbackup::Error.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mevbackup/stream.hpp"

namespace mevbackup::redis {

// CRC-64/Jones as Redis uses it (polynomial 0xad93d23594c935a9, reflected, init 0,
// no final xor): crc64(0, "123456789") == 0xe9c6d914c4b8d9ca.
uint64_t crc64(uint64_t crc, const void* data, size_t n);

// RDB value types (the byte before a key).
enum RdbType : int {
  kString = 0, kList = 1, kSet = 2, kZset = 3, kHash = 4, kZset2 = 5, kModule2 = 7,
  kHashZipmap = 9, kListZiplist = 10, kSetIntset = 11, kZsetZiplist = 12, kHashZiplist = 13,
  kListQuicklist = 14, kStreamListpacks = 15, kHashListpack = 16, kZsetListpack = 17,
  kListQuicklist2 = 18, kStreamListpacks2 = 19, kSetListpack = 20, kStreamListpacks3 = 21,
  // Hash field expiry (RDB 12, Redis 7.4): the _PRE_GA forms are those of 7.4 release
  // candidates, without the minimum expiry in front.
  kHashMetadataPreGa = 22, kHashListpackExPreGa = 23, kHashMetadata = 24, kHashListpackEx = 25,
};
// "string", "list", "set", "zset", "hash", "stream", "module" (or "unknown").
const char* rdb_type_family(int type);

struct RdbLimits {
  uint64_t max_string = 512ull << 20;    // one string (Redis' proto-max-bulk-len default)
  uint64_t max_value = 1ull << 30;       // captured bytes of one value
  uint64_t max_elements = 1ull << 32;    // elements of one collection
  int max_version = 12;
};

struct RdbEntry {
  int db = 0;
  std::string key;
  int type = 0;
  int64_t expire_ms = -1;        // absolute Unix time in ms, -1: none
  std::string value;             // the raw value encoding (as in DUMP), when capturing
};

class RdbReader {
 public:
  explicit RdbReader(Source& src, RdbLimits limits = {});
  // Reads the "REDIS" header (once). Throws corrupt / unsupported.
  int version();
  // The next key, or false after the EOF opcode and a matching CRC-64 footer. With
  // `capture`, e.value holds the value's raw encoding, ready for a DUMP payload.
  bool next(RdbEntry& e, bool capture = false);
  // Function libraries (their code, as FUNCTION RESTORE takes it) are kept for
  // take_functions() when asked; they are always counted.
  void keep_functions(bool on) { keep_functions_ = on; }
  std::vector<std::string> take_functions() {
    std::vector<std::string> out;
    out.swap(functions_);
    return out;
  }
  uint64_t functions() const { return function_count_; }
  // Module data seen so far, per module type name: values (keys) and aux records.
  const std::map<std::string, uint64_t>& module_values() const { return module_values_; }
  const std::map<std::string, uint64_t>& module_aux() const { return module_aux_; }
  // Empty collections, which Redis skips on load (and next() skips too).
  uint64_t empty_keys_skipped() const { return empty_skipped_; }
  // Aux fields seen so far ("redis-ver", "ctime", ...).
  const std::map<std::string, std::string>& aux() const { return aux_; }
  uint64_t bytes_read() const { return pos_; }
  bool checksum_verified() const { return crc_checked_; }

 private:
  void fill(size_t need);
  uint8_t u8();
  void raw(void* out, size_t n);
  void skip(uint64_t n);
  uint64_t length(bool* encoded = nullptr);
  std::string string(uint64_t max);
  void skip_string();
  bool value(int type);
  bool packed_value(int type);
  bool quicklist(int type);
  void stream(int type);
  uint64_t module_value();
  std::string module_name(uint64_t id) const;
  std::string blob(const char* what);
  [[noreturn]] void fail(const std::string& what) const;

  Source& src_;
  RdbLimits lim_;
  std::vector<std::byte> buf_;
  size_t beg_ = 0, end_ = 0;
  bool eof_ = false;
  uint64_t pos_ = 0;
  uint64_t crc_ = 0;
  int version_ = -1;
  int db_ = 0;
  bool done_ = false, crc_checked_ = false;
  bool capture_ = false;
  std::string* cap_ = nullptr;
  std::map<std::string, std::string> aux_;
  bool keep_functions_ = false;
  std::vector<std::string> functions_;
  uint64_t function_count_ = 0, empty_skipped_ = 0;
  std::map<std::string, uint64_t> module_values_, module_aux_;
};

// The DUMP payload of a value: the type byte, the raw encoding, the 2-byte RDB
// version and the CRC-64 of all that, as RESTORE expects.
std::string dump_payload(int type, const std::string& value, int rdb_version);

// Key counts and a digest of a key sample, for a manifest and for verification.
struct RdbSummary {
  int version = 0;
  std::map<int, uint64_t> keys;      // per database
  std::map<int, uint64_t> expires;
  std::map<std::string, uint64_t> types;  // per type family
  std::string sample_sha256;         // of the first `sample` keys: db, key, type family
  uint64_t sample = 0;
  bool checksum_verified = false;
  uint64_t functions = 0;                 // function libraries
  std::map<std::string, uint64_t> module_values;  // keys per module type name
  std::map<std::string, uint64_t> module_aux;     // aux records per module type name
  uint64_t empty_keys_skipped = 0;        // empty collections Redis would not load
  uint64_t bytes = 0;                     // the RDB's length, up to its CRC
};
RdbSummary summarize_rdb(Source& src, uint64_t sample_size = 1000, RdbLimits limits = {});

// summarize_rdb() as an Observer: the bytes it is shown are parsed on a thread of its
// own, through a bounded queue (so memory stays flat and a slow parse slows the
// stream down rather than piling up). result() waits for the parse and throws its
// error. Bytes after the RDB's end are ignored.
class RdbSummaryObserver final : public Observer {
 public:
  explicit RdbSummaryObserver(uint64_t sample_size = 1000) : RdbSummaryObserver(nullptr, sample_size) {}
  // Runs `parse` (instead of summarize_rdb) over the bytes shown; result() then gives
  // an empty summary but still throws parse's error.
  explicit RdbSummaryObserver(std::function<void(Source&)> parse) : RdbSummaryObserver(std::move(parse), 0) {}
  ~RdbSummaryObserver() override;
  RdbSummaryObserver(const RdbSummaryObserver&) = delete;
  RdbSummaryObserver& operator=(const RdbSummaryObserver&) = delete;
  // Throws the parse's error as soon as it failed (with anything but unsupported),
  // so that no byte more of a stream known to be bad is taken.
  void update(Bytes data) override;
  void finish() override;
  RdbSummary result();
  // Bytes shown after the RDB's end (its EOF opcode and CRC), once the parse ended.
  uint64_t trailing_bytes() const;

 private:
  RdbSummaryObserver(std::function<void(Source&)> parse, uint64_t sample_size);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mevbackup::redis
