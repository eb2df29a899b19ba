// One error type for the whole core: a code the C API maps 1:1 onto mevb_status,
// and a message that names what failed. Messages never carry secrets.
#pragma once

#include <stdexcept>
#include <string>

namespace mevbackup {

// Values are pinned: they are the C API's mevb_status values. Append only.
enum class Code : int {
  ok = 0,
  invalid_argument = 1,
  no_memory = 2,
  internal = 3,
  io = 4,
  not_found = 5,
  exists = 6,
  cancelled = 7,
  connection = 8,
  auth = 9,
  dump_failed = 10,
  restore_failed = 11,
  corrupt = 12,
  version_mismatch = 13,
  not_empty = 14,
  no_space = 15,
  permission = 16,
  unsupported = 17,
  locked = 18,  // the repository is locked by another run (lock.hpp)
};

const char* code_name(Code c) noexcept;

class Error : public std::runtime_error {
 public:
  Error(Code code, std::string message, bool retriable = false)
      : std::runtime_error(std::move(message)), code_(code), retriable_(retriable) {}
  Code code() const noexcept { return code_; }
  bool retriable() const noexcept { return retriable_; }

 private:
  Code code_;
  bool retriable_;
};

// Builds an Error from errno: ENOSPC -> no_space, EACCES/EPERM/EROFS -> permission,
// ENOENT -> not_found, anything else -> io. `what` names the operation and the path.
Error sys_error(int err, const std::string& what);

// Folds a multi-line message (libpq's, a child's stderr) into one line: lines joined
// with "; ", tabs and repeated blanks squeezed, trailing whitespace dropped.
std::string one_line(const std::string& text);

}  // namespace mevbackup
