#include "mevbackup/error.hpp"

#include <cerrno>
#include <cstring>

namespace mevbackup {

const char* code_name(Code c) noexcept {
  switch (c) {
    case Code::ok: return "ok";
    case Code::invalid_argument: return "invalid argument";
    case Code::no_memory: return "out of memory";
    case Code::internal: return "internal error";
    case Code::io: return "I/O error";
    case Code::not_found: return "not found";
    case Code::exists: return "already exists";
    case Code::cancelled: return "cancelled";
    case Code::connection: return "connection failed";
    case Code::auth: return "authentication failed";
    case Code::dump_failed: return "dump failed";
    case Code::restore_failed: return "restore failed";
    case Code::corrupt: return "corrupt data";
    case Code::version_mismatch: return "version mismatch";
    case Code::not_empty: return "target not empty";
    case Code::no_space: return "no space left";
    case Code::permission: return "permission denied";
    case Code::unsupported: return "unsupported";
    case Code::locked: return "repository locked";
  }
  return "unknown status";
}

std::string one_line(const std::string& text) {
  std::string out;
  bool pending_sep = false;
  for (char c : text) {
    if (c == '\n' || c == '\r') {
      if (!out.empty()) pending_sep = true;
      continue;
    }
    if (c == '\t') c = ' ';
    if (pending_sep) {
      while (!out.empty() && out.back() == ' ') out.pop_back();
      out += "; ";
      pending_sep = false;
      if (c == ' ') continue;
    }
    if (c == ' ' && !out.empty() && out.back() == ' ') continue;
    out.push_back(c);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

Error sys_error(int err, const std::string& what) {
  Code code = Code::io;
  switch (err) {
    case ENOSPC:
    case EDQUOT: code = Code::no_space; break;
    case EACCES:
    case EPERM:
    case EROFS: code = Code::permission; break;
    case ENOENT: code = Code::not_found; break;
    case EEXIST: code = Code::exists; break;
    default: break;
  }
  return Error(code, what + ": " + std::strerror(err));
}

}  // namespace mevbackup
