// File-set Dumper: named files, directories and globs written as a pax tar by
// libarchive straight into the pipeline.
//
// Pull design: TarSource::read() asks libarchive for the next piece of the archive
// (a header, or up to 64 KiB of one file's data); libarchive's write callback copies
// what it produces into the caller's buffer, keeping at most one block's overflow.
// So there is neither a temporary tar file nor a producer thread, and memory stays
// flat whatever the files' size.
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive_entry.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "files_common.hpp"
#include "mevbackup/digest.hpp"
#include "mevbackup/files.hpp"

namespace mevbackup {

namespace {

using files::archive_message;

enum class Type { file, dir, symlink };

const char* type_name(Type t) {
  switch (t) {
    case Type::file: return "file";
    case Type::dir: return "dir";
    case Type::symlink: return "symlink";
  }
  return "?";
}

struct Member {
  std::string name;  // relative to the base, '/'-separated
  Type type;
};

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Escapes glob metacharacters so that the base directory is taken literally.
std::string glob_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

bool has_glob(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

// Walks the named paths and decides what goes into the archive.
class Collector {
 public:
  Collector(const std::string& base, std::vector<std::string> patterns, const LogFn& log)
      : base_(base), patterns_(std::move(patterns)), log_(log) {}

  void add_named(const std::string& arg, bool ignore_missing) {
    if (arg.empty()) throw Error(Code::invalid_argument, "an empty path was named");
    std::string rel = arg;
    if (rel[0] == '/') {
      std::string b = base_ == "/" ? "/" : base_ + "/";
      if (rel.rfind(b, 0) != 0)
        throw Error(Code::invalid_argument, fmt::format("\"{}\" is outside the base directory {}", arg, base_));
      rel = rel.substr(b.size());
    }
    auto parts = files::split_name(rel);
    for (auto& p : parts)
      if (p == "..")
        throw Error(Code::invalid_argument,
                    fmt::format("\"{}\" leaves the base directory {} (\"..\" is not allowed)", arg, base_));
    rel = files::join_name(parts);
    if (rel.empty()) {  // "." : everything inside the base (the base itself is not a member)
      for (auto& c : list_dir(base_)) walk(c);
      return;
    }

    std::vector<std::string> matches;
    if (has_glob(rel)) {
      glob_t g{};
      int rc = ::glob((glob_escape(base_) + "/" + rel).c_str(), GLOB_NOSORT, nullptr, &g);
      if (rc == 0) {
        for (size_t i = 0; i < g.gl_pathc; ++i) {
          std::string m = g.gl_pathv[i];
          matches.push_back(m.substr(base_.size() + (base_ == "/" ? 0 : 1)));
        }
      }
      globfree(&g);
      if (rc != 0 && rc != GLOB_NOMATCH) throw Error(Code::io, fmt::format("expanding \"{}\" in {} failed", arg, base_));
      std::sort(matches.begin(), matches.end());
    } else {
      struct stat st;
      if (::lstat(abs(rel).c_str(), &st) == 0) {
        matches.push_back(rel);
      } else if (errno != ENOENT && errno != ENOTDIR) {
        throw sys_error(errno, fmt::format("cannot read {}", abs(rel)));
      }
    }
    if (matches.empty()) {
      if (!ignore_missing)
        throw Error(Code::not_found, fmt::format("{} does not exist (in {}); use --ignore-missing to skip it",
                                                 has_glob(rel) ? "nothing matches \"" + arg + "\"" : "\"" + arg + "\"",
                                                 base_));
      missing.push_back(arg);
      if (log_) log_(LogLevel::warning, fmt::format("skipping \"{}\": it does not exist in {}", arg, base_));
      return;
    }
    for (auto& m : matches) {
      // An excluded ancestor directory excludes what a name or glob reaches below it.
      auto parts2 = files::split_name(m);
      bool out = false;
      for (size_t i = 1; i < parts2.size() && !out; ++i) out = excluded(files::join_name(parts2, i), true);
      if (out) {
        record_excluded(m);
        continue;
      }
      walk(m);
    }
  }

  std::vector<Member> members;
  std::vector<std::string> excluded_names;
  std::vector<std::string> missing;

 private:
  std::string abs(const std::string& rel) const { return base_ == "/" ? "/" + rel : base_ + "/" + rel; }

  bool excluded(const std::string& rel, bool is_dir) const {
    for (auto& p : patterns_)
      if (files::pattern_matches(p, rel, is_dir)) return true;
    return false;
  }
  void record_excluded(const std::string& rel) {
    if (excluded_seen_.insert(rel).second) excluded_names.push_back(rel);
  }

  void walk(const std::string& rel) {
    if (seen_.count(rel)) return;
    struct stat st;
    if (::lstat(abs(rel).c_str(), &st) != 0) throw sys_error(errno, fmt::format("cannot read {}", abs(rel)));
    bool is_dir = S_ISDIR(st.st_mode);
    if (excluded(rel, is_dir)) {
      record_excluded(rel);
      return;
    }
    Type t;
    if (S_ISREG(st.st_mode)) t = Type::file;
    else if (is_dir) t = Type::dir;
    else if (S_ISLNK(st.st_mode)) {
      t = Type::symlink;
      // A restore refuses links leading outside the restored tree: refuse them now,
      // rather than store a backup that cannot be restored.
      std::vector<char> buf(4097);
      ssize_t n = ::readlink(abs(rel).c_str(), buf.data(), buf.size() - 1);
      if (n < 0) throw sys_error(errno, fmt::format("cannot read the link {}", abs(rel)));
      std::string target(buf.data(), static_cast<size_t>(n));
      if (std::string why = files::symlink_escape(rel, target); !why.empty())
        throw Error(Code::invalid_argument,
                    fmt::format("{}: {}; a restore would refuse it. Exclude it (--exclude) or back up what it points to",
                                abs(rel), why));
    } else {
      if (log_) log_(LogLevel::warning, fmt::format("skipping {}: not a file, directory or symlink", abs(rel)));
      return;
    }
    seen_.insert(rel);
    members.push_back(Member{rel, t});
    if (!is_dir) return;
    for (auto& c : list_dir(abs(rel))) walk(rel + "/" + c);
  }

  static std::vector<std::string> list_dir(const std::string& dir) {
    std::vector<std::string> children;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
      children.push_back(it->path().filename().string());
    if (ec) throw sys_error(ec.value(), fmt::format("cannot list {}", dir));
    std::sort(children.begin(), children.end());
    return children;
  }

  std::string base_;
  std::vector<std::string> patterns_;
  const LogFn& log_;
  std::set<std::string> seen_, excluded_seen_;
};

// Owner names for the tar headers, looked up once per id.
class NameCache {
 public:
  const std::string& user(uid_t id) {
    auto it = users_.find(id);
    if (it != users_.end()) return it->second;
    std::string name;
    std::vector<char> buf(16384);
    struct passwd pw, *res = nullptr;
    if (getpwuid_r(id, &pw, buf.data(), buf.size(), &res) == 0 && res) name = res->pw_name;
    return users_[id] = name;
  }
  const std::string& group(gid_t id) {
    auto it = groups_.find(id);
    if (it != groups_.end()) return it->second;
    std::string name;
    std::vector<char> buf(16384);
    struct group gr, *res = nullptr;
    if (getgrgid_r(id, &gr, buf.data(), buf.size(), &res) == 0 && res) name = res->gr_name;
    return groups_[id] = name;
  }

 private:
  std::map<uid_t, std::string> users_;
  std::map<gid_t, std::string> groups_;
};

// The archive as a Source, produced on demand.
class TarSource final : public Source {
 public:
  TarSource(std::string base, std::vector<Member> members) : base_(std::move(base)), members_(std::move(members)) {
    a_.reset(archive_write_new());
    if (!a_) throw std::bad_alloc();
    if (archive_write_set_format_pax_restricted(a_.get()) != ARCHIVE_OK ||
        archive_write_add_filter_none(a_.get()) != ARCHIVE_OK ||
        archive_write_open2(a_.get(), this, nullptr, &TarSource::on_write, nullptr, nullptr) != ARCHIVE_OK)
      throw Error(Code::internal, "cannot start the tar writer: " + archive_message(a_.get()));
    data_.resize(64 * 1024);
  }

  size_t read(MutBytes buf) override {
    out_ = buf;
    out_pos_ = 0;
    size_t n = std::min(buf.size(), pending_.size() - pending_pos_);
    if (n) {
      std::memcpy(buf.data(), pending_.data() + pending_pos_, n);
      pending_pos_ += n;
      out_pos_ = n;
      if (pending_pos_ == pending_.size()) pending_.clear(), pending_pos_ = 0;
    }
    while (out_pos_ == 0 && !finished_) step();
    out_ = {};
    return out_pos_;
  }

  void abort() noexcept override {
    if (a_) archive_write_fail(a_.get());
    file_.reset();
  }

  nlohmann::json members_json = nlohmann::json::array();
  nlohmann::json* members_out = nullptr;  // given the member list once the archive is complete

 private:
  static la_ssize_t on_write(archive*, void* client, const void* buff, size_t len) {
    auto* self = static_cast<TarSource*>(client);
    try {
      auto* p = static_cast<const std::byte*>(buff);
      size_t n = std::min(len, self->out_.size() - self->out_pos_);
      if (n) std::memcpy(self->out_.data() + self->out_pos_, p, n);
      self->out_pos_ += n;
      if (n < len) self->pending_.insert(self->pending_.end(), p + n, p + len);
      return static_cast<la_ssize_t>(len);
    } catch (...) {
      return -1;
    }
  }

  std::string abs(const std::string& rel) const { return base_ == "/" ? "/" + rel : base_ + "/" + rel; }

  void check(int rc, const std::string& what) {
    if (rc < ARCHIVE_WARN) throw Error(Code::dump_failed, fmt::format("{}: {}", what, archive_message(a_.get())));
  }

  void step() {
    if (in_file_) return copy_data();
    if (next_ == members_.size()) {
      check(archive_write_close(a_.get()), "finishing the tar archive");
      finished_ = true;
      if (members_out) *members_out = members_json;
      return;
    }
    const Member& m = members_[next_];
    std::string path = abs(m.name);
    struct stat st;
    std::string link;
    if (m.type == Type::file) {
      int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
      if (fd < 0) throw sys_error(errno, fmt::format("cannot open {}", path));
      file_.reset(fd);
      if (::fstat(fd, &st) != 0) throw sys_error(errno, fmt::format("cannot stat {}", path));
      if (!S_ISREG(st.st_mode)) throw Error(Code::dump_failed, fmt::format("{} is no longer a regular file", path));
    } else {
      if (::lstat(path.c_str(), &st) != 0) throw sys_error(errno, fmt::format("cannot read {}", path));
      bool same = m.type == Type::dir ? S_ISDIR(st.st_mode) : S_ISLNK(st.st_mode);
      if (!same) throw Error(Code::dump_failed, fmt::format("{} changed type while being backed up", path));
      if (m.type == Type::symlink) {
        std::vector<char> buf(static_cast<size_t>(st.st_size > 0 ? st.st_size : 255) + 1);
        ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
        if (n < 0) throw sys_error(errno, fmt::format("cannot read the link {}", path));
        if (static_cast<size_t>(n) >= buf.size())
          throw Error(Code::dump_failed, fmt::format("{} changed while being backed up", path));
        link.assign(buf.data(), static_cast<size_t>(n));
      }
    }
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(), archive_entry_free);
    if (!e) throw std::bad_alloc();
    archive_entry_copy_stat(e.get(), &st);
    archive_entry_copy_pathname(e.get(), m.name.c_str());
    if (m.type != Type::file) archive_entry_set_size(e.get(), 0);
    if (m.type == Type::symlink) archive_entry_copy_symlink(e.get(), link.c_str());
    archive_entry_set_nlink(e.get(), 1);  // every file is stored in full: no hard-link entries
    if (auto& u = names_.user(st.st_uid); !u.empty()) archive_entry_copy_uname(e.get(), u.c_str());
    if (auto& g = names_.group(st.st_gid); !g.empty()) archive_entry_copy_gname(e.get(), g.c_str());
    check(archive_write_header(a_.get(), e.get()), fmt::format("writing the tar header of {}", path));

    cur_ = nlohmann::json{{"name", m.name}, {"type", type_name(m.type)}, {"mode", files::mode_string(st.st_mode)},
                          {"size", m.type == Type::file ? static_cast<uint64_t>(st.st_size) : 0},
                          {"mtime", static_cast<int64_t>(st.st_mtime)}};
    if (m.type == Type::symlink) cur_["target"] = link;
    // The owner as the tar header holds it, so a restore can refuse a header changed after the backup.
    cur_["uid"] = static_cast<uint64_t>(st.st_uid);
    cur_["gid"] = static_cast<uint64_t>(st.st_gid);
    if (auto& u = names_.user(st.st_uid); !u.empty()) cur_["user"] = u;
    if (auto& g = names_.group(st.st_gid); !g.empty()) cur_["group"] = g;
    if (m.type == Type::file) {
      in_file_ = true;
      remaining_ = static_cast<uint64_t>(st.st_size);
      sha_ = std::make_unique<Sha256>();
      if (remaining_ == 0) finish_file();
    } else {
      members_json.push_back(std::move(cur_));
      ++next_;
    }
  }

  void copy_data() {
    const std::string path = abs(members_[next_].name);
    size_t want = static_cast<size_t>(std::min<uint64_t>(remaining_, data_.size()));
    ssize_t n = ::read(file_.get(), data_.data(), want);
    if (n < 0) {
      if (errno == EINTR) return;
      throw sys_error(errno, fmt::format("cannot read {}", path));
    }
    if (n == 0)
      throw Error(Code::dump_failed, fmt::format("{} shrank while being backed up; run the backup again", path));
    sha_->update(Bytes(data_.data(), static_cast<size_t>(n)));
    la_ssize_t w = archive_write_data(a_.get(), data_.data(), static_cast<size_t>(n));
    if (w < 0) throw Error(Code::dump_failed, fmt::format("writing {} into the tar archive: {}", path, archive_message(a_.get())));
    remaining_ -= static_cast<uint64_t>(n);
    if (remaining_ == 0) finish_file();
  }

  void finish_file() {
    const std::string path = abs(members_[next_].name);
    std::byte extra;
    ssize_t n = ::read(file_.get(), &extra, 1);
    if (n > 0) throw Error(Code::dump_failed, fmt::format("{} grew while being backed up; run the backup again", path));
    file_.reset();
    sha_->finish();
    cur_["sha256"] = sha_->hex();
    members_json.push_back(std::move(cur_));
    in_file_ = false;
    ++next_;
  }

  std::string base_;
  std::vector<Member> members_;
  files::ArchiveWrite a_;
  NameCache names_;
  size_t next_ = 0;
  bool finished_ = false;
  bool in_file_ = false;
  uint64_t remaining_ = 0;
  Fd file_;
  std::unique_ptr<Sha256> sha_;
  nlohmann::json cur_;
  std::vector<std::byte> data_;
  MutBytes out_;
  size_t out_pos_ = 0;
  std::vector<std::byte> pending_;
  size_t pending_pos_ = 0;
};

std::string absolute_base(const std::string& base) {
  std::error_code ec;
  auto p = std::filesystem::absolute(base.empty() ? "." : base, ec);
  if (ec) throw sys_error(ec.value(), fmt::format("cannot resolve the base directory {}", base));
  std::string s = p.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  struct stat st;
  if (::stat(s.c_str(), &st) != 0) throw sys_error(errno, fmt::format("base directory {}", s));
  if (!S_ISDIR(st.st_mode)) throw Error(Code::invalid_argument, fmt::format("base {} is not a directory", s));
  return s;
}

// A backup is only a success once the catalog, the way every later restore, list and
// prune reads it, sees it: otherwise "latest" would silently mean an older backup.
// A manifest the catalog lists but cannot read (over its size bound, say) is taken
// back, manifest first, and the run fails with the catalog's reason. One not listed at
// all is asked again (some servers list a new object a moment late), then the run fails
// without removing anything, naming the objects.
void confirm_listed(Repository& repo, const Manifest& m, const RunContext& ctx) {
  std::string reason;
  LogFn capture = [&](LogLevel level, const std::string& msg) {
    if (msg.find(m.key()) != std::string::npos) reason = msg;
    else if (ctx.log) ctx.log(level, msg);
  };
  for (int attempt = 0; attempt < 4; ++attempt) {
    if (attempt) std::this_thread::sleep_for(std::chrono::milliseconds(250 << attempt));
    reason.clear();
    for (auto& listed : repo.list("files", capture))
      if (listed.id == m.id && listed.path == m.path) return;
    if (!reason.empty()) break;
  }
  if (reason.empty())
    throw Error(Code::io, fmt::format("backup {} was stored but the catalog of {} does not list it; {} and {} were "
                                      "kept: check the repository before relying on \"latest\"",
                                      m.id, repo.storage().describe(), m.path, m.key()));
  Storage& st = repo.storage();
  try {
    st.remove(m.key());
    st.remove(m.path);
    for (auto& key : m.extra_paths()) st.remove(key);
  } catch (const Error& e) {
    throw Error(Code::corrupt, fmt::format("backup {} was stored but the catalog cannot read its manifest ({}); removing "
                                           "it failed too ({}): delete {}, {} and {}{} by hand",
                                           m.id, reason, e.what(), m.key(), m.path, m.path, Manifest::kMemberListSuffix));
  }
  throw Error(Code::corrupt, fmt::format("backup {} was stored but the catalog cannot read its manifest ({}); it was "
                                         "removed again, so no backup was made",
                                         m.id, reason));
}

}  // namespace

std::unique_ptr<Source> files_tar_source(const FilesTarSourceOptions& opts, const RunContext& ctx, FilesTarInfo* info) {
  if (opts.paths.empty()) throw Error(Code::invalid_argument, "no files named to back up");
  std::string base = absolute_base(opts.base_dir);
  std::vector<std::string> patterns = opts.excludes;
  if (!opts.include_secrets) {
    auto& d = default_secret_excludes();
    patterns.insert(patterns.end(), d.begin(), d.end());
  }
  Collector col(base, patterns, ctx.log);
  for (auto& p : opts.paths) col.add_named(p, opts.ignore_missing);
  if (col.members.empty())
    throw Error(Code::not_found, fmt::format("nothing to back up in {}: every named path is missing or excluded", base));
  if (ctx.log) {
    if (!col.excluded_names.empty()) {
      std::string names;
      for (auto& n : col.excluded_names) names += (names.empty() ? "" : ", ") + n;
      ctx.log(LogLevel::warning, fmt::format("excluded {} name(s) that may hold secrets or match --exclude: {}",
                                             col.excluded_names.size(), names));
    }
    ctx.log(LogLevel::info, fmt::format("backing up {} entries from {}", col.members.size(), base));
  }
  auto source = std::make_unique<TarSource>(base, col.members);
  if (info) {
    info->base_dir = base;
    info->excluded = col.excluded_names;
    info->missing = col.missing;
    info->members = nlohmann::json::array();
    source->members_out = &info->members;
  }
  return source;
}

Manifest backup_files(Repository& repo, const FilesBackupOptions& opts, const RunContext& ctx) {
  FilesTarSourceOptions so;
  so.base_dir = opts.base_dir;
  so.paths = opts.paths;
  so.excludes = opts.excludes;
  so.include_secrets = opts.include_secrets;
  so.ignore_missing = opts.ignore_missing;
  FilesTarInfo info;
  std::unique_ptr<Source> source = files_tar_source(so, ctx, &info);
  ArtifactSpec spec;
  spec.kind = "files";
  spec.dir = kind_directory("files");
  spec.name_prefix = opts.name_prefix.empty() ? "config" : opts.name_prefix;
  spec.extension = ".tar";
  spec.format = "tar-pax";
  spec.compression = opts.compression;
  spec.level = opts.level;
  Manifest out = repo.publish(*source, spec, ctx, [&](Manifest& m) {
    m.source = {
        {"base_dir", info.base_dir},
        {"paths", opts.paths},
        {"excluded", info.excluded},
        {"missing", info.missing},
        {"exclude_patterns", opts.excludes},
        {"secret_excludes", !opts.include_secrets},
    };
  }, [&](Manifest& m, const RunContext& run) {
    // The member list is its own object: one entry per member would make the manifest
    // of a large tree too big for the catalog.
    files::store_member_list(repo.storage(), m, info.members, run);
  });
  confirm_listed(repo, out, ctx);
  return out;
}

}  // namespace mevbackup
