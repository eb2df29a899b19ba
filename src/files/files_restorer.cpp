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
#include <sched.h>
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
#include "member_checks.hpp"
#include "move_into_place.hpp"
#include "../io/chunk_queue.hpp"
#include "mevbackup/digest.hpp"
#include "mevbackup/files.hpp"

namespace mevbackup {

namespace {

using files::archive_message;
using files::Entry;
using files::EntryKind;

// Every member of the tar `in` through `checks`; the wanted ones written under `prefix`
// by `w` (null: a dry run, nothing written), each file's content hashed either way.
// Returns the wanted members in archive order.
std::vector<Entry> extract_members(Source& in, files::MemberChecks& checks, archive* w, const std::string& prefix,
                                   const std::string& id) {
  files::ArchiveSourceClient client(in);
  files::ArchiveRead r(archive_read_new());
  if (!r) throw std::bad_alloc();
  archive_read_support_format_tar(r.get());
  auto read_failed = [&](const std::string& what) {
    client.rethrow();
    throw Error(Code::corrupt, fmt::format("backup {}: {}: {}", id, what, archive_message(r.get())));
  };
  if (client.open(r.get()) != ARCHIVE_OK) {
    client.rethrow();
    throw Error(Code::corrupt, fmt::format("backup {} is not a tar archive: {}", id, archive_message(r.get())));
  }
  std::vector<Entry> wanted_entries;
  for (;;) {
    archive_entry* e = nullptr;
    int rc = archive_read_next_header(r.get(), &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc < ARCHIVE_WARN) read_failed("bad tar archive");
    bool want = false;
    std::optional<Entry> admitted = checks.admit(e, &want);
    if (!admitted) {
      archive_read_data_skip(r.get());
      continue;
    }
    Entry& en = *admitted;
    const std::string& name = en.name;
    bool write = want && w;
    if (write) {
      archive_entry_copy_pathname(e, (prefix + name).c_str());
      if (en.kind == EntryKind::hardlink) archive_entry_copy_hardlink(e, (prefix + en.link).c_str());
      if (archive_write_header(w, e) < ARCHIVE_WARN) files::refuse_member(name, archive_message(w));
    }
    if (en.kind == EntryKind::file) {
      Sha256 sha;
      const void* buf = nullptr;
      size_t size = 0;
      la_int64_t offset = 0, expected = 0;
      for (;;) {
        int drc = archive_read_data_block(r.get(), &buf, &size, &offset);
        if (drc == ARCHIVE_EOF) break;
        if (drc < ARCHIVE_WARN) read_failed(fmt::format("reading \"{}\"", name));
        if (offset != expected) files::refuse_member(name, "sparse members are not restored");
        sha.update(Bytes(static_cast<const std::byte*>(buf), size));
        expected = offset + static_cast<la_int64_t>(size);
        // libarchive reports a failed write(2) (a full disk) as ARCHIVE_WARN, and would then
        // extend the file to its size with a hole at finish: anything but OK is a failure.
        if (write && archive_write_data_block(w, buf, size, offset) != ARCHIVE_OK)
          files::throw_disk_write_failure(w, fmt::format("writing \"{}\"", name));
      }
      sha.finish();
      en.sha256 = sha.hex();
    } else {
      archive_read_data_skip(r.get());
    }
    // A warning here is metadata not restored (a mode, an owner, a time): a failure too.
    if (write && archive_write_finish_entry(w) != ARCHIVE_OK)
      files::throw_disk_write_failure(w, fmt::format("restoring \"{}\"", name));
    checks.content(en, want);
    if (want) wanted_entries.push_back(std::move(en));
  }
  client.drain();  // the blocks after the tar's end, so the writer never waits
  if (w && archive_write_close(w) != ARCHIVE_OK) files::throw_disk_write_failure(w, "finishing the extraction");
  checks.finish();
  return wanted_entries;
}

// The restore's three steps behind one Sink: the tar's bytes queued (write) to an
// extraction thread (extract_members into the staging directory); on commit, the
// comparison with the target and the move into place (move_into_place.hpp).
class FilesRestoreSink final : public Sink {
 public:
  // `members`: the backup's member list (files::load_member_list), nullopt for none.
  FilesRestoreSink(const Manifest& m, const std::optional<nlohmann::json>& members, const FilesRestoreOptions& o,
                   files::MovePlaces places, const LogFn& log)
      : m_(m), opts_(o), places_(std::move(places)), log_(log), checks_(m.id, members, o.only, o.keep_special_modes) {
    thread_ = std::thread([this] { extract_main(); });
  }
  ~FilesRestoreSink() override { stop(); }

  void write(Bytes data) override {
    if (!queue_.push(data)) {
      stop();
      rethrow();
      throw Error(Code::cancelled, "restore stopped");
    }
  }

  void commit() override {
    finish_extraction();
    if (log_ && !opts_.dry_run && !private_cwd_)
      log_(LogLevel::debug, "unshare(CLONE_FS) not allowed: extracting with absolute staging paths");
    files::MovePlan plan = files::plan_moves(entries_, places_.target, opts_.overwrite);
    actions = plan.actions;
    if (opts_.dry_run) return;
    files::refuse_conflicts(plan, places_.target);
    files::move_into_place(plan, entries_, places_);
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

  void extract_main() noexcept {
    try {
      files::ArchiveWrite w;
      bool relative = false;
      if (!opts_.dry_run) {
        // A private working directory for this thread only: the staging directory.
        int fd = ::open(places_.staging.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) throw sys_error(errno, fmt::format("cannot open {}", places_.staging));
        relative = ::unshare(CLONE_FS) == 0 && ::fchdir(fd) == 0;
        private_cwd_ = relative;
        ::close(fd);
        w.reset(archive_write_disk_new());
        if (!w) throw std::bad_alloc();
        int flags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                    ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_NO_OVERWRITE;
        if (relative) flags |= ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
        if (::geteuid() == 0) flags |= ARCHIVE_EXTRACT_OWNER;
        archive_write_disk_set_options(w.get(), flags);
        archive_write_disk_set_standard_lookup(w.get());
      }
      const std::string prefix = relative || opts_.dry_run ? "" : places_.staging + "/";
      entries_ = extract_members(queue_, checks_, w.get(), prefix, m_.id);
    } catch (...) {
      error_ = std::current_exception();
      queue_.fail();
    }
  }

  const Manifest& m_;
  FilesRestoreOptions opts_;
  files::MovePlaces places_;
  const LogFn& log_;
  files::MemberChecks checks_;  // the extraction thread's alone until it is joined
  ChunkQueue queue_;
  std::thread thread_;
  std::exception_ptr error_;
  bool private_cwd_ = false;
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
    std::string parent = files::real_dir(t.parent_path().string());
    std::string base_name = t.filename().string();
    target_ = parent + "/" + base_name;
    struct stat st;
    if (::lstat(target_.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
      target_ = files::real_dir(target_);  // a symlinked target: restore into what it names
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
      inner_.emplace(m_, opts.members, opts, files::MovePlaces{staging_, target_, parent == "/" ? "" : parent, base_name},
                     log_);
    } catch (...) {
      files::remove_tree(staging_);
      throw;
    }
  }
  ~ExtractSink() override {
    inner_.reset();  // its thread stops before the staging directory goes
    if (!staging_.empty()) files::remove_tree(staging_);
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
    if (!staging_.empty()) files::remove_tree(staging_);
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
  FilesRestoreSink sink(m, members, o, files::MovePlaces{}, no_log);
  if (chunk == 0) chunk = 1;
  for (size_t pos = 0; pos < tar.size(); pos += chunk) sink.write(tar.subspan(pos, std::min(chunk, tar.size() - pos)));
  sink.finish_extraction();
  return sink.member_names();
}

}  // namespace mevbackup
