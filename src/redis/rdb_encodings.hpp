// Integrity checks of the packed encodings an RDB value may hold (ziplist, listpack,
// intset, zipmap), as strict as Redis' own ziplistValidateIntegrity,
// lpValidateIntegrity(AndDups), intsetValidateIntegrity and zipmapValidateIntegrity
// with deep sanitization: a blob that passes here is one redis-server loads.
//
// Each check reads only inside the blob, never allocates from a length field, and
// returns the number of entries, or throws Error(corrupt) saying what is wrong
// (without a position: the caller knows where the blob was).
#pragma once

#include <cstdint>
#include <string_view>

namespace mevbackup::redis {

// How entries group: 1 (list, set), 2 (hash and zset pairs), 3 (hash field, value,
// TTL). With `unique_first`, the first element of every group must be unique.
struct PackShape {
  unsigned group = 1;
  bool unique_first = false;
};

uint64_t check_ziplist(std::string_view zl, PackShape shape = {});
uint64_t check_listpack(std::string_view lp, PackShape shape = {});
// The number of integers (at least 1: Redis refuses an empty intset).
uint64_t check_intset(std::string_view is);
// The number of field/value pairs (at least 1; fields unique).
uint64_t check_zipmap(std::string_view zm);

}  // namespace mevbackup::redis
