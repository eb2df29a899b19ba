// Adopt: the runbook's own backups (pg_dump -Fc | gzip, gzipped RDB files, tar czf of
// the configuration) lie in the repository's layout without manifests. Each one is read
// whole, as the stock tools would read it, and given a manifest if it is sound; nothing
// found is ever deleted, renamed or overwritten.
#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <exception>
#include <map>
#include <regex>
#include <set>

#include <fmt/format.h>

#include "mevbackup/digest.hpp"
#include "mevbackup/lock.hpp"
#include "mevbackup/maintenance.hpp"
#include "mevbackup/redis.hpp"
#include "mevbackup/version.hpp"
#include "../files/files_common.hpp"
#include "../io/subprocess.hpp"
#include "../postgres/pg_conn.hpp"

namespace mevbackup {

namespace {

// How the runbook names what it writes, and what the library calls it.
struct RunbookName {
  const char* suffix;       // ".dump.gz"
  const char* name_prefix;  // "" or "config_": the name must start with it
  const char* kind;
  const char* format;
};
const RunbookName kRunbookNames[] = {
    {".dump.gz", "", "postgres", "pg_dump-custom"},
    {".rdb.gz", "", "redis", "rdb"},
    {".tar.gz", "config_", "files", "tar"},
};

const RunbookName* runbook_name(const std::string& name) {
  for (auto& r : kRunbookNames) {
    std::string suffix = r.suffix, prefix = r.name_prefix;
    if (name.size() > suffix.size() + prefix.size() && name.rfind(prefix, 0) == 0 &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return &r;
  }
  return nullptr;
}

std::string runbook_patterns() {
  std::string s;
  for (auto& r : kRunbookNames)
    s += fmt::format("{}{}/{}*{}", s.empty() ? "" : ", ", kind_directory(r.kind), r.name_prefix, r.suffix);
  return s;
}

// Stored bytes in, gunzipped payload out, pulled (for libarchive and the RDB reader),
// with size and SHA-256 of both sides; memory stays at two buffers whatever the size.
class Inflating {
 public:
  Inflating(std::unique_ptr<Source> stored, CancelToken* cancel) : cancel_(cancel) {
    auto s = std::make_unique<TapSource>(std::move(stored), std::vector<Observer*>{&cancel_, &stored_sha, &stored_n});
    auto gunzipped = std::make_unique<FilterSource>(std::move(s), make_decompressor(Compression::gzip));
    payload_ = std::make_unique<TapSource>(std::move(gunzipped), std::vector<Observer*>{&payload_sha, &payload_n});
  }
  Source& payload() { return *payload_; }
  // Reads what the check left, so that the digests cover the whole object.
  void drain() {
    std::vector<std::byte> b(256 * 1024);
    while (payload_->read(MutBytes(b.data(), b.size())) > 0) {
    }
  }

  Sha256 stored_sha, payload_sha;
  ByteCounter stored_n, payload_n;

 private:
  struct CancelCheck final : Observer {
    explicit CancelCheck(CancelToken* c) : cancel(c) {}
    CancelToken* cancel;
    void update(Bytes) override {
      if (cancel) cancel->check();
    }
  } cancel_;
  std::unique_ptr<Source> payload_;  // last: refers to the observers above
};

// Reads up to `want` bytes (fewer only at the end of the stream).
size_t read_some(Source& in, std::vector<std::byte>& buf, size_t want) {
  buf.resize(want);
  size_t have = 0;
  while (have < want) {
    size_t n = in.read(MutBytes(buf.data() + have, want - have));
    if (n == 0) break;
    have += n;
  }
  buf.resize(have);
  return have;
}

// pg_dump's custom format, read by pg_restore -l as `pg_restore` itself would start a
// restore: the header and the whole table of contents must parse.
std::string check_pg_dump(Source& in, const std::string& pg_restore) {
  std::vector<std::byte> head;
  read_some(in, head, 5);
  if (head.size() < 5 || std::memcmp(head.data(), "PGDMP", 5) != 0)
    throw Error(Code::corrupt, "not a pg_dump custom-format archive (no PGDMP header after gunzip)");
  SpawnOptions so;
  so.argv = {pg_restore, "--list", "--file=/dev/null"};
  so.pipe_stdin = true;
  Subprocess p(so);
  bool open = p.write_stdin(Bytes(head.data(), head.size()));
  std::vector<std::byte> buf(256 * 1024);
  // pg_restore stops reading once it has the table of contents; the rest is still
  // gunzipped to the end, so a truncated or corrupt file is found.
  for (size_t n; (n = in.read(MutBytes(buf.data(), buf.size()))) > 0;)
    if (open) open = p.write_stdin(Bytes(buf.data(), n));
  p.close_stdin();
  int rc = p.wait();
  if (rc != 0)
    throw Error(Code::corrupt, fmt::format("pg_restore --list {}: {}", describe_exit(rc), p.stderr_text()));
  return "gunzip complete, pg_restore reads the header and table of contents";
}

// The RDB header, every key and the CRC-64 footer, as redis-check-rdb would.
std::string check_rdb(Source& in, const Manifest& m, const RunContext& ctx) {
  RdbPayloadCheck rdb(m);
  std::vector<std::byte> buf(256 * 1024);
  for (size_t n; (n = in.read(MutBytes(buf.data(), buf.size()))) > 0;) rdb.update(Bytes(buf.data(), n));
  rdb.finish();
  std::string warning;
  RunContext c = ctx;
  c.log = [&](LogLevel level, const std::string& msg) {
    if (level >= LogLevel::warning) warning = msg;
  };
  rdb.verify(c);  // m has no key counts: the RDB's own structure and checksum
  if (!warning.empty()) return fmt::format("gunzip complete; the RDB itself was not checked: {}", warning);
  return "gunzip complete, RDB header, keys and CRC-64 checked";
}

// A tar archive libarchive reads member by member to its end.
std::string check_tar(Source& in) {
  files::ArchiveSourceClient client(in);
  files::ArchiveRead a(archive_read_new());
  if (!a) throw std::bad_alloc();
  archive_read_support_format_tar(a.get());
  auto fail = [&](const char* what) {
    client.rethrow();
    throw Error(Code::corrupt, fmt::format("{}: {}", what, files::archive_message(a.get())));
  };
  if (client.open(a.get()) != ARCHIVE_OK)
    fail("not a tar archive after gunzip");
  size_t members = 0;
  for (;;) {
    archive_entry* e = nullptr;
    int rc = archive_read_next_header(a.get(), &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc < ARCHIVE_WARN) fail(members ? "bad tar archive" : "not a tar archive after gunzip");
    if (archive_read_data_skip(a.get()) < ARCHIVE_WARN) fail("bad tar archive");
    ++members;
  }
  client.rethrow();
  return fmt::format("gunzip complete, tar archive of {} member(s) read to its end", members);
}

// "mev_protection_20261101_020000" -> {"mev_protection", 2026-11-01T02:00:00Z}.
bool split_stamp(const std::string& id, std::string& source, TimePoint& when) {
  static const std::regex stamp(R"(^(.+)_(\d{4})(\d{2})(\d{2})_(\d{2})(\d{2})(\d{2})$)");
  std::smatch mm;
  if (!std::regex_match(id, mm, stamp)) return false;
  auto t = try_parse_time(fmt::format("{}-{}-{}T{}:{}:{}Z", mm[2].str(), mm[3].str(), mm[4].str(), mm[5].str(),
                                      mm[6].str(), mm[7].str()));
  if (!t) return false;
  source = mm[1].str();
  when = *t;
  return true;
}

// Reads one runbook backup whole; throws corrupt (or io) when it is not sound.
Manifest inspect(Repository& repo, const ObjectInfo& o, const RunbookName& rn, const AdoptOptions& opts,
                 const RunContext& ctx, std::string& checked) {
  auto slash = o.key.rfind('/');
  std::string name = o.key.substr(slash + 1);
  Manifest m;
  m.id = name.substr(0, name.size() - std::strlen(rn.suffix));
  m.kind = rn.kind;
  m.path = o.key;
  m.format = rn.format;
  m.compression = "gzip";
  m.adopted = true;
  m.tool = {{"name", "libmevbackup"}, {"version", kVersionString}, {"adopted_from", "runbook"}};
  TimePoint when;
  if (!split_stamp(m.id, m.source_name, when)) {
    m.source_name = m.id;
    when = std::chrono::system_clock::from_time_t(static_cast<std::time_t>(o.mtime));
  }
  m.started_at = m.finished_at = format_rfc3339(when);
  Inflating in(repo.storage().get(o.key), ctx.cancel);
  if (m.kind == "postgres")
    checked = check_pg_dump(in.payload(), opts.pg_restore_path.empty() ? pg::find_tool("pg_restore", 0) : opts.pg_restore_path);
  else if (m.kind == "redis")
    checked = check_rdb(in.payload(), m, ctx);
  else
    checked = check_tar(in.payload());
  in.drain();
  m.size = in.stored_n.count();
  m.sha256 = in.stored_sha.hex();
  m.payload_size = in.payload_n.count();
  m.payload_sha256 = in.payload_sha.hex();
  if (m.size != o.size)
    throw Error(Code::corrupt, fmt::format("read {} bytes, but the object has {}: it changed while being read", m.size,
                                           o.size));
  return m;
}

}  // namespace

nlohmann::json AdoptResult::to_json() const {
  nlohmann::json arr = nlohmann::json::array();
  for (auto& i : items) {
    nlohmann::json j = {{"key", i.key}, {"outcome", i.outcome}, {"reason", i.reason}};
    if (!i.kind.empty()) j["kind"] = i.kind;
    if (!i.id.empty()) j["id"] = i.id;
    arr.push_back(j);
  }
  return {{"adopted", adopted}, {"damaged", damaged}, {"foreign", foreign}, {"files", arr}};
}

AdoptResult adopt(Repository& repo, const AdoptOptions& opts, const RunContext& ctx) {
  RepositoryLock lock(repo.storage(), opts.dry_run ? LockKind::shared : LockKind::exclusive, ctx);
  const RunContext gctx = lock.guard(ctx);  // cancelled if the lock is lost
  Catalog cat = repo.catalog("", gctx.log);
  AdoptResult res;
  std::set<std::string> ids;  // a manifest's id is unique per kind: never two with one id
  for (auto& e : cat.backups) ids.insert(e.manifest.kind + "/" + e.manifest.id);
  std::map<std::string, size_t> backup_named_dirs;  // "database/x.dump.gz/" -> objects inside
  auto say = [&](AdoptItem item) {
    if (item.outcome == "adopted") ++res.adopted;
    else if (item.outcome == "damaged") ++res.damaged;
    else if (item.outcome == "foreign") ++res.foreign;
    if (gctx.log)
      gctx.log(item.outcome == "damaged" ? LogLevel::error : LogLevel::info,
               fmt::format("{}{} {}: {}", opts.dry_run && item.outcome == "adopted" ? "would be " : "", item.outcome,
                           item.key, item.reason));
    res.items.push_back(std::move(item));
  };
  for (auto& o : cat.incomplete) {
    if (gctx.cancel) gctx.cancel->check();
    if (is_own_leftover(o)) {
      say({o.key, "leftover", "", "",
           "an upload of mevbackup's that never finished; prune removes it after the grace period"});
      continue;
    }
    // A directory named like a backup (the local storage lists the files inside it).
    bool inside = false;
    for (size_t at = o.key.find('/'); at != std::string::npos; at = o.key.find('/', at + 1)) {
      std::string dir = o.key.substr(0, at);
      if (runbook_name(dir.substr(dir.rfind('/') == std::string::npos ? 0 : dir.rfind('/') + 1))) {
        ++backup_named_dirs[dir + "/"];
        inside = true;
        break;
      }
    }
    if (inside) continue;
    auto slash = o.key.rfind('/');
    std::string name = slash == std::string::npos ? o.key : o.key.substr(slash + 1);
    std::string dir = slash == std::string::npos ? "" : o.key.substr(0, slash);
    const RunbookName* rn = runbook_name(name);
    if (!rn) {
      say({o.key, "foreign", "", "",
           fmt::format("not a backup (no manifest, and not named as the runbook names its backups: {}); left as it is",
                       runbook_patterns())});
      continue;
    }
    if (dir != kind_directory(rn->kind)) {
      say({o.key, "foreign", "", "",
           fmt::format("named like a {} backup but not in {}/, where the library looks for them; left as it is",
                       rn->kind, kind_directory(rn->kind))});
      continue;
    }
    std::string id = name.substr(0, name.size() - std::strlen(rn->suffix));
    if (ids.count(std::string(rn->kind) + "/" + id)) {
      say({o.key, "foreign", rn->kind, id,
           fmt::format("a {} backup with the id {} already exists; left as it is", rn->kind, id)});
      continue;
    }
    std::string checked;
    try {
      Manifest m = inspect(repo, o, *rn, opts, gctx, checked);
      if (!opts.dry_run) repo.write_manifest(m);
      ids.insert(m.kind + "/" + m.id);
      say({o.key, "adopted", m.kind, m.id,
           fmt::format("{}; {} bytes, created {}{}", checked, m.size, m.started_at,
                       m.source_name == m.id ? " (the file's mtime: its name holds no _YYYYMMDD_HHMMSS)" : "")});
    } catch (const Error& e) {
      // Only what the file's content caused; the rest (no pg_restore, a network error, a
      // manifest written meanwhile, ...) stops the run instead of passing for damage.
      if (e.code() != Code::corrupt && e.code() != Code::unsupported) throw;
      say({o.key, "damaged", rn->kind, id, fmt::format("{}; not adopted, left as it is", e.what())});
    }
  }
  for (auto& [dir, n] : backup_named_dirs)
    say({dir, "foreign", "", "",
         fmt::format("a directory named like a backup, not a backup file ({} object(s) inside); left as it is", n)});
  std::sort(res.items.begin(), res.items.end(), [](const AdoptItem& a, const AdoptItem& b) { return a.key < b.key; });
  return res;
}

}  // namespace mevbackup
