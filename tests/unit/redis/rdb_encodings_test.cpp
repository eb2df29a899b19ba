#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "mevbackup/error.hpp"
#include "redis/rdb_encodings.hpp"

using namespace mevbackup;
using namespace mevbackup::redis;

namespace {

std::string le(uint64_t v, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// Listpack entries, laid out as listpack.c does: encoding, data, back-length.
std::string lp_str(const std::string& v) {
  std::string e = static_cast<char>(0x80 | v.size()) + v;
  return e + static_cast<char>(e.size());
}
std::string lp_int(int v) { return std::string(1, static_cast<char>(v)) + '\x01'; }  // 0..127
std::string listpack(const std::vector<std::string>& entries, int count = -1) {
  std::string body;
  for (auto& e : entries) body += e;
  return le(6 + body.size() + 1, 4) + le(count < 0 ? entries.size() : count, 2) + body + '\xff';
}

// A ziplist of short strings, laid out as ziplist.c does.
std::string ziplist(const std::vector<std::string>& items, int count = -1) {
  std::string body;
  size_t prev = 0, tail = 10;
  for (auto& s : items) {
    std::string e = std::string(1, static_cast<char>(prev)) + static_cast<char>(s.size()) + s;
    tail = 10 + body.size();
    body += e;
    prev = e.size();
  }
  return le(10 + body.size() + 1, 4) + le(tail, 4) + le(count < 0 ? items.size() : count, 2) + body + '\xff';
}

std::string intset(int enc, const std::vector<int64_t>& v) {
  std::string s = le(enc, 4) + le(v.size(), 4);
  for (auto x : v) s += le(static_cast<uint64_t>(x), enc);
  return s;
}

std::string refused(uint64_t (*check)(std::string_view, PackShape), const std::string& blob, PackShape shape = {}) {
  try {
    check(blob, shape);
  } catch (const Error& e) {
    CHECK(e.code() == Code::corrupt);
    return e.what();
  }
  FAIL("accepted");
  return {};
}

}  // namespace

TEST_CASE("listpack: entries counted, every inconsistency refused") {
  std::string good = listpack({lp_str("field"), lp_str("value"), lp_int(7), lp_str("x")});
  CHECK(check_listpack(good) == 4);
  CHECK(check_listpack(good, {2, true}) == 4);
  CHECK(check_listpack(listpack({})) == 0);
  CHECK(check_listpack(listpack({lp_str("a")}, 0xffff)) == 1);  // count unknown: any is fine

  std::string bad_back = good;
  bad_back[6 + 6] = 9;  // "field": 6 bytes, its back-length now says 9
  CHECK(refused(check_listpack, bad_back).find("back-length says 9") != std::string::npos);
  CHECK(refused(check_listpack, listpack({lp_str("a")}, 2)).find("says 2 elements, it holds 1") != std::string::npos);
  std::string bad_total = good;
  bad_total[0] = static_cast<char>(bad_total[0] + 1);
  CHECK(refused(check_listpack, bad_total).find("total-bytes") != std::string::npos);
  CHECK(refused(check_listpack, good.substr(0, good.size() - 1)).find("total-bytes") != std::string::npos);
  CHECK(refused(check_listpack, listpack({std::string("\xf5\x01", 2)})).find("unknown encoding 0xf5") !=
        std::string::npos);
  // A string running past the terminator.
  CHECK(refused(check_listpack, listpack({std::string("\x85") + "ab\x06"})).find("runs past") != std::string::npos);
  // Pairs: a field repeated, an odd count.
  CHECK(refused(check_listpack, listpack({lp_str("f"), lp_str("1"), lp_str("f"), lp_str("2")}), {2, true})
            .find("repeats") != std::string::npos);
  CHECK(refused(check_listpack, listpack({lp_str("f"), lp_str("1"), lp_str("g")}), {2, true}).find("groups of 2") !=
        std::string::npos);
  // The value of a pair may repeat; so may the TTL of a triple.
  CHECK(check_listpack(listpack({lp_str("f"), lp_str("1"), lp_str("g"), lp_str("1")}), {2, true}) == 4);
  // An integer and a string of the same digits are the same member.
  CHECK(refused(check_listpack, listpack({lp_int(12), lp_str("12")}), {1, true}).find("repeats") != std::string::npos);
}

TEST_CASE("ziplist: zlbytes, zltail, the prev-len chain, zllen and zlend are checked") {
  std::string good = ziplist({"one", "two", "three"});
  CHECK(check_ziplist(good) == 3);
  CHECK(check_ziplist(ziplist({})) == 0);
  CHECK(check_ziplist(ziplist({"a", "b"}, 0xffff)) == 2);

  std::string truncated = good.substr(0, good.size() - 4);
  CHECK(refused(check_ziplist, truncated).find("zlbytes says") != std::string::npos);
  std::string fixed_len = truncated;  // zlbytes made to match: the end byte is gone now
  fixed_len.replace(0, 4, le(fixed_len.size(), 4));
  CHECK_THROWS_AS(check_ziplist(fixed_len), Error);
  std::string bad_prev = good;
  bad_prev[10 + 5] = 9;  // the second entry's prev-len
  CHECK(refused(check_ziplist, bad_prev).find("previous one has 9 bytes") != std::string::npos);
  std::string bad_tail = good;
  bad_tail.replace(4, 4, le(15, 4));
  CHECK(refused(check_ziplist, bad_tail).find("zltail") != std::string::npos);
  CHECK(refused(check_ziplist, ziplist({"a"}, 3)).find("zllen says 3") != std::string::npos);
  std::string no_end = good;
  no_end.back() = '\x00';
  CHECK(refused(check_ziplist, no_end).find("zlend") != std::string::npos);
  std::string bad_int = ziplist({"a"});
  bad_int[11] = '\xc1';  // no such integer encoding
  CHECK(refused(check_ziplist, bad_int).find("unknown encoding 0xc1") != std::string::npos);
  CHECK(refused(check_ziplist, ziplist({"f", "1", "f", "2"}), {2, true}).find("repeats") != std::string::npos);
  CHECK(refused(check_ziplist, ziplist({"f", "1", "g"}), {2, true}).find("groups of 2") != std::string::npos);
}

TEST_CASE("intset: encoding 2/4/8, length, sorted and unique") {
  CHECK(check_intset(intset(2, {-5, 1, 300})) == 3);
  CHECK(check_intset(intset(8, {-(1ll << 40), 1ll << 40})) == 2);
  CHECK(refused([](std::string_view b, PackShape) { return check_intset(b); }, intset(3, {1, 2}))
            .find("encoding 3") != std::string::npos);
  CHECK(refused([](std::string_view b, PackShape) { return check_intset(b); }, intset(2, {2, 1}))
            .find("not greater") != std::string::npos);
  CHECK(refused([](std::string_view b, PackShape) { return check_intset(b); }, intset(2, {1, 1}))
            .find("not greater") != std::string::npos);
  CHECK(refused([](std::string_view b, PackShape) { return check_intset(b); }, intset(4, {}))
            .find("empty") != std::string::npos);
  std::string cut = intset(4, {1, 2});
  cut.pop_back();
  CHECK(refused([](std::string_view b, PackShape) { return check_intset(b); }, cut).find("do not fill") !=
        std::string::npos);
}

TEST_CASE("zipmap: lengths, end marker, pair count, unique fields") {
  // 2 pairs: a=xy (1 byte free), b=z.
  std::string zm = std::string("\x02\x01" "a" "\x02\x01" "xy?" "\x01" "b" "\x01\x00" "z" "\xff", 14);
  CHECK(check_zipmap(zm) == 2);
  std::string dup = zm;
  dup[9] = 'a';
  auto zipmap = [](std::string_view b, PackShape) { return check_zipmap(b); };
  CHECK(refused(zipmap, dup).find("repeats") != std::string::npos);
  std::string count = zm;
  count[0] = 3;
  CHECK(refused(zipmap, count).find("says 3 pairs") != std::string::npos);
  CHECK(refused(zipmap, std::string("\x00\xff", 2)).find("empty") != std::string::npos);
  CHECK_THROWS_AS(check_zipmap(zm.substr(0, 6) + "\xff"), Error);
}
