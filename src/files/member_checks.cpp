#include "member_checks.hpp"

#include <fnmatch.h>
#include <sys/stat.h>

#include <fmt/format.h>

#include "files_common.hpp"
#include "mevbackup/error.hpp"

namespace mevbackup::files {

void refuse_member(const std::string& name, const std::string& why) {
  throw Error(Code::restore_failed, fmt::format("refusing archive member \"{}\": {}", name, why));
}

namespace {

[[noreturn]] void unsafe(const std::string& name, const std::string& why) { refuse_member(name, why); }

bool has_prefix_dir(const std::string& name, const std::set<std::string>& set) {
  auto parts = split_name(name);
  for (size_t i = 1; i < parts.size(); ++i)
    if (set.count(join_name(parts, i))) return true;
  return false;
}

const char* kind_word(EntryKind k) {
  return k == EntryKind::dir ? "dir" : k == EntryKind::symlink ? "symlink" : "file";
}

}  // namespace

MemberChecks::MemberChecks(std::string backup_id, const std::optional<nlohmann::json>& members,
                           std::vector<std::string> only, bool keep_special_modes)
    : id_(std::move(backup_id)), only_(std::move(only)), keep_special_modes_(keep_special_modes) {
  if (members && members->is_array()) {
    has_list_ = true;
    for (auto& j : *members) listed_[j.value("name", "")] = j;
  }
  only_used_.assign(only_.size(), false);
}

std::optional<Entry> MemberChecks::admit(archive_entry* e, bool* wanted) {
  const char* raw_c = archive_entry_pathname(e);
  std::string raw = raw_c ? raw_c : "";
  if (raw.empty()) unsafe(raw, "empty name");
  if (raw[0] == '/') unsafe(raw, "absolute name");
  auto parts = split_name(raw);
  for (auto& p : parts)
    if (p == "..") unsafe(raw, "\"..\" in the name");
  std::string name = join_name(parts);
  if (name.empty()) return std::nullopt;  // "./": the root itself
  Entry en;
  en.name = name;
  en.mtime = archive_entry_mtime(e);
  en.mtime_nsec = archive_entry_mtime_nsec(e);
  const char* hl = archive_entry_hardlink(e);
  auto ft = archive_entry_filetype(e);
  if (hl && *hl) {
    en.kind = EntryKind::hardlink;
    std::string h = hl;
    if (h[0] == '/') unsafe(name, fmt::format("hard link to the absolute path \"{}\"", h));
    auto hp = split_name(h);
    for (auto& p : hp)
      if (p == "..") unsafe(name, fmt::format("hard link to \"{}\" leads outside the target", h));
    en.link = join_name(hp);
    if (!files_.count(en.link)) unsafe(name, fmt::format("hard link to \"{}\", which is not a file restored before it", h));
  } else if (ft == AE_IFREG) {
    en.kind = EntryKind::file;
  } else if (ft == AE_IFDIR) {
    en.kind = EntryKind::dir;
  } else if (ft == AE_IFLNK) {
    en.kind = EntryKind::symlink;
    const char* t = archive_entry_symlink(e);
    en.link = t ? t : "";
    // Since no member is written below a symlink, every directory above a link is real,
    // so the lexical check of symlink_escape is exact.
    std::string why = symlink_escape(name, en.link);
    if (!why.empty()) unsafe(name, why);
  } else {
    unsafe(name, "not a file, directory or link (devices, fifos and sockets are not restored)");
  }
  if (seen_.count(name)) unsafe(name, "it appears twice in the archive");
  if (has_prefix_dir(name, symlinks_)) unsafe(name, "it would be written through a symlink of the archive");
  // The same verdict with or without dry_run: libarchive would refuse to create a
  // member below a file it just wrote, so this check decides, not the disk.
  if (has_prefix_dir(name, nondirs_)) unsafe(name, "it would be written below a member the archive restores as a file");
  // The library's own backups never write sparse members; a declared hole would be
  // hashed (and written) as zeros, so a small archive could claim petabytes.
  if (archive_entry_sparse_count(e) > 0) unsafe(name, "sparse members are not restored");
  if (en.kind != EntryKind::dir && ancestors_.count(name)) unsafe(name, "it would replace a directory that holds other members");
  seen_.insert(name);
  for (size_t i = 1; i < parts.size(); ++i) ancestors_.insert(join_name(parts, i));
  if (en.kind == EntryKind::symlink) symlinks_.insert(name);
  if (en.kind != EntryKind::dir) nondirs_.insert(name);

  bool want = selected(name);
  if (en.kind == EntryKind::hardlink && want && !selected_files_.count(en.link))
    unsafe(name, fmt::format("hard link to \"{}\", which --only leaves out", en.link));

  // The member list's word on the header, before anything is written.
  if (has_list_) {
    auto it = listed_.find(name);
    if (it == listed_.end())
      throw Error(Code::corrupt, fmt::format("backup {}: archive member \"{}\" is not in the manifest", id_, name));
    check_header(e, en, it->second);
  }
  // Setuid/setgid and world-writable bits are dropped unless asked for: a restore as
  // root would otherwise plant them wherever the archive says.
  unsigned perm = archive_entry_perm(e);
  if (!keep_special_modes_ && en.kind != EntryKind::symlink) {
    perm &= ~static_cast<unsigned>(S_ISUID | S_ISGID | S_IWOTH);
    archive_entry_set_perm(e, perm);
  }
  en.mode = perm;
  *wanted = want;
  return en;
}

void MemberChecks::content(Entry& en, bool wanted) {
  if (en.kind == EntryKind::file) {
    files_.insert(en.name);
    if (wanted) selected_files_.insert(en.name);
    file_sha_[en.name] = en.sha256;
  } else if (en.kind == EntryKind::hardlink) {
    en.sha256 = file_sha_[en.link];
  }
  if (!has_list_) return;
  const nlohmann::json& mm = listed_.at(en.name);
  std::string mtype = mm.value("type", "");
  if (mtype != kind_word(en.kind))
    throw Error(Code::corrupt, fmt::format("backup {}: member \"{}\" is a {} in the archive but a {} in the manifest", id_,
                                           en.name, kind_word(en.kind), mtype));
  if (!en.sha256.empty() && mm.value("sha256", "") != en.sha256)
    throw Error(Code::corrupt, fmt::format("backup {}: member \"{}\" does not match the SHA-256 in its manifest", id_, en.name));
}

void MemberChecks::finish() const {
  if (has_list_ && only_.empty() && seen_.size() != listed_.size())
    throw Error(Code::corrupt, fmt::format("backup {}: the archive holds {} members, its manifest lists {}", id_,
                                           seen_.size(), listed_.size()));
  for (size_t g = 0; g < only_.size(); ++g)
    if (!only_used_[g]) throw Error(Code::not_found, fmt::format("--only \"{}\" matches nothing in backup {}", only_[g], id_));
}

bool MemberChecks::selected(const std::string& name) {
  if (only_.empty()) return true;
  auto parts = split_name(name);
  bool any = false;
  for (size_t g = 0; g < only_.size(); ++g) {
    std::string pat = only_[g];
    while (pat.rfind("./", 0) == 0) pat.erase(0, 2);
    while (pat.size() > 1 && pat.back() == '/') pat.pop_back();
    for (size_t i = 1; i <= parts.size(); ++i) {
      if (fnmatch(pat.c_str(), join_name(parts, i).c_str(), 0) == 0) {
        only_used_[g] = true;
        any = true;
        break;
      }
    }
  }
  return any;
}

// The archive's header against what the backup recorded: the declared size (which
// bounds what is read), the mode and, where recorded, the owner.
void MemberChecks::check_header(archive_entry* e, const Entry& en, const nlohmann::json& mm) const {
  auto mismatch = [&](const char* what, const std::string& archive, const std::string& manifest) {
    return Error(Code::corrupt, fmt::format("backup {}: member \"{}\" has {} {} in the archive but {} in the manifest", id_,
                                            en.name, what, archive, manifest));
  };
  if (en.kind == EntryKind::file && mm.contains("size") && mm["size"].is_number_integer()) {
    auto want = mm["size"].get<int64_t>();
    auto got = static_cast<int64_t>(archive_entry_size(e));
    if (got != want) throw mismatch("size", std::to_string(got), std::to_string(want));
  }
  if (en.kind != EntryKind::hardlink && mm.contains("mode") && mm["mode"].is_string()) {
    std::string got = mode_string(archive_entry_perm(e)), want = mm["mode"].get<std::string>();
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

}  // namespace mevbackup::files
