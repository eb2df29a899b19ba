// Restore to a point: the base backup preceding the target unpacked into an empty data
// directory, recovery.signal and the recovery settings written, optionally the server
// started (as the data directory's owner) and watched until recovery ends.
//
// Each tar is pulled from storage by libarchive through our own decompressor, hashed on
// the way, and checked against the manifest at its end; a mismatch (or any failure)
// empties the data directory again so nothing half-restored looks usable.
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "mevbackup/digest.hpp"
#include "mevbackup/file_stream.hpp"
#include "mevbackup/lock.hpp"
#include "mevbackup/pitr.hpp"
#include "../files/files_common.hpp"
#include "../io/subprocess.hpp"

namespace mevbackup::pitr {

namespace {

namespace fs = std::filesystem;
using files::archive_message;

Error sys_error(int e, const std::string& what) {
  Code c = e == ENOENT ? Code::not_found : e == EACCES || e == EPERM ? Code::permission
           : e == ENOSPC                                             ? Code::no_space
                                                                     : Code::io;
  return Error(c, fmt::format("{}: {}", what, std::strerror(e)));
}

struct Owner {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name;  // empty when the uid has no passwd entry
};

Owner owner_by_name(const std::string& name) {
  std::vector<char> buf(16384);
  passwd pw{}, *res = nullptr;
  if (getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &res) != 0 || !res)
    throw Error(Code::not_found, fmt::format("no user \"{}\" on this system", name));
  return {pw.pw_uid, pw.pw_gid, pw.pw_name};
}

Owner owner_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw sys_error(errno, fmt::format("cannot stat {}", path));
  Owner o{st.st_uid, st.st_gid, ""};
  std::vector<char> buf(16384);
  passwd pw{}, *res = nullptr;
  if (getpwuid_r(st.st_uid, &pw, buf.data(), buf.size(), &res) == 0 && res) o.name = pw.pw_name;
  return o;
}

std::string shell_word(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:") ==
                        std::string::npos)
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

bool dir_is_empty(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  if (!d) throw sys_error(errno, fmt::format("cannot read directory {}", path));
  bool empty = true;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) {
      empty = false;
      break;
    }
  }
  ::closedir(d);
  return empty;
}

// Makes `path` an empty directory of mode 0700 owned by `o`. Returns true when it was
// created (so that a failure can remove it again).
bool prepare_empty_dir(const std::string& path, const Owner& o, const char* what) {
  struct stat st {};
  bool created = false;
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) throw Error(Code::not_empty, fmt::format("{} {} exists and is not a directory", what, path));
    if (!dir_is_empty(path))
      throw Error(Code::not_empty, fmt::format("{} {} is not empty: a point-in-time restore needs an empty directory", what, path));
  } else if (errno == ENOENT) {
    if (::mkdir(path.c_str(), 0700) != 0) throw sys_error(errno, fmt::format("cannot create {} {}", what, path));
    created = true;
  } else {
    throw sys_error(errno, fmt::format("cannot stat {} {}", what, path));
  }
  if (::chmod(path.c_str(), 0700) != 0) throw sys_error(errno, fmt::format("cannot chmod {}", path));
  if (::geteuid() == 0 && ::chown(path.c_str(), o.uid, o.gid) != 0)
    throw sys_error(errno, fmt::format("cannot give {} to uid {}", path, o.uid));
  return created;
}

void empty_dir(const std::string& path) {
  std::error_code ec;
  for (auto& e : fs::directory_iterator(path, ec)) fs::remove_all(e.path(), ec);
}

std::string read_text(const std::string& path, size_t max_tail = 256 * 1024) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return {};
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  if (s.size() > max_tail) s = s.substr(s.size() - max_tail);
  return s;
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

}  // namespace

std::string check_basebackup_member(archive_entry* e, const std::string& part_name, const std::string& where,
                                    std::string* link_target) {
  std::string name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
  while (name.rfind("./", 0) == 0) name.erase(0, 2);
  while (!name.empty() && name.back() == '/') name.pop_back();
  if (name.empty() || name == ".") return "";
  bool bad = name[0] == '/';
  for (size_t i = 0; i < name.size() && !bad;) {
    size_t j = name.find('/', i);
    if (j == std::string::npos) j = name.size();
    std::string comp = name.substr(i, j - i);
    bad = comp == ".." || comp.empty();
    i = j + 1;
  }
  if (bad) throw Error(Code::corrupt, fmt::format("{}: unsafe member name \"{}\"", where, name));
  auto type = archive_entry_filetype(e);
  if (archive_entry_hardlink(e))
    throw Error(Code::corrupt, fmt::format("{}: unexpected hard link \"{}\"", where, name));
  if (type == AE_IFLNK) {
    if (part_name != "base.tar" || name.rfind("pg_tblspc/", 0) != 0 || !all_digits(name.substr(10)) ||
        name.size() > 20)
      throw Error(Code::corrupt, fmt::format("{}: unexpected symbolic link \"{}\"", where, name));
    if (link_target) *link_target = archive_entry_symlink(e) ? archive_entry_symlink(e) : "";
    return name;
  }
  if (type != AE_IFREG && type != AE_IFDIR)
    throw Error(Code::corrupt, fmt::format("{}: unexpected file type of \"{}\"", where, name));
  // PostgreSQL never sends sparse members; a declared hole could claim any size.
  if (archive_entry_sparse_count(e) > 0)
    throw Error(Code::corrupt, fmt::format("{}: unexpected sparse member \"{}\"", where, name));
  return name;
}

std::vector<std::string> check_basebackup_tar(Bytes tar, const std::string& part_name) {
  files::ArchiveRead r(archive_read_new());
  if (!r) throw std::bad_alloc();
  archive_read_support_format_tar(r.get());
  if (archive_read_open_memory(r.get(), tar.data(), tar.size()) != ARCHIVE_OK)
    throw Error(Code::corrupt, fmt::format("{}: not a tar archive: {}", part_name, archive_message(r.get())));
  std::vector<std::string> names;
  for (;;) {
    archive_entry* e = nullptr;
    int rc = archive_read_next_header(r.get(), &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc < ARCHIVE_WARN)
      throw Error(Code::corrupt, fmt::format("{}: bad tar archive: {}", part_name, archive_message(r.get())));
    std::string name = check_basebackup_member(e, part_name, part_name, nullptr);
    if (!name.empty()) names.push_back(name);
    // Read as a restore reads (a hole shows as a jump in the offsets), writing nothing.
    la_int64_t expected = 0;
    for (;;) {
      const void* buf = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      int drc = archive_read_data_block(r.get(), &buf, &size, &offset);
      if (drc == ARCHIVE_EOF) break;
      if (drc < ARCHIVE_WARN)
        throw Error(Code::corrupt, fmt::format("{}: reading \"{}\": {}", part_name, name, archive_message(r.get())));
      if (offset != expected)
        throw Error(Code::corrupt, fmt::format("{}: unexpected sparse member \"{}\"", part_name, name));
      expected += static_cast<la_int64_t>(size);
    }
  }
  return names;
}

namespace {

// Extracts one tar part under `root` (a real path without symlinks). Symlinks are
// allowed only as pg_tblspc/<oid> in the base archive, and are not created from it:
// unpack_parts makes them from the caller's tablespace map.
void extract_part(Storage& st, const BaseBackupPart& part, const std::string& root, const Owner& owner,
                  const RunContext& ctx) {
  // Pulled by libarchive, with every check of a restore (artifact_source).
  auto stored = artifact_source(st, part.stored, ctx);
  files::ArchiveSourceClient reader(*stored);
  files::ArchiveRead r(archive_read_new());
  files::ArchiveWrite w(archive_write_disk_new());
  if (!r || !w) throw std::bad_alloc();
  archive_read_support_format_tar(r.get());
  int flags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
              ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_NO_OVERWRITE;
  if (::geteuid() == 0) flags |= ARCHIVE_EXTRACT_OWNER;  // uid/gid set below, never looked up by name
  archive_write_disk_set_options(w.get(), flags);
  auto check_read = [&](int rc, const std::string& what) {
    if (rc >= ARCHIVE_WARN) return;
    reader.rethrow();
    throw Error(Code::corrupt, fmt::format("{}: {}: {}", part.stored.path, what, archive_message(r.get())));
  };
  check_read(reader.open(r.get()), "not a tar archive");
  for (;;) {
    archive_entry* e = nullptr;
    int rc = archive_read_next_header(r.get(), &e);
    if (rc == ARCHIVE_EOF) break;
    check_read(rc, "bad tar archive");
    std::string target;
    std::string name = check_basebackup_member(e, part.name, part.stored.path, &target);
    if (name.empty()) continue;
    auto type = archive_entry_filetype(e);
    if (type == AE_IFLNK) continue;
    std::string full = root + "/" + name;
    archive_entry_copy_pathname(e, full.c_str());
    archive_entry_set_uid(e, owner.uid);
    archive_entry_set_gid(e, owner.gid);
    int wrc = archive_write_header(w.get(), e);
    if (wrc < ARCHIVE_WARN)
      throw Error(Code::restore_failed, fmt::format("cannot create {}: {}", full, archive_message(w.get())));
    if (type == AE_IFREG) {
      la_int64_t written = 0;
      for (;;) {
        const void* buf = nullptr;
        size_t size = 0;
        la_int64_t offset = 0;
        int drc = archive_read_data_block(r.get(), &buf, &size, &offset);
        if (drc == ARCHIVE_EOF) break;
        check_read(drc, fmt::format("reading \"{}\"", name));
        if (offset != written)
          throw Error(Code::corrupt, fmt::format("{}: unexpected sparse member \"{}\"", part.stored.path, name));
        written += static_cast<la_int64_t>(size);
        // A failed write(2) (a full disk) is only ARCHIVE_WARN to libarchive.
        if (archive_write_data_block(w.get(), buf, size, offset) != ARCHIVE_OK)
          files::throw_disk_write_failure(w.get(), "writing " + full);
      }
    }
    if (archive_write_finish_entry(w.get()) != ARCHIVE_OK) files::throw_disk_write_failure(w.get(), "finishing " + full);
  }
  if (archive_write_close(w.get()) != ARCHIVE_OK)
    files::throw_disk_write_failure(w.get(), "finishing the restore into " + root);
  reader.drain();  // the stored bytes' checks come at their end
}

void write_owned(const std::string& path, const std::string& text, bool append, const Owner& o) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0600);
  if (fd < 0) throw sys_error(errno, fmt::format("cannot write {}", path));
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      throw sys_error(e, fmt::format("cannot write {}", path));
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) throw sys_error(errno, fmt::format("cannot write {}", path));
  if (::geteuid() == 0 && ::chown(path.c_str(), o.uid, o.gid) != 0)
    throw sys_error(errno, fmt::format("cannot give {} to uid {}", path, o.uid));
}

std::string utc_conf_time(TimePoint t) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count() % 1000000;
  if (us < 0) us += 1000000;
  std::string s = format_rfc3339(t);  // YYYY-MM-DDTHH:MM:SSZ
  s[10] = ' ';
  s.pop_back();
  return fmt::format("{}.{:06}+00", s, us);
}

bool valid_setting_name(const std::string& n) {
  return !n.empty() && n.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_.") == std::string::npos;
}

// Why recovery stopped, from the server log: the FATAL line and the first WAL segment
// the archive could not supply.
std::string diagnose(Storage& st, const Manifest& m, const std::string& log_path) {
  std::string log = read_text(log_path);
  std::string fatal, last_restored;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find("FATAL:") != std::string::npos || line.find("PANIC:") != std::string::npos) {
      if (fatal.empty() || line.find("recovery") != std::string::npos || fatal.find("recovery") == std::string::npos)
        fatal = line.substr(line.find(line.find("FATAL:") != std::string::npos ? "FATAL:" : "PANIC:"));
    }
    auto p = line.find("restored log file \"");
    if (p != std::string::npos) {
      std::string n = line.substr(p + 19, 24);
      if (n.size() == 24 && n.find('"') == std::string::npos) last_restored = n;
    }
  }
  std::string out = fatal.empty() ? "the server stopped during recovery" : fatal;
  try {
    uint64_t seg_size = m.source.at("wal_segment_size").get<uint64_t>();
    std::string next;
    if (!last_restored.empty()) {
      uint32_t tli = static_cast<uint32_t>(std::stoul(last_restored.substr(0, 8), nullptr, 16));
      next = wal_segment_name_from_number(tli, wal_segment_number(last_restored, seg_size) + 1, seg_size);
    } else {
      next = m.source.at("start_segment").get<std::string>();
    }
    if (!st.stat(wal_payload_key(parse_wal_file_name(next))))
      out += fmt::format("; WAL segment {} is missing from the archive {}", next, st.describe());
    if (!last_restored.empty()) out += fmt::format(" (last segment restored: {})", last_restored);
  } catch (const std::exception&) {
  }
  return out + fmt::format("; server log: {}", log_path);
}

// pg_controldata's "Database cluster state" is "in production" (recovery finished).
bool in_production(const std::string& pg_controldata, const std::string& data_dir) {
  SpawnOptions so;
  so.argv = {pg_controldata, "-D", data_dir};
  so.env["LC_ALL"] = std::string("C");
  so.env["LANG"] = std::string("C");
  so.env["LANGUAGE"] = std::nullopt;
  so.pipe_stdout = true;
  Subprocess p(so);
  std::string out;
  char buf[4096];
  while (size_t n = p.read_stdout(MutBytes(reinterpret_cast<std::byte*>(buf), sizeof buf))) out.append(buf, n);
  if (p.wait() != 0) return false;
  auto pos = out.find("Database cluster state:");
  if (pos == std::string::npos) return false;
  auto q = out.find_first_not_of(" ", pos + 23);
  return q != std::string::npos && out.compare(q, 13, "in production") == 0;
}

}  // namespace

nlohmann::json PitrRestoreResult::to_json() const {
  return {{"backup", backup.id},
          {"start_lsn", backup.source.value("start_lsn", "")},
          {"stop_lsn", backup.source.value("stop_lsn", "")},
          {"stop_time", backup.source.value("stop_time", "")},
          {"started", started},
          {"start_command", start_command},
          {"summary", summary}};
}

namespace {

// ---- restore_pitr, step by step ----------------------------------------------------

struct Targets {
  std::optional<TimePoint> time;
  std::optional<uint64_t> lsn;
  int count = 0;
};

// The request is checked before anything is read or written.
Targets check_request(const PitrRestoreOptions& opts) {
  Targets t;
  t.count = !opts.target_time.empty() + !opts.target_lsn.empty() + !opts.target_name.empty();
  if (t.count > 1) throw Error(Code::invalid_argument, "give at most one of target time, target LSN and target name");
  if (opts.data_dir.empty()) throw Error(Code::invalid_argument, "no data directory given");
  if (!opts.backup_id.empty() && !valid_backup_id(opts.backup_id))
    throw Error(Code::invalid_argument, fmt::format("\"{}\" is not a backup id ([A-Za-z0-9_.-])", opts.backup_id));
  if (opts.restore_command.empty() && opts.repo_url.empty())
    throw Error(Code::invalid_argument, "the restore_command needs the repository location (repo_url)");
  if (!opts.target_time.empty()) t.time = parse_target_time(opts.target_time);
  if (!opts.target_lsn.empty()) t.lsn = parse_lsn(opts.target_lsn);
  for (auto& [k, v] : opts.settings)
    if (!valid_setting_name(k)) throw Error(Code::invalid_argument, fmt::format("\"{}\" is not a setting name", k));
  return t;
}

// 1. The base backup: the newest that ended before the target (or the one named).
Manifest choose_base_backup(Repository& repo, const PitrRestoreOptions& opts, const Targets& t, const RunContext& ctx) {
  std::vector<Manifest> all = repo.list("basebackup", ctx.log);
  std::optional<Manifest> chosen;
  for (auto& m : all) {
    if (!opts.backup_id.empty() && m.id != opts.backup_id) continue;
    if (!repo.trusted(m) && opts.backup_id.empty()) {  // a named one fails in load(), saying why
      if (ctx.log) ctx.log(LogLevel::warning, fmt::format("passing over base backup {}: {}", m.id, m.signature_problem));
      continue;
    }
    if (t.time && parse_target_time(m.source.value("stop_time", m.finished_at)) > *t.time) continue;
    if (t.lsn && parse_lsn(m.source.value("stop_lsn", "0/0")) > *t.lsn) continue;
    chosen = m;  // oldest first: the last match is the newest
  }
  if (chosen) return repo.load(*chosen);  // read again, its signature checked (signing.hpp)
  std::string what = !opts.backup_id.empty() ? fmt::format("base backup \"{}\"", opts.backup_id) : "base backup";
  if (t.time || t.lsn)
    throw Error(Code::not_found, fmt::format("no {} in {} ended before the target {}{}", what, repo.storage().describe(),
                                             t.time ? opts.target_time : opts.target_lsn,
                                             all.empty() ? " (there is none)" : ""));
  throw Error(Code::not_found, fmt::format("no {} in {}", what, repo.storage().describe()));
}

// 2a. Who the restored files belong to: the named user, else the data directory's (or
// its parent's) owner. Only root can give files away, and PostgreSQL never runs as root.
Owner restore_owner(const PitrRestoreOptions& opts, const std::string& data_dir) {
  Owner owner;
  if (!opts.owner.empty()) {
    owner = owner_by_name(opts.owner);
  } else {
    struct stat sd {};
    std::string parent = fs::path(data_dir).parent_path().string();
    owner = owner_of(::stat(data_dir.c_str(), &sd) == 0 ? data_dir : (parent.empty() ? "." : parent));
  }
  if (::geteuid() != 0 && owner.uid != ::geteuid())
    throw Error(Code::permission, fmt::format("cannot give the restored files to {} (uid {}): only root can; restore as "
                                              "that user or as root",
                                              owner.name.empty() ? "its owner" : owner.name, owner.uid));
  if (opts.start && owner.uid == 0)
    throw Error(Code::invalid_argument, fmt::format("{} would be owned by root and PostgreSQL refuses to run as root: "
                                                    "name the server's user (owner)", data_dir));
  return owner;
}

// 2b. Where each tablespace goes (oid -> directory). That is the caller's decision, never
// the manifest's: a forged location would have a root restore create, chown and fill a
// directory of its choosing.
std::map<std::string, std::string> tablespace_targets(const Manifest& m, const std::vector<BaseBackupPart>& parts,
                                                      const PitrRestoreOptions& opts) {
  std::map<std::string, std::string> ts_target;
  std::vector<std::string> unmapped;
  for (auto& p : parts)
    if (!p.tablespace_oid.empty()) {
      auto it = opts.tablespace_map.find(p.tablespace_oid);
      if (it == opts.tablespace_map.end()) {
        unmapped.push_back(fmt::format("{} (originally {})", p.tablespace_oid, p.tablespace_location));
        continue;
      }
      ts_target[p.tablespace_oid] = it->second == kTablespaceOriginal ? p.tablespace_location : it->second;
    }
  if (!unmapped.empty()) {
    std::string list;
    for (auto& u : unmapped) list += (list.empty() ? "" : ", ") + u;
    throw Error(Code::invalid_argument,
                fmt::format("base backup {} has tablespace(s) {}: give each a location with --tablespace-map OID=DIR, or "
                            "OID={} to confirm its original location",
                            m.id, list, kTablespaceOriginal));
  }
  for (auto& [oid, _] : opts.tablespace_map)
    if (!ts_target.count(oid))
      throw Error(Code::invalid_argument, fmt::format("base backup {} has no tablespace {}", m.id, oid));
  for (auto& [oid, dir] : ts_target)
    if (dir.empty() || dir[0] != '/')
      throw Error(Code::invalid_argument, fmt::format("tablespace {} needs an absolute location, not \"{}\"", oid, dir));
  return ts_target;
}

// 3. The archives, each into its directory (`root`: the resolved data directory), and
// the tablespace links pointing at the (possibly remapped) locations.
void unpack_parts(Repository& repo, const std::vector<BaseBackupPart>& parts, const std::string& root,
                  const std::map<std::string, std::string>& ts_target, const Owner& owner, const RunContext& ctx) {
  char real[PATH_MAX];
  for (auto& p : parts) {
    if (p.name == "backup_manifest") {
      // PostgreSQL's own manifest goes beside the files, where pg_verifybackup looks.
      FileSinkOptions fo;
      fo.on_open = [&owner](int fd, const std::string& tmp) {
        if (::geteuid() == 0 && ::fchown(fd, owner.uid, owner.gid) != 0)
          throw sys_error(errno, fmt::format("cannot give {} to uid {}", tmp, owner.uid));
      };
      auto sink = make_file_sink(root + "/backup_manifest", fo);
      repo.restore_stream(p.stored, *sink, ctx);
      continue;
    }
    std::string into = root;
    if (!p.tablespace_oid.empty()) {
      const std::string& dir = ts_target.at(p.tablespace_oid);
      if (!::realpath(dir.c_str(), real)) throw sys_error(errno, fmt::format("cannot resolve {}", dir));
      into = real;
    }
    if (ctx.log) ctx.log(LogLevel::info, fmt::format("unpacking {} into {}", p.stored.path, into));
    extract_part(repo.storage(), p, into, owner, ctx);
  }
  for (auto& [oid, dir] : ts_target) {
    std::string link = root + "/pg_tblspc/" + oid;
    ::unlink(link.c_str());
    if (::symlink(dir.c_str(), link.c_str()) != 0) throw sys_error(errno, fmt::format("cannot create {}", link));
    if (::geteuid() == 0) (void)::lchown(link.c_str(), owner.uid, owner.gid);
  }
}

// 4. Recovery settings: restore_command and the target in postgresql.auto.conf, and
// recovery.signal; then everything restored is made durable before a server trusts it.
void write_recovery_settings(Repository& repo, const Manifest& m, const PitrRestoreOptions& opts, const Targets& t,
                             const std::string& root, const Owner& owner) {
  std::string cmd = opts.restore_command;
  if (cmd.empty()) {
    cmd = restore_command_word(opts.mevbackup_path) + " wal-fetch --repo " + restore_command_word(opts.repo_url);
    for (auto& a : opts.wal_fetch_args) cmd += " " + restore_command_word(a);
    cmd += " %f %p";
  }
  std::string conf = fmt::format("\n# Written by mevbackup restore pitr at {} from base backup {}\n",
                                 format_rfc3339(repo.clock().now()), m.id);
  conf += "restore_command = " + conf_quote(cmd) + "\n";
  if (t.time) conf += "recovery_target_time = " + conf_quote(utc_conf_time(*t.time)) + "\n";
  if (t.lsn) conf += "recovery_target_lsn = " + conf_quote(format_lsn(*t.lsn)) + "\n";
  if (!opts.target_name.empty()) conf += "recovery_target_name = " + conf_quote(opts.target_name) + "\n";
  if (t.count) conf += "recovery_target_action = 'promote'\n";
  for (auto& [k, v] : opts.settings) conf += k + " = " + conf_quote(v) + "\n";
  write_owned(root + "/postgresql.auto.conf", conf, true, owner);
  write_owned(root + "/recovery.signal", "", false, owner);
  int dfd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::syncfs(dfd);
    ::close(dfd);
  }
}

// 2 to 4: the empty directories, then the files; a failure empties what it used and
// removes what it created.
void restore_files(Repository& repo, const Manifest& m, const std::vector<BaseBackupPart>& parts,
                   const PitrRestoreOptions& opts, const Targets& t, const std::string& data_dir,
                   const std::map<std::string, std::string>& ts_target, const Owner& owner, const RunContext& ctx) {
  std::vector<std::string> created, used;
  try {
    if (prepare_empty_dir(data_dir, owner, "data directory")) created.push_back(data_dir);
    used.push_back(data_dir);
    for (auto& [oid, dir] : ts_target) {
      if (prepare_empty_dir(dir, owner, "tablespace directory")) created.push_back(dir);
      used.push_back(dir);
    }
    char real[PATH_MAX];
    if (!::realpath(data_dir.c_str(), real)) throw sys_error(errno, fmt::format("cannot resolve {}", data_dir));
    std::string root = real;
    unpack_parts(repo, parts, root, ts_target, owner, ctx);
    write_recovery_settings(repo, m, opts, t, root, owner);
  } catch (...) {
    for (auto& d : used) empty_dir(d);
    for (auto it = created.rbegin(); it != created.rend(); ++it) ::rmdir(it->c_str());
    throw;
  }
}

// 5a. The command that starts the server (as the files' owner when run as root).
std::vector<std::string> start_argv(const std::string& data_dir, const Owner& owner, const std::string& pg_ctl,
                                    const std::string& log_file) {
  std::vector<std::string> argv;
  if (::geteuid() == 0 && owner.uid != 0) {
    if (owner.name.empty())
      throw Error(Code::invalid_argument, fmt::format("uid {} owning {} has no user name to run the server as", owner.uid, data_dir));
    std::string runuser = ::access("/usr/sbin/runuser", X_OK) == 0 ? "/usr/sbin/runuser" : "runuser";
    argv = {runuser, "-u", owner.name, "--"};
  }
  for (const std::string& a : {pg_ctl, std::string("-D"), data_dir, std::string("-l"), log_file, std::string("start")})
    argv.push_back(a);
  return argv;
}

// 5b. Starts the server and waits until recovery is over and it runs promoted.
void start_and_watch(Storage& st, const Manifest& m, const PitrRestoreOptions& opts, std::vector<std::string> argv,
                     const std::string& pg_ctl, const std::string& data_dir, const std::string& log_file,
                     const RunContext& ctx) {
  argv.insert(argv.end() - 1, "-W");  // pg_ctl returns at once; recovery is watched below
  SpawnOptions so;
  so.argv = argv;
  // The server inherits pg_ctl's environment, and its restore_command (mevbackup wal-fetch)
  // needs the repository's settings and credentials.
  so.inherit_env = {"PG*", "MEVBACKUP_*", "AWS_*"};
  so.pipe_stdout = true;  // "server starting": not ours to print
  {
    Subprocess p(so);
    char buf[4096];
    while (p.read_stdout(MutBytes(reinterpret_cast<std::byte*>(buf), sizeof buf))) {
    }
    int rc = p.wait();
    if (rc != 0)
      throw Error(Code::restore_failed, fmt::format("{} {}: {}", pg_ctl, describe_exit(rc), p.stderr_text()));
  }
  if (ctx.log) ctx.log(LogLevel::info, fmt::format("server starting on {}; waiting for recovery to finish", data_dir));
  std::string pg_controldata = pg_ctl.substr(0, pg_ctl.rfind('/') + 1) + "pg_controldata";
  auto t0 = std::chrono::steady_clock::now();
  auto deadline = t0 + std::chrono::seconds(opts.timeout_seconds > 0 ? opts.timeout_seconds : 3600);
  bool seen_pid = false;
  for (;;) {
    if (ctx.cancel) ctx.cancel->check();
    std::string pidfile = read_text(data_dir + "/postmaster.pid");
    bool dead = false;
    if (!pidfile.empty()) {
      seen_pid = true;
      std::vector<std::string> lines;
      std::istringstream in(pidfile);
      for (std::string l; std::getline(in, l);) lines.push_back(l);
      // "ready" is also written when hot standby opens, so recovery is over only once
      // the server removed recovery.signal and pg_control says "in production".
      if (lines.size() >= 8 && lines[7].find("ready") != std::string::npos &&
          ::access((data_dir + "/recovery.signal").c_str(), F_OK) != 0 && in_production(pg_controldata, data_dir))
        return;
      long pid = std::atol(lines[0].c_str());
      if (process_gone(pid)) dead = true;
    } else if (seen_pid || std::chrono::steady_clock::now() - t0 > std::chrono::seconds(20)) {
      dead = true;
    }
    if (dead)
      throw Error(Code::restore_failed, fmt::format("recovery of {} from base backup {} failed: {}", data_dir, m.id,
                                                    diagnose(st, m, log_file)));
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(Code::io, fmt::format("recovery of {} still running after {} s; the server keeps running (log: {})",
                                        data_dir, opts.timeout_seconds, log_file),
                  true);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace

PitrRestoreResult restore_pitr(Repository& repo, const PitrRestoreOptions& opts, const RunContext& ctx) {
  // Shared, as every backup and restore: a prune waits for it (lock.hpp).
  RepositoryLock lock(repo.storage(), LockKind::shared, ctx);
  const RunContext gctx = lock.guard(ctx);
  const Targets t = check_request(opts);
  const Manifest m = choose_base_backup(repo, opts, t, gctx);
  const std::vector<BaseBackupPart> parts = basebackup_parts(m);
  std::string data_dir = opts.data_dir;
  while (data_dir.size() > 1 && data_dir.back() == '/') data_dir.pop_back();
  const Owner owner = restore_owner(opts, data_dir);
  const auto ts_target = tablespace_targets(m, parts, opts);
  restore_files(repo, m, parts, opts, t, data_dir, ts_target, owner, gctx);

  // 5. How to start, or start and watch.
  PitrRestoreResult res;
  res.backup = m;
  int major = m.source.value("server_version_num", 150000) / 10000;
  std::string pg_ctl = opts.pg_ctl_path;
  if (pg_ctl.empty()) {
    pg_ctl = fmt::format("/usr/lib/postgresql/{}/bin/pg_ctl", major);
    if (::access(pg_ctl.c_str(), X_OK) != 0) pg_ctl = find_in_path("pg_ctl").value_or("pg_ctl");
  }
  std::string log_file = opts.log_file.empty() ? data_dir + "/pitr_recovery.log" : opts.log_file;
  std::vector<std::string> argv = start_argv(data_dir, owner, pg_ctl, log_file);
  for (auto& a : argv) res.start_command += (res.start_command.empty() ? "" : " ") + shell_word(a);
  std::string target_text = t.time ? "time " + opts.target_time
                            : t.lsn ? "LSN " + opts.target_lsn
                            : !opts.target_name.empty() ? "restore point " + opts.target_name
                                                        : "the end of the archived WAL";
  res.summary = fmt::format("restored base backup {} (WAL {} .. {}, ended {}) into {}; recovery target: {}\n", m.id,
                            m.source.value("start_lsn", "?"), m.source.value("stop_lsn", "?"),
                            m.source.value("stop_time", m.finished_at), data_dir, target_text);
  if (owner.uid == 0)
    res.summary += "warning: the files belong to root and PostgreSQL refuses to run as root: chown -R them to the "
                   "server's user (or restore again with --owner)\n";
  if (!opts.start) {
    res.summary += "start the server to replay the archived WAL:\n  " + res.start_command + "\n";
    return res;
  }
  start_and_watch(repo.storage(), m, opts, argv, pg_ctl, data_dir, log_file, gctx);
  res.started = true;
  std::string stop;
  for (auto& a : argv) {
    if (a == "-W" || a == "start" || a == "-l" || a == log_file) continue;
    stop += (stop.empty() ? "" : " ") + shell_word(a);
  }
  res.summary += fmt::format("recovery finished and the server runs (promoted); log: {}\nstop it with:\n  {} stop\n",
                             log_file, stop);
  return res;
}

}  // namespace mevbackup::pitr
