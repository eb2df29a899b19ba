// Pieces shared by the file-set Dumper and Restorer: names and patterns.
#pragma once

#include <archive.h>

#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <optional>

#include "mevbackup/manifest.hpp"
#include "mevbackup/repository.hpp"
#include "mevbackup/stream.hpp"

namespace mevbackup::files {

// Splits a '/'-separated name into components, dropping empty ones and ".".
std::vector<std::string> split_name(const std::string& name);
std::string join_name(const std::vector<std::string>& parts, size_t n = SIZE_MAX);

// Does `pattern` (an exclude or --only glob) match the relative name? A pattern
// ending in '/' matches directories only; one without '/' matches the last
// component, the others the whole name.
bool pattern_matches(const std::string& pattern, const std::string& rel, bool is_dir);

// Why a symlink member `name` -> `target` could lead outside the tree it is restored
// into, or "" when it cannot: the target must be relative, with ".." only at its start
// and never more of them than the link's depth.
std::string symlink_escape(const std::string& name, const std::string& target);

// "0644"
std::string mode_string(unsigned mode);

// A failed write of libarchive's disk writer `w` while `what` ("writing \"a.conf\""):
// no_space for a full disk or quota, else restore_failed; the message has libarchive's
// words and the system's ("Write failed: No space left on device").
[[noreturn]] void throw_disk_write_failure(archive* w, const std::string& what);

// The real path of directory `p` (sys_error naming it when it cannot be resolved).
std::string real_dir(const std::string& p);
// Removes `p` and everything below it, if it exists; never throws ("" does nothing).
void remove_tree(const std::string& p) noexcept;

struct ArchiveReadFree {
  void operator()(archive* a) const noexcept { archive_read_free(a); }
};
struct ArchiveWriteFree {
  void operator()(archive* a) const noexcept { archive_write_free(a); }
};
using ArchiveRead = std::unique_ptr<archive, ArchiveReadFree>;
using ArchiveWrite = std::unique_ptr<archive, ArchiveWriteFree>;

inline std::string archive_message(archive* a) {
  const char* s = archive_error_string(a);
  return s && *s ? s : "unknown libarchive error";
}

// libarchive's reader fed by a Source (archive_read_open with this as client data): one
// reader of pulled bytes for every tar read here (the files restore, base backup parts,
// adopt's check). An exception the source throws is kept: rethrow() after a failed
// libarchive call raises it instead of libarchive's "read error".
class ArchiveSourceClient {
 public:
  explicit ArchiveSourceClient(Source& source, size_t buffer = 256 * 1024) : source_(source), buf_(buffer) {}
  // archive_read_open(a, ...); libarchive's status.
  int open(archive* a) { return archive_read_open(a, this, nullptr, &ArchiveSourceClient::on_read, nullptr); }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }
  // Reads what libarchive left (the blocks after a tar's end), so the source reaches its
  // end and makes its end-of-stream checks.
  void drain() {
    rethrow();
    while (source_.read(MutBytes(buf_.data(), buf_.size())) > 0) {
    }
  }

 private:
  static la_ssize_t on_read(archive* a, void* self, const void** out);
  Source& source_;
  std::vector<std::byte> buf_;
  std::exception_ptr error_;
};

// A files backup's member list (name, type, size, mode, owner, SHA-256 of every member)
// is its own object beside the artifact, "<path>.members.json.gz" (a gzip'd JSON array,
// Manifest::extra_parts), so the manifest stays small whatever the number of members.
// store_member_list writes it (never replacing an object) and records its size,
// SHA-256 and count in m.source["member_list"].
void store_member_list(Storage& storage, Manifest& m, const nlohmann::json& members, const RunContext& ctx);
// The members of backup `m`: read back from its member list, checked against the
// manifest (size, SHA-256, count; corrupt or not_found naming the object otherwise), or
// from the manifest's own source.members (backups written before the member list was
// its own object). nullopt when the backup lists none (an adopted archive).
std::optional<nlohmann::json> load_member_list(Storage& storage, const Manifest& m, const RunContext& ctx);

// The member checks of restore_files() on a tar held in memory, as a dry run (nothing
// written, no staging directory): the names of the members it would restore, in order.
// Fed to the extraction `chunk` bytes at a time. Throws as restore_files() does
// (restore_failed naming an unsafe member, corrupt for a bad archive or a member the
// manifest `m` does not list). For the fuzzer (tests/fuzz/tar_members_fuzz.cpp) and tests.
// `members` is the backup's member list (load_member_list), nullopt for none.
std::vector<std::string> check_tar_members(Bytes tar, const Manifest& m, const std::optional<nlohmann::json>& members,
                                           size_t chunk = 64 * 1024);

}  // namespace mevbackup::files
