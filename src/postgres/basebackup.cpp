// Base backup Dumper: BASE_BACKUP over the replication protocol (PostgreSQL 15+), each
// archive of the single COPY OUT stream sent through the pipeline into the repository.
//
// PostgreSQL 15 answers BASE_BACKUP with: a result set (start LSN, timeline), a result
// set (tablespaces), then one COPY OUT stream whose CopyData messages start with a type
// byte: 'n' new archive (name, tablespace location), 'd' data of the current archive or
// of the manifest, 'p' progress (int64), 'm' the manifest follows. After CopyDone comes
// a result set with the end LSN and timeline.
#include <sys/socket.h>

#include <archive.h>
#include <archive_entry.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <ctime>
#include <optional>

#include <fmt/format.h>

#include "mevbackup/digest.hpp"
#include "mevbackup/lock.hpp"
#include "mevbackup/pitr.hpp"
#include "mevbackup/version.hpp"
#include "../files/files_common.hpp"
#include "../io/subprocess.hpp"

namespace mevbackup::pitr {

namespace {

struct ConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using ConnPtr = std::unique_ptr<PGconn, ConnDeleter>;
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

std::string conn_error(PGconn* c) { return one_line(PQerrorMessage(c)); }

ConnPtr connect_replication(const std::string& conninfo) {
  // The conninfo is expanded first; "replication" then overrides whatever it said.
  const char* keys[] = {"dbname", "replication", "fallback_application_name", nullptr};
  const char* vals[] = {conninfo.c_str(), "database", "mevbackup", nullptr};
  ConnPtr c(PQconnectdbParams(keys, vals, 1));
  if (!c) throw Error(Code::no_memory, "cannot allocate a PostgreSQL connection");
  if (PQstatus(c.get()) != CONNECTION_OK) {
    std::string msg = conn_error(c.get());
    Code code = Code::connection;
    bool retriable = true;
    if (PQconnectionNeedsPassword(c.get()) || msg.find("authentication failed") != std::string::npos ||
        msg.find("no password supplied") != std::string::npos) {
      code = Code::auth;
      retriable = false;
    } else if (msg.find("does not exist") != std::string::npos ||
               msg.find("no pg_hba.conf entry") != std::string::npos ||
               msg.find("must be superuser or replication role") != std::string::npos ||
               msg.find("permission denied") != std::string::npos) {
      code = Code::auth;
      retriable = false;
    }
    throw Error(code, fmt::format("cannot open a replication connection to the server: {}", msg), retriable);
  }
  return c;
}

// A simple query on the replication connection (SHOW, IDENTIFY_SYSTEM).
ResultPtr query(PGconn* c, const std::string& q) {
  ResultPtr r(PQexec(c, q.c_str()));
  if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK)
    throw Error(PQstatus(c) == CONNECTION_OK ? Code::dump_failed : Code::connection,
                fmt::format("base backup: {} failed: {}", q, one_line(r ? PQresultErrorMessage(r.get()) : PQerrorMessage(c))));
  return r;
}

std::string value(PGconn* c, const std::string& q) {
  auto r = query(c, q);
  if (PQntuples(r.get()) < 1) throw Error(Code::dump_failed, fmt::format("base backup: {} returned no row", q));
  return PQgetvalue(r.get(), 0, 0);
}

// The COPY OUT stream, one message at a time. The archive Source reads 'd' messages of
// the current archive and stops (returns 0) at the next header, which the caller reads.
class CopyStream {
 public:
  explicit CopyStream(PGconn* c) : c_(c) {}
  ~CopyStream() { release(); }

  enum class Kind { data, new_archive, manifest, end };
  struct Header {
    Kind kind = Kind::end;
    std::string name, location;
  };

  // Reads messages until one that is not progress. Data is kept for read_data().
  Kind next() {
    for (;;) {
      release();
      int n = PQgetCopyData(c_, &buf_, 0);
      if (n == -1) {
        // CopyDone, or the server's error (a terminated walsender): only the next result
        // tells them apart, and it must be known before the last archive is committed.
        ResultPtr r(PQgetResult(c_));
        if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
          std::string msg = r ? one_line(PQresultErrorMessage(r.get())) : conn_error(c_);
          throw Error(PQstatus(c_) == CONNECTION_OK ? Code::dump_failed : Code::connection,
                      fmt::format("base backup stream broke off: {}", msg.empty() ? "connection lost" : msg), true);
        }
        end_result_ = std::move(r);
        ended_ = true;
        return Kind::end;
      }
      if (n == -2 || n == 0) {
        std::string msg = conn_error(c_);
        // The error of a terminated backend arrives as the next result.
        if (ResultPtr r{PQgetResult(c_)}; r && PQresultStatus(r.get()) == PGRES_FATAL_ERROR)
          msg = one_line(PQresultErrorMessage(r.get()));
        throw Error(PQstatus(c_) == CONNECTION_OK ? Code::dump_failed : Code::connection,
                    fmt::format("base backup stream broke off: {}", msg.empty() ? "connection lost" : msg), true);
      }
      len_ = static_cast<size_t>(n);
      pos_ = 1;
      switch (buf_[0]) {
        case 'd':
          return Kind::data;
        case 'p':
          continue;
        case 'n': {
          header_ = Header{Kind::new_archive, cstring_at(1), ""};
          header_.location = cstring_at(2 + header_.name.size());
          return Kind::new_archive;
        }
        case 'm':
          header_ = Header{Kind::manifest, "backup_manifest", ""};
          return Kind::manifest;
        default:
          throw Error(Code::dump_failed, fmt::format("base backup stream: unknown message type '{}'", buf_[0]));
      }
    }
  }

  // Copies the rest of the current data message into `out`; 0 when there is none.
  size_t take(MutBytes out) {
    if (!buf_ || buf_[0] != 'd' || pos_ >= len_) return 0;
    size_t n = std::min(out.size(), len_ - pos_);
    std::memcpy(out.data(), buf_ + pos_, n);
    pos_ += n;
    return n;
  }
  bool has_data() const { return buf_ && buf_[0] == 'd' && pos_ < len_; }
  const Header& header() const { return header_; }
  bool ended() const { return ended_; }
  // The result set after CopyDone (end LSN and timeline).
  ResultPtr take_end_result() { return std::move(end_result_); }

 private:
  std::string cstring_at(size_t at) const {
    if (at >= len_) throw Error(Code::dump_failed, "base backup stream: truncated archive header");
    const char* s = buf_ + at;
    size_t n = strnlen(s, len_ - at);
    if (n == len_ - at) throw Error(Code::dump_failed, "base backup stream: unterminated archive header");
    return std::string(s, n);
  }
  void release() {
    if (buf_) PQfreemem(buf_);
    buf_ = nullptr;
    len_ = pos_ = 0;
  }
  PGconn* c_;
  char* buf_ = nullptr;
  size_t len_ = 0, pos_ = 0;
  Header header_;
  bool ended_ = false;
  ResultPtr end_result_;
};

// The bytes of one archive (or of the manifest) as a Source: ends at the next header.
class ArchiveSource final : public Source {
 public:
  ArchiveSource(CopyStream& s, PGconn* c) : s_(s), c_(c) {}
  size_t read(MutBytes buf) override {
    for (;;) {
      if (stop_) return 0;
      if (size_t n = s_.take(buf)) return n;
      CopyStream::Kind k = s_.next();
      if (k != CopyStream::Kind::data) {
        stop_ = true;
        next_ = k;
        return 0;
      }
    }
  }
  // Unblocks a read waiting for the server: the connection is of no use after a failure.
  void abort() noexcept override {
    int fd = PQsocket(c_);
    if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
  }
  CopyStream::Kind next() const { return next_; }

 private:
  CopyStream& s_;
  PGconn* c_;
  bool stop_ = false;
  CopyStream::Kind next_ = CopyStream::Kind::end;
};

bool valid_archive_name(const std::string& n) {
  if (n == "base.tar") return true;
  if (n.size() < 5 || n.compare(n.size() - 4, 4, ".tar") != 0) return false;
  for (size_t i = 0; i + 4 < n.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(n[i]))) return false;
  return true;
}

std::string utc_micro(TimePoint t) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count() % 1000000;
  if (us < 0) us += 1000000;
  std::string s = format_rfc3339(t);  // "...SSZ"
  s.pop_back();
  return fmt::format("{}.{:06}Z", s, us);
}


// What a base backup records of its server, asked on the replication connection.
struct ServerFacts {
  int version_num = 0;
  std::string version, system_id, archive_mode;
  uint64_t seg_size = 0;
};

ServerFacts describe_server(PGconn* c) {
  ServerFacts f;
  f.version_num = PQserverVersion(c);
  if (f.version_num < 150000)
    throw Error(Code::unsupported,
                fmt::format("base backups need PostgreSQL 15 or newer (the server runs {}.{})", f.version_num / 10000,
                            f.version_num % 10000 / 100));
  f.version = value(c, "SHOW server_version");
  f.seg_size = parse_wal_segment_size(value(c, "SHOW wal_segment_size"));
  f.archive_mode = value(c, "SHOW archive_mode");
  auto r = query(c, "IDENTIFY_SYSTEM");
  f.system_id = PQgetvalue(r.get(), 0, 0);
  return f;
}

std::string base_backup_command(const std::string& label, bool fast, uint32_t max_rate_kbps, bool wal) {
  if (max_rate_kbps && (max_rate_kbps < 32 || max_rate_kbps > 1048576))
    throw Error(Code::invalid_argument, fmt::format("max rate {} kB/s is outside 32..1048576", max_rate_kbps));
  std::string cmd = fmt::format("BASE_BACKUP (LABEL '{}', CHECKPOINT '{}', MANIFEST 'yes'", label, fast ? "fast" : "spread");
  if (max_rate_kbps) cmd += fmt::format(", MAX_RATE {}", max_rate_kbps);
  // The WAL is in the tar then: waiting for its archiving would only add a failure.
  if (wal) cmd += ", WAL, WAIT false";
  return cmd + ")";
}

ResultPtr next_result(PGconn* c, ExecStatusType want, const char* what) {
  ResultPtr r(PQgetResult(c));
  if (!r || PQresultStatus(r.get()) != want) {
    std::string msg = r ? one_line(PQresultErrorMessage(r.get())) : conn_error(c);
    throw Error(PQstatus(c) == CONNECTION_OK ? Code::dump_failed : Code::connection,
                fmt::format("base backup failed ({}): {}", what, msg.empty() ? "unexpected reply" : msg));
  }
  return r;
}

// BASE_BACKUP sent and answered up to its COPY OUT stream.
struct BackupStart {
  std::string lsn;
  long long timeline = 0;
  std::map<std::string, std::string> locations;  // tablespace oid -> location
};

BackupStart start_backup(PGconn* c, const std::string& cmd) {
  if (!PQsendQuery(c, cmd.c_str()))
    throw Error(Code::connection, fmt::format("cannot send BASE_BACKUP: {}", conn_error(c)), true);
  BackupStart b;
  ResultPtr start = next_result(c, PGRES_TUPLES_OK, "start position");
  b.lsn = PQgetvalue(start.get(), 0, 0);
  b.timeline = std::atoll(PQgetvalue(start.get(), 0, 1));
  ResultPtr tbs = next_result(c, PGRES_TUPLES_OK, "tablespace list");
  for (int i = 0; i < PQntuples(tbs.get()); ++i)
    if (!PQgetisnull(tbs.get(), i, 0)) b.locations[PQgetvalue(tbs.get(), i, 0)] = PQgetvalue(tbs.get(), i, 1);
  next_result(c, PGRES_COPY_OUT, "starting the stream");
  return b;
}

struct BackupStop {
  std::string lsn;
  long long timeline = 0;
};

// After CopyDone: the end position, then the command's own end.
BackupStop finish_backup(CopyStream& stream, PGconn* c) {
  ResultPtr end = stream.take_end_result();
  if (!end || PQntuples(end.get()) < 1) throw Error(Code::dump_failed, "base backup stream ended without its end position");
  BackupStop b{PQgetvalue(end.get(), 0, 0), std::atoll(PQgetvalue(end.get(), 0, 1))};
  while (ResultPtr r{PQgetResult(c)}) {
    auto s = PQresultStatus(r.get());
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
      throw Error(Code::dump_failed, fmt::format("base backup failed at its end: {}", one_line(PQresultErrorMessage(r.get()))));
  }
  return b;
}

}  // namespace

Manifest backup_base(Repository& repo, const BaseBackupOptions& opts, const RunContext& ctx) {
  // Shared, as every backup and restore: a prune waits for it (lock.hpp).
  RepositoryLock lock(repo.storage(), LockKind::shared, ctx);
  const RunContext gctx = lock.guard(ctx);
  base_backup_command("", true, opts.max_rate_kbps, false);  // the options' check, before connecting
  Storage& st = repo.storage();
  ConnPtr conn = connect_replication(opts.conninfo);
  PGconn* c = conn.get();
  const ServerFacts server = describe_server(c);
  const std::string& server_version = server.version;
  const uint64_t seg_size = server.seg_size;
  const std::string& system_id = server.system_id;
  if (server.archive_mode == "off") {
    std::string msg = "the server's archive_mode is off: a base backup without archived WAL cannot be recovered "
                      "(set archive_mode=on and archive_command='mevbackup wal-push --repo ... %p')";
    if (opts.require_archiving) throw Error(Code::unsupported, msg);
    if (gctx.log) gctx.log(LogLevel::warning, msg);
  }

  // A fresh id and directory; an existing set (complete or not) is never reused.
  TimePoint started = repo.clock().now();
  std::string base_id = opts.name_prefix + "_" + format_name_stamp(started);
  if (opts.name_prefix.empty() || opts.name_prefix.find_first_not_of(
                                      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
                                      std::string::npos)
    throw Error(Code::invalid_argument,
                fmt::format("base backup name prefix \"{}\" may hold only letters, digits, '_' and '-'", opts.name_prefix));
  std::string id, dir;
  for (int i = 0;; ++i) {
    id = i ? fmt::format("{}_{}", base_id, i) : base_id;
    dir = "basebackup/" + id;
    if (st.list(dir + "/").empty()) break;
    if (i > 1000) throw Error(Code::exists, fmt::format("cannot find a free name for {} in {}", base_id, st.describe()));
  }

  std::string cmd = base_backup_command("mevbackup " + id, opts.fast_checkpoint, opts.max_rate_kbps, false);
  if (gctx.log) gctx.log(LogLevel::info, fmt::format("starting base backup {} of PostgreSQL {} (system {})", id, server_version, system_id));

  std::vector<std::string> stored;  // keys committed so far, removed again on failure
  nlohmann::json files = nlohmann::json::array();
  Manifest m;
  try {
    const BackupStart begun = start_backup(c, cmd);
    const std::string& start_lsn = begun.lsn;
    const long long start_tli = begun.timeline;
    const auto& locations = begun.locations;

    CopyStream stream(c);
    CopyStream::Kind k = stream.next();
    if (k == CopyStream::Kind::data) throw Error(Code::dump_failed, "base backup stream: data before any archive");
    auto store = [&](const std::string& name, const std::string& oid, const std::string& location) {
      std::string key = dir + "/" + name + std::string(compression_suffix(opts.compression));
      if (gctx.encryption && gctx.encryption->encrypts()) key += ".age";  // encrypted by store_compressed
      ArchiveSource src(stream, c);
      StoredDigest d = store_compressed(st, key, src, opts.compression, opts.level, gctx, "basebackup");
      stored.push_back(key);
      nlohmann::json f = {{"name", name},
                          {"path", key},
                          {"compression", std::string(compression_name(opts.compression))},
                          {"size", d.size},
                          {"sha256", d.sha256},
                          {"payload_size", d.payload_size},
                          {"payload_sha256", d.payload_sha256}};
      if (!oid.empty()) {
        f["tablespace_oid"] = oid;
        f["tablespace_location"] = location;
      }
      files.push_back(f);
      if (gctx.log) gctx.log(LogLevel::info, fmt::format("stored {} ({} bytes)", key, d.size));
      return src.next();
    };
    bool have_base = false, have_manifest = false;
    while (k == CopyStream::Kind::new_archive || k == CopyStream::Kind::manifest) {
      if (k == CopyStream::Kind::manifest) {
        k = store("backup_manifest", "", "");
        have_manifest = true;
        continue;
      }
      CopyStream::Header h = stream.header();
      if (!valid_archive_name(h.name))
        throw Error(Code::dump_failed, fmt::format("base backup stream: unexpected archive name \"{}\"", h.name));
      std::string oid;
      if (h.name != "base.tar") {
        oid = h.name.substr(0, h.name.size() - 4);
        if (!locations.count(oid))
          throw Error(Code::dump_failed, fmt::format("base backup stream: archive {} is no listed tablespace", h.name));
      } else {
        have_base = true;
      }
      k = store(h.name, oid, h.location);
    }
    if (!have_base) throw Error(Code::dump_failed, "base backup stream ended without the base archive");
    const BackupStop stop = finish_backup(stream, c);
    const std::string& stop_lsn = stop.lsn;
    const long long stop_tli = stop.timeline;
    TimePoint stopped = repo.clock().now();
    // Ordered: base.tar first (it is the set's main artifact), then tablespaces, manifest.
    std::stable_sort(files.begin(), files.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
      auto rank = [](const nlohmann::json& f) { return f["name"] == "base.tar" ? 0 : f["name"] == "backup_manifest" ? 2 : 1; };
      return rank(a) < rank(b);
    });
    const nlohmann::json& base = files[0];
    m.id = id;
    m.kind = "basebackup";
    m.path = base["path"].get<std::string>();
    m.format = "postgresql-base-backup-tar";
    m.compression = std::string(compression_name(opts.compression));
    record_encryption(m, gctx.encryption.get());
    m.size = base["size"].get<uint64_t>();
    m.sha256 = base["sha256"].get<std::string>();
    m.payload_size = base["payload_size"].get<uint64_t>();
    m.payload_sha256 = base["payload_sha256"].get<std::string>();
    m.started_at = format_rfc3339(started);
    m.finished_at = format_rfc3339(stopped);
    m.source_name = opts.name_prefix;
    m.tool = {{"name", "libmevbackup"}, {"version", kVersionString}};
    m.source = {{"label", "mevbackup " + id},
                {"server_version", server_version},
                {"server_version_num", server.version_num},
                {"system_identifier", system_id},
                {"wal_segment_size", seg_size},
                {"start_lsn", start_lsn},
                {"start_timeline", start_tli},
                {"start_segment", wal_segment_name(static_cast<uint32_t>(start_tli), parse_lsn(start_lsn), seg_size)},
                {"stop_lsn", stop_lsn},
                {"stop_timeline", stop_tli},
                {"stop_segment", wal_segment_name(static_cast<uint32_t>(stop_tli), parse_lsn(stop_lsn), seg_size)},
                {"start_time", utc_micro(started)},
                {"stop_time", utc_micro(stopped)},
                {"postgresql_manifest", have_manifest},
                {"files", files}};
    // The set becomes a backup only now, with its manifest written last.
    repo.write_manifest(m);
  } catch (...) {
    for (auto& key : stored) {
      try {
        st.remove(key);
      } catch (...) {
      }
    }
    throw;
  }
  if (gctx.log)
    gctx.log(LogLevel::info, fmt::format("base backup {} complete: WAL {} .. {} on timeline {}", id,
                                        m.source["start_lsn"].get<std::string>(), m.source["stop_lsn"].get<std::string>(),
                                        m.source["stop_timeline"].get<long long>()));
  return m;
}

namespace {

// A tar member written with libarchive into memory: the backup_manifest pg_basebackup
// injects into base.tar when it writes to standard output, then the end-of-archive blocks.
std::vector<std::byte> manifest_member_and_trailer(const std::string& manifest) {
  std::vector<std::byte> out;
  files::ArchiveWrite a(archive_write_new());
  if (!a) throw std::bad_alloc();
  auto on_write = [](archive*, void* client, const void* buff, size_t len) -> la_ssize_t {
    auto* o = static_cast<std::vector<std::byte>*>(client);
    auto* p = static_cast<const std::byte*>(buff);
    o->insert(o->end(), p, p + len);
    return static_cast<la_ssize_t>(len);
  };
  auto check = [&](int rc, const char* what) {
    if (rc < ARCHIVE_WARN)
      throw Error(Code::internal, fmt::format("writing the backup_manifest member ({}): {}", what, files::archive_message(a.get())));
  };
  check(archive_write_set_format_ustar(a.get()), "format");
  check(archive_write_add_filter_none(a.get()), "filter");
  check(archive_write_set_bytes_per_block(a.get(), 0), "blocking");  // no padding beyond the tar's own
  check(archive_write_open2(a.get(), &out, nullptr, on_write, nullptr, nullptr), "open");
  std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(), archive_entry_free);
  if (!e) throw std::bad_alloc();
  archive_entry_set_pathname(e.get(), "backup_manifest");
  archive_entry_set_filetype(e.get(), AE_IFREG);
  archive_entry_set_perm(e.get(), 0600);
  archive_entry_set_size(e.get(), static_cast<la_int64_t>(manifest.size()));
  archive_entry_set_mtime(e.get(), std::time(nullptr), 0);
  archive_entry_set_uid(e.get(), ::geteuid());
  archive_entry_set_gid(e.get(), ::getegid());
  check(archive_write_header(a.get(), e.get()), "header");
  if (archive_write_data(a.get(), manifest.data(), manifest.size()) != static_cast<la_ssize_t>(manifest.size()))
    check(ARCHIVE_FATAL, "data");
  check(archive_write_close(a.get()), "close");
  return out;
}

constexpr size_t kTarTrailer = 1024;              // two zero blocks end a tar
constexpr size_t kManifestLimit = size_t{1} << 30;  // ~150 bytes per file of the cluster

class BaseBackupTarSource final : public Source {
 public:
  BaseBackupTarSource(const BaseBackupSourceOptions& o, BaseBackupSourceInfo* info) : info_(info ? info : &own_info_) {
    std::string cmd = base_backup_command("mevbackup source", o.fast_checkpoint, o.max_rate_kbps, o.include_wal);
    conn_ = connect_replication(o.conninfo);
    PGconn* c = conn_.get();
    const ServerFacts server = describe_server(c);
    if (!o.include_wal && server.archive_mode == "off")
      throw Error(Code::unsupported, "the server's archive_mode is off: a base backup without its WAL cannot be "
                                     "recovered (include the WAL, or archive it with archive_command)");
    info_->server = fmt::format("{}:{}", PQhost(c) ? PQhost(c) : "", PQport(c) ? PQport(c) : "");
    info_->server_version = server.version;
    info_->system_identifier = server.system_id;
    info_->wal_segment_size = server.seg_size;
    BackupStart begun = start_backup(c, cmd);
    if (!begun.locations.empty()) {
      std::string oids;
      for (auto& [oid, loc] : begun.locations) oids += fmt::format("{}{} ({})", oids.empty() ? "" : ", ", oid, loc);
      throw Error(Code::unsupported,
                  fmt::format("the server has tablespaces beyond the main one ({}): one tar cannot hold them; "
                              "`mevbackup backup basebackup` stores one archive per tablespace", oids));
    }
    info_->start_lsn = begun.lsn;
    info_->start_timeline = begun.timeline;
    stream_.emplace(c);
    if (stream_->next() != CopyStream::Kind::new_archive || stream_->header().name != "base.tar")
      throw Error(Code::dump_failed, "base backup stream: it does not begin with base.tar");
    chunk_.resize(256 * 1024);
  }

  size_t read(MutBytes buf) override {
    for (;;) {
      if (out_pos_ < out_.size()) {
        size_t n = std::min(buf.size(), out_.size() - out_pos_);
        std::memcpy(buf.data(), out_.data() + out_pos_, n);
        out_pos_ += n;
        return n;
      }
      if (done_) return 0;
      step();
    }
  }

  void abort() noexcept override {
    if (!conn_) return;
    int fd = PQsocket(conn_.get());
    if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
  }

 private:
  // One message's worth: base.tar data (less the trailer, held back until the end),
  // then the manifest (kept whole: its size heads its tar member), then the end.
  void step() {
    CopyStream& s = *stream_;
    if (!s.has_data()) {
      switch (s.next()) {
        case CopyStream::Kind::data:
          return;
        case CopyStream::Kind::manifest:
          if (in_manifest_) throw Error(Code::dump_failed, "base backup stream: a second manifest");
          in_manifest_ = true;
          if (held_.size() != kTarTrailer ||
              std::any_of(held_.begin(), held_.end(), [](std::byte b) { return b != std::byte{0}; }))
            throw Error(Code::dump_failed, "base backup stream: base.tar does not end with the tar end-of-archive blocks");
          return;
        case CopyStream::Kind::new_archive:
          throw Error(Code::dump_failed,
                      fmt::format("base backup stream: an unexpected archive \"{}\"", s.header().name));
        case CopyStream::Kind::end:
          if (!in_manifest_) throw Error(Code::dump_failed, "base backup stream ended without the backup manifest");
          BackupStop stop = finish_backup(s, conn_.get());
          info_->stop_lsn = stop.lsn;
          info_->stop_timeline = stop.timeline;
          out_ = manifest_member_and_trailer(manifest_);
          out_pos_ = 0;
          done_ = true;
          return;
      }
    }
    size_t n = s.take(MutBytes(chunk_.data(), chunk_.size()));
    if (in_manifest_) {
      if (manifest_.size() + n > kManifestLimit)
        throw Error(Code::dump_failed, "base backup stream: the backup manifest is over 1 GiB");
      manifest_.append(reinterpret_cast<const char*>(chunk_.data()), n);
      return;
    }
    // Everything but the last kTarTrailer bytes seen so far goes out.
    held_.insert(held_.end(), chunk_.begin(), chunk_.begin() + static_cast<std::ptrdiff_t>(n));
    size_t give = held_.size() > kTarTrailer ? held_.size() - kTarTrailer : 0;
    out_.assign(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(give));
    out_pos_ = 0;
    held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(give));
  }

  BaseBackupSourceInfo own_info_;
  BaseBackupSourceInfo* info_;
  ConnPtr conn_;
  std::optional<CopyStream> stream_;  // after conn_: it refers to the connection
  std::vector<std::byte> chunk_, held_, out_;
  size_t out_pos_ = 0;
  std::string manifest_;
  bool in_manifest_ = false, done_ = false;
};

}  // namespace

std::unique_ptr<Source> basebackup_source(const BaseBackupSourceOptions& opts, BaseBackupSourceInfo* info) {
  return std::make_unique<BaseBackupTarSource>(opts, info);
}

}  // namespace mevbackup::pitr
