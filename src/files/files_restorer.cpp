// File-set Restorer: repository -> verify -> gunzip -> a Sink that feeds libarchive's
// reader on an extraction thread, which writes every member into a fresh staging
// directory beside the target. Only after the whole archive extracted and the
// artifact's checksum matched (Sink::commit) are the members moved into the target.
//
// Safety, in layers: our own check of every member (relative name without "..", no
// duplicate, nothing below a symlink member, symlink targets relative and inside,
// hard links only to earlier files, only files/dirs/symlinks/hard links), then
// libarchive's ARCHIVE_EXTRACT_SECURE_* flags, then, when moving into the target, no
// path through an existing symlink of the target.
//
// The extraction thread gets its own working directory (unshare(CLONE_FS) + fchdir
// into the staging directory), so libarchive sees relative names and can apply all
// three secure flags without changing the process's directory. Where unshare is not
// allowed (some seccomp profiles), names are prefixed with the staging directory's
// real path instead and SECURE_NOABSOLUTEPATHS is left to our own check.
#include <fcntl.h>
#include <fnmatch.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive_entry.h>

#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "files_common.hpp"
#include "mevbackup/digest.hpp"
#include "mevbackup/files.hpp"

namespace mevbackup {

namespace {

using files::archive_message;

[[noreturn]] void unsafe(const std::string& name, const std::string& why) {
  throw Error(Code::restore_failed, fmt::format("refusing archive member \"{}\": {}", name, why));
}

enum class Kind { file, dir, symlink, hardlink };

struct Entry {
  std::string name;
  Kind kind;
  unsigned mode = 0;
  int64_t mtime = 0;
  long mtime_nsec = 0;
  std::string sha256;  // files and hard links
  std::string link;    // symlink target / hard link target name
};

// Bounded queue of chunks from the pipeline's thread to the extraction thread.
class ChunkQueue {
 public:
  bool push(std::vector<std::byte> c) {
    std::unique_lock lk(m_);
    cv_.wait(lk, [&] { return failed_ || q_.size() < 4; });
    if (failed_) return false;
    q_.push_back(std::move(c));
    cv_.notify_all();
    return true;
  }
  // false at the end (or on failure)
  bool pop(std::vector<std::byte>& out, bool& failed) {
    std::unique_lock lk(m_);
    cv_.wait(lk, [&] { return failed_ || closed_ || !q_.empty(); });
    failed = failed_;
    if (failed_ || q_.empty()) return false;
    out = std::move(q_.front());
    q_.pop_front();
    cv_.notify_all();
    return true;
  }
  void close() {
    std::lock_guard lk(m_);
    closed_ = true;
    cv_.notify_all();
  }
  void fail() {
    std::lock_guard lk(m_);
    failed_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::vector<std::byte>> q_;
  bool closed_ = false, failed_ = false;
};

bool has_prefix_dir(const std::string& name, const std::set<std::string>& set) {
  auto parts = files::split_name(name);
  for (size_t i = 1; i < parts.size(); ++i)
    if (set.count(files::join_name(parts, i))) return true;
  return false;
}

// Since no member is written below a symlink, every directory above a link is real,
// so the lexical check of files::symlink_escape is exact.
void check_symlink(const std::string& name, const std::string& target) {
  std::string why = files::symlink_escape(name, target);
  if (!why.empty()) unsafe(name, why);
}

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

std::string real_dir(const std::string& p) {
  std::error_code ec;
  auto c = std::filesystem::canonical(p, ec);
  if (ec) throw sys_error(ec.value(), fmt::format("cannot resolve {}", p));
  return c.string();
}

void remove_tree(const std::string& p) noexcept {
  if (p.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(p, ec);
}

// The whole restore: extraction thread, checks, and the move into place.
class FilesRestoreSink final : public Sink {
 public:
  // `members`: the backup's member list (files::load_member_list), nullopt for none.
  FilesRestoreSink(const Manifest& m, const std::optional<nlohmann::json>& members, const FilesRestoreOptions& o,
                   std::string target, std::string staging, const LogFn& log)
      : m_(m), opts_(o), target_(std::move(target)), staging_(std::move(staging)), log_(log) {
    if (members && members->is_array()) {
      has_manifest_members_ = true;
      for (auto& j : *members) manifest_members_[j.value("name", "")] = j;
    }
    only_used_.assign(opts_.only.size(), false);
    thread_ = std::thread([this] { extract_main(); });
  }
  ~FilesRestoreSink() override { stop(); }

  void write(Bytes data) override {
    if (!queue_.push(std::vector<std::byte>(data.begin(), data.end()))) {
      stop();
      rethrow();
      throw Error(Code::cancelled, "restore stopped");
    }
  }

  void commit() override {
    finish_extraction();
    if (log_ && !opts_.dry_run && !private_cwd_)
      log_(LogLevel::debug, "unshare(CLONE_FS) not allowed: extracting with absolute staging paths");
    plan_and_move();
  }

  void abort() noexcept override { stop(); }

  // The end of the stream: waits for the extraction thread, throws what it found.
  void finish_extraction() {
    queue_.close();
    if (thread_.joinable()) thread_.join();
    rethrow();
  }
  std::vector<std::string> member_names() const {
    std::vector<std::string> out;
    for (auto& e : entries_) out.push_back(e.name);
    return out;
  }

  std::vector<FileAction> actions;

 private:
  void stop() noexcept {
    queue_.fail();
    if (thread_.joinable()) thread_.join();
  }
  void rethrow() {
    if (error_) std::rethrow_exception(error_);
  }

  // ---- the extraction thread ------------------------------------------------------

  static la_ssize_t on_read(archive* a, void* client, const void** buff) {
    auto* self = static_cast<FilesRestoreSink*>(client);
    bool failed = false;
    self->cur_.clear();
    if (!self->queue_.pop(self->cur_, failed)) {
      if (failed) {
        archive_set_error(a, ECANCELED, "restore stopped");
        return ARCHIVE_FATAL;
      }
      return 0;
    }
    *buff = self->cur_.data();
    return static_cast<la_ssize_t>(self->cur_.size());
  }

  void extract_main() noexcept {
    try {
      extract();
      // The tar reader stops at the end-of-archive blocks: drain the padding so the
      // writer never blocks, and so the checksum still sees every byte.
      std::vector<std::byte> sink;
      bool failed = false;
      while (queue_.pop(sink, failed)) {
      }
    } catch (...) {
      error_ = std::current_exception();
      queue_.fail();
    }
  }

  bool selected(const std::string& name) {
    if (opts_.only.empty()) return true;
    auto parts = files::split_name(name);
    bool any = false;
    for (size_t g = 0; g < opts_.only.size(); ++g) {
      std::string pat = opts_.only[g];
      while (pat.rfind("./", 0) == 0) pat.erase(0, 2);
      while (pat.size() > 1 && pat.back() == '/') pat.pop_back();
      for (size_t i = 1; i <= parts.size(); ++i) {
        if (fnmatch_whole(pat, files::join_name(parts, i))) {
          only_used_[g] = true;
          any = true;
          break;
        }
      }
    }
    return any;
  }
  static bool fnmatch_whole(const std::string& pat, const std::string& name) {
    return fnmatch(pat.c_str(), name.c_str(), 0) == 0;
  }

  void extract() {
    int direct_fd = -1;
    bool relative = false;
    if (!opts_.dry_run) {
      // A private working directory for this thread only: the staging directory.
      direct_fd = ::open(staging_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (direct_fd < 0) throw sys_error(errno, fmt::format("cannot open {}", staging_));
      relative = ::unshare(CLONE_FS) == 0 && ::fchdir(direct_fd) == 0;
      private_cwd_ = relative;
      ::close(direct_fd);
    }
    files::ArchiveRead r(archive_read_new());
    if (!r) throw std::bad_alloc();
    archive_read_support_format_tar(r.get());
    if (archive_read_open(r.get(), this, nullptr, &FilesRestoreSink::on_read, nullptr) != ARCHIVE_OK)
      throw Error(Code::corrupt, fmt::format("backup {} is not a tar archive: {}", m_.id, archive_message(r.get())));
    files::ArchiveWrite w;
    if (!opts_.dry_run) {
      w.reset(archive_write_disk_new());
      if (!w) throw std::bad_alloc();
      int flags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                  ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_NO_OVERWRITE;
      if (relative) flags |= ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
      if (::geteuid() == 0) flags |= ARCHIVE_EXTRACT_OWNER;
      archive_write_disk_set_options(w.get(), flags);
      archive_write_disk_set_standard_lookup(w.get());
    }
    const std::string prefix = relative || opts_.dry_run ? "" : staging_ + "/";

    std::set<std::string> seen, symlinks, files, ancestors, nondirs;
    for (;;) {
      archive_entry* e = nullptr;
      int rc = archive_read_next_header(r.get(), &e);
      if (rc == ARCHIVE_EOF) break;
      if (rc < ARCHIVE_WARN)
        throw Error(Code::corrupt, fmt::format("backup {}: bad tar archive: {}", m_.id, archive_message(r.get())));
      const char* raw_c = archive_entry_pathname(e);
      std::string raw = raw_c ? raw_c : "";
      if (raw.empty()) unsafe(raw, "empty name");
      if (raw[0] == '/') unsafe(raw, "absolute name");
      auto parts = files::split_name(raw);
      for (auto& p : parts)
        if (p == "..") unsafe(raw, "\"..\" in the name");
      std::string name = files::join_name(parts);
      if (name.empty()) {  // "./": the root itself
        archive_read_data_skip(r.get());
        continue;
      }
      Entry en;
      en.name = name;
      en.mtime = archive_entry_mtime(e);
      en.mtime_nsec = archive_entry_mtime_nsec(e);
      const char* hl = archive_entry_hardlink(e);
      auto ft = archive_entry_filetype(e);
      if (hl && *hl) {
        en.kind = Kind::hardlink;
        std::string h = hl;
        if (h[0] == '/') unsafe(name, fmt::format("hard link to the absolute path \"{}\"", h));
        auto hp = files::split_name(h);
        for (auto& p : hp)
          if (p == "..") unsafe(name, fmt::format("hard link to \"{}\" leads outside the target", h));
        en.link = files::join_name(hp);
        if (!files.count(en.link))
          unsafe(name, fmt::format("hard link to \"{}\", which is not a file restored before it", h));
      } else if (ft == AE_IFREG) {
        en.kind = Kind::file;
      } else if (ft == AE_IFDIR) {
        en.kind = Kind::dir;
      } else if (ft == AE_IFLNK) {
        en.kind = Kind::symlink;
        const char* t = archive_entry_symlink(e);
        en.link = t ? t : "";
        check_symlink(name, en.link);
      } else {
        unsafe(name, "not a file, directory or link (devices, fifos and sockets are not restored)");
      }
      if (seen.count(name)) unsafe(name, "it appears twice in the archive");
      if (has_prefix_dir(name, symlinks)) unsafe(name, "it would be written through a symlink of the archive");
      // The same verdict with or without dry_run: libarchive would refuse to create a
      // member below a file it just wrote, so this check decides, not the disk.
      if (has_prefix_dir(name, nondirs)) unsafe(name, "it would be written below a member the archive restores as a file");
      // The library's own backups never write sparse members; a declared hole would be
      // hashed (and written) as zeros, so a small archive could claim petabytes.
      if (archive_entry_sparse_count(e) > 0) unsafe(name, "sparse members are not restored");
      if (en.kind != Kind::dir && ancestors.count(name))
        unsafe(name, "it would replace a directory that holds other members");
      seen.insert(name);
      for (size_t i = 1; i < parts.size(); ++i) ancestors.insert(files::join_name(parts, i));
      if (en.kind == Kind::symlink) symlinks.insert(name);
      if (en.kind != Kind::dir) nondirs.insert(name);

      bool want = selected(name);
      if (en.kind == Kind::hardlink && want && !selected_files_.count(en.link))
        unsafe(name, fmt::format("hard link to \"{}\", which --only leaves out", en.link));

      // Manifest check of the member's kind, before anything is written.
      const nlohmann::json* mm = nullptr;
      if (has_manifest_members_) {
        auto it = manifest_members_.find(name);
        if (it == manifest_members_.end())
          throw Error(Code::corrupt, fmt::format("backup {}: archive member \"{}\" is not in the manifest", m_.id, name));
        mm = &it->second;
        check_against_manifest(e, en, *mm);
      }
      // Setuid/setgid and world-writable bits are dropped unless asked for: a restore as
      // root would otherwise plant them wherever the archive says.
      unsigned perm = archive_entry_perm(e);
      if (!opts_.keep_special_modes && en.kind != Kind::symlink) {
        perm &= ~static_cast<unsigned>(S_ISUID | S_ISGID | S_IWOTH);
        archive_entry_set_perm(e, perm);
      }
      en.mode = perm;

      if (want && w) {
        archive_entry_copy_pathname(e, (prefix + name).c_str());
        if (en.kind == Kind::hardlink) archive_entry_copy_hardlink(e, (prefix + en.link).c_str());
        int wrc = archive_write_header(w.get(), e);
        if (wrc < ARCHIVE_WARN) unsafe(name, archive_message(w.get()));
      }
      // Content: copied to disk (when wanted) and hashed in every case.
      Sha256 sha;
      if (en.kind == Kind::file) {
        const void* buf = nullptr;
        size_t size = 0;
        la_int64_t offset = 0, expected = 0;
        for (;;) {
          int drc = archive_read_data_block(r.get(), &buf, &size, &offset);
          if (drc == ARCHIVE_EOF) break;
          if (drc < ARCHIVE_WARN)
            throw Error(Code::corrupt, fmt::format("backup {}: reading \"{}\": {}", m_.id, name, archive_message(r.get())));
          if (offset != expected) unsafe(name, "sparse members are not restored");
          sha.update(Bytes(static_cast<const std::byte*>(buf), size));
          expected = offset + static_cast<la_int64_t>(size);
          if (want && w) {
            la_ssize_t wn = archive_write_data_block(w.get(), buf, size, offset);
            if (wn < ARCHIVE_WARN) throw Error(Code::restore_failed, fmt::format("writing \"{}\": {}", name, archive_message(w.get())));
          }
        }
        sha.finish();
        en.sha256 = sha.hex();
        files.insert(name);
        if (want) selected_files_.insert(name);
        file_sha_[name] = en.sha256;
      } else {
        archive_read_data_skip(r.get());
        if (en.kind == Kind::hardlink) en.sha256 = file_sha_[en.link];
      }
      if (want && w) {
        int frc = archive_write_finish_entry(w.get());
        if (frc < ARCHIVE_WARN) unsafe(name, archive_message(w.get()));
      }
      if (mm) {
        std::string mtype = mm->value("type", "");
        const char* k = en.kind == Kind::dir ? "dir" : en.kind == Kind::symlink ? "symlink" : "file";
        if (mtype != k)
          throw Error(Code::corrupt, fmt::format("backup {}: member \"{}\" is a {} in the archive but a {} in the manifest",
                                                 m_.id, name, k, mtype));
        if (!en.sha256.empty() && mm->value("sha256", "") != en.sha256)
          throw Error(Code::corrupt, fmt::format("backup {}: member \"{}\" does not match the SHA-256 in its manifest",
                                                 m_.id, name));
      }
      if (want) entries_.push_back(std::move(en));
    }
    if (w) {
      int crc = archive_write_close(w.get());
      if (crc < ARCHIVE_WARN) throw Error(Code::restore_failed, "finishing the extraction: " + archive_message(w.get()));
    }
    if (has_manifest_members_ && opts_.only.empty() && seen.size() != manifest_members_.size())
      throw Error(Code::corrupt, fmt::format("backup {}: the archive holds {} members, its manifest lists {}", m_.id,
                                             seen.size(), manifest_members_.size()));
    for (size_t g = 0; g < opts_.only.size(); ++g)
      if (!only_used_[g])
        throw Error(Code::not_found, fmt::format("--only \"{}\" matches nothing in backup {}", opts_.only[g], m_.id));
  }

  // The archive's header against what the backup recorded: the declared size (which
  // bounds what is read), the mode and, where recorded, the owner.
  void check_against_manifest(archive_entry* e, const Entry& en, const nlohmann::json& mm) const {
    auto mismatch = [&](const char* what, const std::string& archive, const std::string& manifest) {
      return Error(Code::corrupt, fmt::format("backup {}: member \"{}\" has {} {} in the archive but {} in the manifest",
                                              m_.id, en.name, what, archive, manifest));
    };
    if (en.kind == Kind::file && mm.contains("size") && mm["size"].is_number_integer()) {
      auto want = mm["size"].get<int64_t>();
      auto got = static_cast<int64_t>(archive_entry_size(e));
      if (got != want) throw mismatch("size", std::to_string(got), std::to_string(want));
    }
    if (en.kind != Kind::hardlink && mm.contains("mode") && mm["mode"].is_string()) {
      std::string got = files::mode_string(archive_entry_perm(e)), want = mm["mode"].get<std::string>();
      if (got != want) throw mismatch("mode", got, want);
    }
    for (const char* k : {"uid", "gid"}) {
      if (!mm.contains(k) || !mm[k].is_number_integer()) continue;
      auto want = mm[k].get<int64_t>();
      int64_t got = k[0] == 'u' ? archive_entry_uid(e) : archive_entry_gid(e);
      if (got != want) throw mismatch(k, std::to_string(got), std::to_string(want));
    }
    for (const char* k : {"user", "group"}) {
      if (!mm.contains(k) || !mm[k].is_string()) continue;
      const char* n = k[0] == 'u' ? archive_entry_uname(e) : archive_entry_gname(e);
      std::string got = n ? n : "", want = mm[k].get<std::string>();
      if (got != want) throw mismatch(k, "\"" + got + "\"", "\"" + want + "\"");
    }
  }

  // ---- the move into place (after the checksum matched) ---------------------------

  struct Op {
    std::string rel;       // relative name moved
    bool replace = false;  // an existing file is set aside first
  };

  void plan_and_move() {
    struct stat st;
    bool target_exists = ::lstat(target_.c_str(), &st) == 0;
    if (target_exists && !S_ISDIR(st.st_mode))
      throw Error(Code::exists, fmt::format("restore target {} exists and is not a directory", target_));
    std::vector<Op> ops;
    std::set<std::string> moved;  // relative names moved as a whole ("" = the target itself)
    std::vector<std::string> conflicts;
    auto covered = [&](const std::vector<std::string>& parts, size_t upto) {
      if (moved.count("")) return true;
      for (size_t i = 1; i <= upto; ++i)
        if (moved.count(files::join_name(parts, i))) return true;
      return false;
    };
    if (!target_exists) {
      ops.push_back(Op{"", false});
      moved.insert("");
    }
    for (auto& en : entries_) {
      auto parts = files::split_name(en.name);
      std::string action = "create";
      if (!covered(parts, parts.size())) {
        // Parents: each must be a real directory of the target, or missing (then the
        // staged parent moves in as a whole, with everything below it).
        bool done = false;
        for (size_t i = 1; i < parts.size() && !done; ++i) {
          std::string rel = files::join_name(parts, i);
          std::string p = target_ + "/" + rel;
          if (::lstat(p.c_str(), &st) != 0) {
            if (errno != ENOENT) throw sys_error(errno, fmt::format("cannot inspect {}", p));
            ops.push_back(Op{rel, false});
            moved.insert(rel);
            done = true;
          } else if (S_ISLNK(st.st_mode)) {
            throw Error(Code::restore_failed,
                        fmt::format("{} is a symlink in the target; refusing to restore \"{}\" through it", p, en.name));
          } else if (!S_ISDIR(st.st_mode)) {
            conflicts.push_back(en.name + " (" + p + " is not a directory)");
            done = true;
            action = "conflict";
          }
        }
        if (!done) {
          std::string p = target_ + "/" + en.name;
          if (::lstat(p.c_str(), &st) != 0) {
            if (errno != ENOENT) throw sys_error(errno, fmt::format("cannot inspect {}", p));
            ops.push_back(Op{en.name, false});
            moved.insert(en.name);
          } else if (en.kind == Kind::dir) {
            if (S_ISDIR(st.st_mode)) action = "unchanged";
            else {
              conflicts.push_back(en.name);
              action = "conflict";
            }
          } else if (S_ISDIR(st.st_mode)) {
            conflicts.push_back(en.name + " (a directory in the target)");
            action = "conflict";
          } else {
            bool same = false;
            if (en.kind == Kind::symlink) same = S_ISLNK(st.st_mode) && read_link(p) == en.link;
            else same = S_ISREG(st.st_mode) && (st.st_mode & 07777) == en.mode && hash_file(p) == en.sha256;
            if (same) {
              action = "unchanged";
            } else if (opts_.overwrite) {
              action = "replace";
              ops.push_back(Op{en.name, true});
            } else {
              action = "conflict";
              conflicts.push_back(en.name);
            }
          }
        }
      }
      actions.push_back(FileAction{en.name, action});
    }
    if (!conflicts.empty() && !opts_.dry_run) {
      std::string names;
      for (size_t i = 0; i < conflicts.size() && i < 5; ++i) names += (i ? ", " : "") + conflicts[i];
      if (conflicts.size() > 5) names += fmt::format(" and {} more", conflicts.size() - 5);
      throw Error(Code::exists, fmt::format("restore target {} already holds different files: {}; nothing was "
                                            "changed (use --overwrite to replace them)",
                                            target_, names));
    }
    if (opts_.dry_run) return;
    execute(ops);
    // Directories we created: their metadata as archived (moving into them changed it).
    std::set<std::string> created;
    for (auto& a : actions)
      if (a.action == "create") created.insert(a.name);
    for (auto it = entries_.rbegin(); it != entries_.rend(); ++it) {
      if (it->kind != Kind::dir || !created.count(it->name)) continue;
      std::string p = target_ + "/" + it->name;
      struct timespec ts[2] = {{it->mtime, it->mtime_nsec}, {it->mtime, it->mtime_nsec}};
      ::utimensat(AT_FDCWD, p.c_str(), ts, AT_SYMLINK_NOFOLLOW);
    }
  }

  void execute(const std::vector<Op>& ops) {
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
      for (auto& op : ops) {
        std::string from = op.rel.empty() ? staging_ : staging_ + "/" + op.rel;
        std::string to = op.rel.empty() ? target_ : target_ + "/" + op.rel;
        Done d{from, to, ""};
        if (op.replace) {
          if (aside.empty()) {
            std::string tmpl = parent_ + "/." + base_name_ + ".mevb-old-XXXXXX";
            if (!::mkdtemp(tmpl.data())) throw sys_error(errno, fmt::format("cannot create a directory in {}", parent_));
            aside = tmpl;
          }
          d.aside = fmt::format("{}/{}", aside, n++);
          if (::rename(to.c_str(), d.aside.c_str()) != 0)
            throw sys_error(errno, fmt::format("cannot move {} aside", to));
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
  }

 public:
  std::string parent_, base_name_;

 private:
  const Manifest& m_;
  FilesRestoreOptions opts_;
  std::string target_, staging_;
  const LogFn& log_;
  ChunkQueue queue_;
  std::thread thread_;
  std::exception_ptr error_;
  std::vector<std::byte> cur_;
  bool has_manifest_members_ = false;
  bool private_cwd_ = false;
  std::map<std::string, nlohmann::json> manifest_members_;
  std::vector<bool> only_used_;
  std::set<std::string> selected_files_;
  std::map<std::string, std::string> file_sha_;
  std::vector<Entry> entries_;
};

}  // namespace

namespace {

// The whole restore as a Sink: owns what FilesRestoreSink refers to (the manifest, the
// log) and the staging directory, removed whatever happens (moved-in members are no
// longer in it).
class ExtractSink final : public Sink {
 public:
  ExtractSink(const FilesExtractSinkOptions& opts, const RunContext& ctx, std::vector<FileAction>* actions)
      : m_(opts.backup ? *opts.backup : stream_manifest()), log_(ctx.log), actions_(actions) {
    if (opts.backup && opts.backup->kind != "files")
      throw Error(Code::invalid_argument,
                  fmt::format("backup {} is a {} backup, not a files one", opts.backup->id, opts.backup->kind));
    if (opts.target.empty()) throw Error(Code::invalid_argument, "no restore target directory given");
    std::filesystem::path t = std::filesystem::absolute(opts.target).lexically_normal();
    std::string tstr = t.string();
    while (tstr.size() > 1 && tstr.back() == '/') tstr.pop_back();
    t = tstr;
    if (t == t.root_path()) throw Error(Code::invalid_argument, "refusing to restore into /");
    // The target's parent, resolved, so the staging directory is on the target's filesystem.
    std::string parent = real_dir(t.parent_path().string());
    std::string base_name = t.filename().string();
    target_ = parent + "/" + base_name;
    struct stat st;
    if (::lstat(target_.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
      target_ = real_dir(target_);  // a symlinked target: restore into what it names
      auto slash = target_.rfind('/');
      parent = slash == 0 ? "/" : target_.substr(0, slash);
      base_name = target_.substr(slash + 1);
    }
    if (!opts.dry_run) {
      std::string tmpl = (parent == "/" ? "" : parent) + "/." + base_name + ".mevb-restore-XXXXXX";
      if (!::mkdtemp(tmpl.data())) throw sys_error(errno, fmt::format("cannot create a staging directory in {}", parent));
      staging_ = tmpl;
    }
    dry_run_ = opts.dry_run;
    if (log_)
      log_(LogLevel::info, fmt::format("{} {} into {}", opts.dry_run ? "checking" : "restoring",
                                       opts.backup ? "backup " + opts.backup->id : std::string("a tar stream"), target_));
    try {
      inner_.emplace(m_, opts.members, opts, target_, staging_, log_);
    } catch (...) {
      remove_tree(staging_);
      throw;
    }
    inner_->parent_ = parent == "/" ? "" : parent;
    inner_->base_name_ = base_name;
  }
  ~ExtractSink() override {
    inner_.reset();  // its thread stops before the staging directory goes
    if (!staging_.empty()) remove_tree(staging_);
  }
  void write(Bytes data) override { inner_->write(data); }
  void commit() override {
    inner_->commit();
    if (log_) {
      size_t changed = 0;
      for (auto& a : inner_->actions) changed += a.action == "create" || a.action == "replace";
      log_(LogLevel::info, fmt::format("{} {} of {} members in {}", dry_run_ ? "would write" : "wrote", changed,
                                       inner_->actions.size(), target_));
    }
    if (actions_) *actions_ = inner_->actions;
  }
  // A failed run leaves nothing beside the target, even while the sink is still held.
  void abort() noexcept override {
    inner_->abort();  // stops the extraction thread: nothing writes into staging_ any more
    if (!staging_.empty()) remove_tree(staging_);
    staging_.clear();
  }

 private:
  static Manifest stream_manifest() {
    Manifest m;
    m.kind = "files";
    m.id = "(tar stream)";
    return m;
  }
  Manifest m_;
  LogFn log_;
  std::vector<FileAction>* actions_;
  std::string target_, staging_;
  bool dry_run_ = false;
  std::optional<FilesRestoreSink> inner_;  // last: refers to the members above
};

}  // namespace

std::unique_ptr<Sink> files_extract_sink(const FilesExtractSinkOptions& opts, const RunContext& ctx,
                                         std::vector<FileAction>* actions) {
  return std::make_unique<ExtractSink>(opts, ctx, actions);
}

std::vector<FileAction> restore_files(Repository& repo, const Manifest& backup, const FilesRestoreOptions& opts,
                                      const RunContext& ctx) {
  FilesExtractSinkOptions so;
  static_cast<FilesRestoreOptions&>(so) = opts;
  so.backup = backup;
  if (backup.kind == "files")  // (otherwise the sink refuses the backup, naming its kind)
    // Read and checked before the archive: the members it must hold, with their modes,
    // owners and checksums.
    so.members = files::load_member_list(repo.storage(), backup, ctx);
  std::vector<FileAction> actions;
  std::unique_ptr<Sink> sink = files_extract_sink(so, ctx, &actions);
  repo.restore_stream(backup, *sink, ctx);
  return actions;
}

std::vector<std::string> files::check_tar_members(Bytes tar, const Manifest& m,
                                                 const std::optional<nlohmann::json>& members, size_t chunk) {
  FilesRestoreOptions o;
  o.dry_run = true;  // no staging directory, nothing written, no unshare()
  static const LogFn no_log;
  FilesRestoreSink sink(m, members, o, "", "", no_log);
  if (chunk == 0) chunk = 1;
  for (size_t pos = 0; pos < tar.size(); pos += chunk) sink.write(tar.subspan(pos, std::min(chunk, tar.size() - pos)));
  sink.finish_extraction();
  return sink.member_names();
}

}  // namespace mevbackup
