// The checks of a files restore on each tar member, in archive order: the member's own
// safety, its place among the members before it, and the backup's member list.
#pragma once

#include <archive_entry.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mevbackup::files {

// restore_failed: "refusing archive member "<name>": <why>".
[[noreturn]] void refuse_member(const std::string& name, const std::string& why);

enum class EntryKind { file, dir, symlink, hardlink };

// A member admitted for restore.
struct Entry {
  std::string name;
  EntryKind kind = EntryKind::file;
  unsigned mode = 0;
  int64_t mtime = 0;
  long mtime_nsec = 0;
  std::string sha256;  // files and hard links
  std::string link;    // symlink target / hard link target name
};

class MemberChecks {
 public:
  // `members`: the backup's member list (load_member_list), nullopt for none (a tar
  // stream, an adopted archive: then the tar's members are checked only for safety).
  // `only`: the --only globs (empty: every member is wanted).
  MemberChecks(std::string backup_id, const std::optional<nlohmann::json>& members, std::vector<std::string> only,
               bool keep_special_modes);

  // Before the member's content. Throws restore_failed naming an unsafe member (absolute
  // name, "..", a duplicate, a path below a symlink or a file of the archive, a link
  // leading outside, a hard link to a file not restored before it, a special file, a
  // sparse member) and corrupt for one the member list lacks or describes otherwise
  // (size, mode, owner). Clears setuid/setgid/world-write bits in `e` unless kept.
  // nullopt for the archive's root ("./"), which is skipped. *wanted: --only selects it.
  std::optional<Entry> admit(archive_entry* e, bool* wanted);
  // After the content: a file's SHA-256 (computed by the caller into en.sha256, which a
  // hard link takes from its file) against the member list.
  void content(Entry& en, bool wanted);
  // At the archive's end: every listed member was there, every --only glob matched.
  void finish() const;

 private:
  bool selected(const std::string& name);
  void check_header(archive_entry* e, const Entry& en, const nlohmann::json& mm) const;

  std::string id_;
  bool has_list_ = false;
  std::map<std::string, nlohmann::json> listed_;
  std::vector<std::string> only_;
  std::vector<bool> only_used_;
  bool keep_special_modes_;
  std::set<std::string> seen_, symlinks_, files_, ancestors_, nondirs_, selected_files_;
  std::map<std::string, std::string> file_sha_;
};

}  // namespace mevbackup::files
