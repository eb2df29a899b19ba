#include "move_into_place.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <set>

#include <fmt/format.h>

#include "files_common.hpp"
#include "mevbackup/digest.hpp"
#include "mevbackup/error.hpp"

namespace mevbackup::files {

namespace {

std::string hash_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw sys_error(errno, fmt::format("cannot read {}", path));
  Sha256 sha;
  std::vector<std::byte> buf(64 * 1024);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      throw sys_error(e, fmt::format("cannot read {}", path));
    }
    if (n == 0) break;
    sha.update(Bytes(buf.data(), static_cast<size_t>(n)));
  }
  ::close(fd);
  sha.finish();
  return sha.hex();
}

std::string read_link(const std::string& path) {
  std::vector<char> buf(4096);
  ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
  if (n < 0) return {};
  return std::string(buf.data(), static_cast<size_t>(n));
}

}  // namespace

MovePlan plan_moves(const std::vector<Entry>& entries, const std::string& target, bool overwrite) {
  struct stat st;
  bool target_exists = ::lstat(target.c_str(), &st) == 0;
  if (target_exists && !S_ISDIR(st.st_mode))
    throw Error(Code::exists, fmt::format("restore target {} exists and is not a directory", target));
  MovePlan plan;
  std::set<std::string> moved;  // relative names moved as a whole ("" = the target itself)
  auto covered = [&](const std::vector<std::string>& parts, size_t upto) {
    if (moved.count("")) return true;
    for (size_t i = 1; i <= upto; ++i)
      if (moved.count(join_name(parts, i))) return true;
    return false;
  };
  auto move = [&](const std::string& rel, bool replace) {
    plan.ops.push_back(MoveOp{rel, replace});
    if (!replace) moved.insert(rel);
  };
  if (!target_exists) move("", false);
  for (auto& en : entries) {
    auto parts = split_name(en.name);
    std::string action = "create";
    auto conflict = [&](const std::string& what) {
      plan.conflicts.push_back(what);
      action = "conflict";
    };
    if (!covered(parts, parts.size())) {
      // Parents: each must be a real directory of the target, or missing (then the
      // staged parent moves in as a whole, with everything below it).
      bool done = false;
      for (size_t i = 1; i < parts.size() && !done; ++i) {
        std::string rel = join_name(parts, i);
        std::string p = target + "/" + rel;
        if (::lstat(p.c_str(), &st) != 0) {
          if (errno != ENOENT) throw sys_error(errno, fmt::format("cannot inspect {}", p));
          move(rel, false);
          done = true;
        } else if (S_ISLNK(st.st_mode)) {
          throw Error(Code::restore_failed,
                      fmt::format("{} is a symlink in the target; refusing to restore \"{}\" through it", p, en.name));
        } else if (!S_ISDIR(st.st_mode)) {
          conflict(en.name + " (" + p + " is not a directory)");
          done = true;
        }
      }
      if (!done) {
        std::string p = target + "/" + en.name;
        if (::lstat(p.c_str(), &st) != 0) {
          if (errno != ENOENT) throw sys_error(errno, fmt::format("cannot inspect {}", p));
          move(en.name, false);
        } else if (en.kind == EntryKind::dir) {
          if (S_ISDIR(st.st_mode))
            action = "unchanged";
          else
            conflict(en.name);
        } else if (S_ISDIR(st.st_mode)) {
          conflict(en.name + " (a directory in the target)");
        } else {
          bool same = en.kind == EntryKind::symlink
                          ? S_ISLNK(st.st_mode) && read_link(p) == en.link
                          : S_ISREG(st.st_mode) && (st.st_mode & 07777) == en.mode && hash_file(p) == en.sha256;
          if (same) {
            action = "unchanged";
          } else if (overwrite) {
            action = "replace";
            move(en.name, true);
          } else {
            conflict(en.name);
          }
        }
      }
    }
    plan.actions.push_back(FileAction{en.name, action});
  }
  return plan;
}

void refuse_conflicts(const MovePlan& plan, const std::string& target) {
  const auto& c = plan.conflicts;
  if (c.empty()) return;
  std::string names;
  for (size_t i = 0; i < c.size() && i < 5; ++i) names += (i ? ", " : "") + c[i];
  if (c.size() > 5) names += fmt::format(" and {} more", c.size() - 5);
  throw Error(Code::exists, fmt::format("restore target {} already holds different files: {}; nothing was "
                                        "changed (use --overwrite to replace them)",
                                        target, names));
}

void move_into_place(const MovePlan& plan, const std::vector<Entry>& entries, const MovePlaces& at) {
  std::string aside;  // where replaced files wait until the end
  struct Done {
    std::string from, to, aside;
  };
  std::vector<Done> done;
  auto rollback = [&]() noexcept {
    for (auto it = done.rbegin(); it != done.rend(); ++it) {
      ::rename(it->to.c_str(), it->from.c_str());
      if (!it->aside.empty()) ::rename(it->aside.c_str(), it->to.c_str());
    }
  };
  try {
    size_t n = 0;
    for (auto& op : plan.ops) {
      std::string from = op.rel.empty() ? at.staging : at.staging + "/" + op.rel;
      std::string to = op.rel.empty() ? at.target : at.target + "/" + op.rel;
      Done d{from, to, ""};
      if (op.replace) {
        if (aside.empty()) {
          std::string tmpl = at.parent + "/." + at.base_name + ".mevb-old-XXXXXX";
          if (!::mkdtemp(tmpl.data())) throw sys_error(errno, fmt::format("cannot create a directory in {}", at.parent));
          aside = tmpl;
        }
        d.aside = fmt::format("{}/{}", aside, n++);
        if (::rename(to.c_str(), d.aside.c_str()) != 0) throw sys_error(errno, fmt::format("cannot move {} aside", to));
      }
      if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) != 0) {
        int e = errno;
        if (!d.aside.empty()) ::rename(d.aside.c_str(), to.c_str());
        throw sys_error(e, fmt::format("cannot move {} into place", to));
      }
      done.push_back(std::move(d));
    }
  } catch (...) {
    rollback();
    remove_tree(aside);
    throw;
  }
  remove_tree(aside);
  // Directories we created: their metadata as archived (moving into them changed it).
  std::set<std::string> created;
  for (auto& a : plan.actions)
    if (a.action == "create") created.insert(a.name);
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (it->kind != EntryKind::dir || !created.count(it->name)) continue;
    std::string p = at.target + "/" + it->name;
    struct timespec ts[2] = {{it->mtime, it->mtime_nsec}, {it->mtime, it->mtime_nsec}};
    ::utimensat(AT_FDCWD, p.c_str(), ts, AT_SYMLINK_NOFOLLOW);
  }
}

}  // namespace mevbackup::files
