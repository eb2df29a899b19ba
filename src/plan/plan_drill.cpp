// `mevbackup drill` (plan.hpp): the newest complete backup set restored into scratch
// targets (a database on the drill server, a throwaway or scratch Redis, a scratch
// directory) and proved there, each step timed, the total held against the RTO and the
// set's age against the RPO. Every scratch target is named after this host and process
// (mevb_drill_<host>_<pid>), so that the next drill can tell and remove what a killed
// one left behind.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "mevbackup/digest.hpp"
#include "mevbackup/encryption.hpp"
#include "mevbackup/maintenance.hpp"
#include "mevbackup/drill_report.hpp"
#include "mevbackup/files.hpp"
#include "mevbackup/plan.hpp"
#include "mevbackup/postgres.hpp"
#include "mevbackup/redis.hpp"
#include "plan_internal.hpp"
#include "../files/files_common.hpp"
#include "../io/subprocess.hpp"
#include "../postgres/pg_conn.hpp"
#include "../redis/rdb_reader.hpp"
#include "../redis/redis_conn.hpp"

namespace mevbackup {

using namespace plan_detail;
namespace fs = std::filesystem;

namespace {

constexpr const char* kScratchPrefix = "mevb_drill_";

// Six hex digits of this host's name: scratch names must fit PostgreSQL's 63 bytes with
// the staging suffix a restore adds, and another host's drill must not be taken for ours.
std::string host_tag() {
  std::string h = this_host();
  return Sha256::of(Bytes(reinterpret_cast<const std::byte*>(h.data()), h.size())).substr(0, 6);
}

std::string scratch_name() { return fmt::format("{}{}_{}", kScratchPrefix, host_tag(), ::getpid()); }

// True when `name` is a scratch target (or a restore's staging database of one) that
// this host's drill `pid` made and that process is gone (or is this one: its own name,
// before it made anything, can only be a leftover of an earlier process with its pid).
bool left_by_dead_drill(const std::string& name) {
  std::string tag = host_tag();
  std::string head = std::string(kScratchPrefix) + tag + "_";
  if (name.rfind(head, 0) != 0) return false;
  size_t i = head.size(), j = i;
  while (j < name.size() && std::isdigit(static_cast<unsigned char>(name[j]))) ++j;
  if (j == i || j - i > 10) return false;
  long pid = std::stol(name.substr(i, j - i));
  return pid == ::getpid() || process_gone(pid);
}

std::string scratch_parent(const Plan& plan) {
  if (!plan.drill.files.empty()) return plan.drill.files;
  std::error_code ec;
  fs::path t = fs::temp_directory_path(ec);
  return ec ? "/tmp" : t.string();
}

// Stops the redis-server whose pid file a scratch directory holds, if that process is
// still a redis-server (a leftover of a killed drill keeps running).
void stop_scratch_redis(const fs::path& dir, const LogFn& log) {
  std::ifstream in(dir / "redis" / "redis.pid");
  long pid = 0;
  if (!(in >> pid) || pid <= 1) return;
  std::ifstream cmd(fmt::format("/proc/{}/cmdline", pid));
  std::string argv0;
  std::getline(cmd, argv0, '\0');
  if (argv0.find("redis-server") == std::string::npos) return;
  // Gone, or a zombie its new parent has not reaped yet: it holds no port and no file.
  auto ended = [pid] {
    if (process_gone(pid)) return true;
    std::ifstream st(fmt::format("/proc/{}/stat", pid));
    std::string line;
    std::getline(st, line);
    auto close = line.rfind(')');
    return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
  };
  if (ended()) return;
  if (log) log(LogLevel::info, fmt::format("stopping redis-server {} left running by a killed drill", pid));
  ::kill(static_cast<pid_t>(pid), SIGTERM);
  for (int i = 0; i < 50 && !ended(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (!ended()) ::kill(static_cast<pid_t>(pid), SIGKILL);
}

// ---- a throwaway redis-server on a free loopback port

int free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw sys_error(errno, "creating a socket to find a free port");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  if (rc == 0) rc = ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int err = errno;
  ::close(fd);
  if (rc != 0) throw sys_error(err, "finding a free port on 127.0.0.1");
  return ntohs(a.sin_port);
}

std::string random_hex(size_t bytes) {
  std::random_device rd;
  std::string out;
  for (size_t i = 0; i < bytes; ++i) out += fmt::format("{:02x}", rd() & 0xff);
  return out;
}

class ScratchRedis {
 public:
  // Starts redis-server in `dir` (created), listening on 127.0.0.1 only, with a random
  // password (in its 0600 config file, never in argv), no persistence, DEBUG enabled
  // (for DIGEST-VALUE). Waits until it answers.
  ScratchRedis(const fs::path& dir, const RunContext& ctx) : dir_(dir) {
    auto bin = find_in_path("redis-server");
    if (!bin) throw Error(Code::not_found, "drill: redis = \"spawn\" needs redis-server, and it is not in PATH");
    fs::create_directories(dir_);
    fs::permissions(dir_, fs::perms::owner_all);
    password_ = random_hex(24);
    std::string err;
    const std::string extra = debug_option(*bin);
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = free_loopback_port();
      write_config(extra);
      SpawnOptions so;
      so.argv = {*bin, (dir_ / "redis.conf").string()};
      so.cwd = dir_.string();
      proc_ = std::make_unique<Subprocess>(so);
      if (wait_ready(ctx, err)) return;
      proc_->kill();
      proc_->wait();
      proc_.reset();
      if (err.find("in use") == std::string::npos) break;  // another program took the port: try another
    }
    throw Error(Code::connection, fmt::format("drill: the scratch redis-server did not start: {}", err));
  }
  ~ScratchRedis() { stop(); }
  ScratchRedis(const ScratchRedis&) = delete;
  ScratchRedis& operator=(const ScratchRedis&) = delete;

  void stop() noexcept {
    if (!proc_) return;
    proc_->terminate();
    std::thread t([this] { proc_->wait(); });
    t.join();
    proc_.reset();
  }
  std::string url() const { return fmt::format("redis://127.0.0.1:{}", port_); }
  const std::string& password() const { return password_; }
  int port() const { return port_; }

 private:
  // DEBUG is disabled by default from Redis 7 on (and the option unknown before).
  static std::string debug_option(const std::string& bin) {
    ProgramOutput v = run_for_output({bin, "--version"});
    auto at = v.out.find("v=");
    return at != std::string::npos && std::atoi(v.out.c_str() + at + 2) >= 7 ? "enable-debug-command yes\n" : "";
  }

  void write_config(const std::string& extra) {
    std::string conf = fmt::format(
        "bind 127.0.0.1\nport {}\nprotected-mode yes\ndir {}\ndbfilename dump.rdb\nsave \"\"\nappendonly no\n"
        "pidfile {}\ndaemonize no\nlogfile {}\nrequirepass {}\n",
        port_, dir_.string(), (dir_ / "redis.pid").string(), (dir_ / "redis.log").string(), password_) + extra;
    std::string path = (dir_ / "redis.conf").string();
    ::unlink(path.c_str());
    write_new_file(path, conf, 0600);
  }

  bool wait_ready(const RunContext& ctx, std::string& err) {
    redis::Url u;
    u.port = port_;
    u.password = password_;
    for (int i = 0; i < 100; ++i) {  // 10 s
      if (ctx.cancel) ctx.cancel->check();
      try {
        redis::Conn c = redis::Conn::connect(u, 2);
        redis::Reply r = c.command_raw({"PING"});
        if (r->type == REDIS_REPLY_STATUS) return true;
        err = redis::to_string(r.get());
      } catch (const Error& e) {
        err = e.what();
      }
      if (proc_->exited()) {
        err = log_tail();
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  // The last lines of the server's log, which says why it stopped.
  std::string log_tail() const {
    std::ifstream in(dir_ / "redis.log");
    std::string line, out;
    std::vector<std::string> lines;
    while (std::getline(in, line))
      if (!line.empty()) lines.push_back(line);
    for (size_t i = lines.size() > 3 ? lines.size() - 3 : 0; i < lines.size(); ++i) out += (out.empty() ? "" : " / ") + lines[i];
    return out.empty() ? "redis-server exited" : out;
  }

  fs::path dir_;
  int port_ = 0;
  std::string password_;
  std::unique_ptr<Subprocess> proc_;
};

// ---- checks

// Checks are collected into the step's detail; any failed one fails the step.
void fail_on_checks(const std::string& source, const nlohmann::json& checks, PlanStep& s) {
  size_t bad = 0, all = checks.size();
  std::string first;
  for (auto& c : checks)
    if (!c.value("ok", false)) {
      if (first.empty()) first = fmt::format("{}: {}", c.value("check", ""), c.value("detail", ""));
      ++bad;
    }
  s.detail["checks"] = checks;
  if (bad)
    throw Error(Code::corrupt, fmt::format("{}: {} of {} checks failed, first: {}", source, bad, all, first));
  s.message = fmt::format("{} checks passed", all);
}

struct RdbFacts {
  int version = 0;
  // Per database: keys without expiry, and the expiry times (ms) of the others.
  std::map<int, uint64_t> persistent;
  std::map<int, std::vector<int64_t>> expiring;
  std::vector<redis::RdbEntry> sample;
};

// Reads the Redis backup's RDB from the repository: per database the keys and their
// expiry, and a uniform random sample of `k` keys with their values.
RdbFacts read_rdb(Repository& repo, const Manifest& m, size_t k, const RunContext& ctx) {
  RdbFacts f;
  std::mt19937_64 rng{std::random_device{}()};
  redis::RdbSummaryObserver obs([&](Source& src) {
    redis::RdbReader rd(src);
    f.version = rd.version();
    redis::RdbEntry e;
    uint64_t seen = 0;
    for (;;) {
      // Reservoir sampling: the i-th key is kept with probability k/i.
      size_t slot = f.sample.size() < k ? f.sample.size() : std::uniform_int_distribution<uint64_t>(0, seen)(rng);
      bool take = slot < k;
      if (!rd.next(e, take)) break;
      ++seen;
      if (e.expire_ms < 0)
        ++f.persistent[e.db];
      else
        f.expiring[e.db].push_back(e.expire_ms);
      if (!take || e.value.size() > (1u << 20)) continue;  // large values are left out of the sample
      if (slot == f.sample.size())
        f.sample.push_back(e);
      else
        f.sample[slot] = e;
    }
  });
  DigestSink sink;
  sink.extra = &obs;
  repo.restore_stream(m, sink, ctx);
  obs.finish();
  obs.result();
  return f;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::map<int, uint64_t> keyspace(redis::Conn& c) {
  std::map<int, uint64_t> out;
  for (auto& [k, v] : c.info("keyspace")) {
    if (k.rfind("db", 0) != 0) continue;
    unsigned long long keys = 0;
    if (std::sscanf(v.c_str(), "keys=%llu", &keys) == 1) out[std::atoi(k.c_str() + 2)] = keys;
  }
  return out;
}

nlohmann::json check_redis(redis::Conn& c, const RdbFacts& f, int64_t restore_started_ms) {
  nlohmann::json checks = nlohmann::json::array();
  // Key counts: taken first, then held between the keys certainly alive now (no expiry, or
  // one still ahead) and those alive when the restore began (keys already expired are not
  // restored; one expiring since may or may not have been reclaimed).
  int64_t at = now_ms();
  auto got = keyspace(c);
  std::set<int> dbs;
  for (auto& [db, n] : got) dbs.insert(db);
  for (auto& [db, n] : f.persistent) dbs.insert(db);
  for (auto& [db, v] : f.expiring) dbs.insert(db);
  for (int db : dbs) {
    uint64_t lo = f.persistent.count(db) ? f.persistent.at(db) : 0, hi = lo;
    if (auto it = f.expiring.find(db); it != f.expiring.end())
      for (int64_t t : it->second) {
        lo += t > at;
        hi += t > restore_started_ms;
      }
    uint64_t n = got.count(db) ? got.at(db) : 0;
    bool ok = n >= lo && n <= hi;
    checks.push_back({{"check", fmt::format("keys db{}", db)},
                      {"ok", ok},
                      {"detail", lo == hi ? fmt::format("{} keys, {} in the RDB", n, lo)
                                          : fmt::format("{} keys, {} to {} in the RDB (some expire meanwhile)", n, lo, hi)}});
  }
  // The sample: type, TTL and value of each key against the RDB's.
  std::string probe = "__mevbackup_drill_probe_" + random_hex(8);
  int selected = -1;
  bool digest = true;
  size_t ok_n = 0;
  std::vector<std::string> bad;
  for (auto& e : f.sample) {
    if (e.expire_ms >= 0 && e.expire_ms <= now_ms() + 1000) continue;  // expired, or about to
    if (e.db != selected) {
      c.command({"SELECT", std::to_string(e.db)});
      selected = e.db;
    }
    std::string name = fmt::format("db{} key {}", e.db, nlohmann::json(e.key).dump());
    std::string family = redis::rdb_type_family(e.type);
    std::string type = redis::to_string(c.command({"TYPE", e.key}).get());
    if (family != "module" && type != family) {
      bad.push_back(fmt::format("{}: type {}, {} in the RDB", name, type, family));
      continue;
    }
    long long pttl = c.command({"PTTL", e.key})->integer;
    int64_t now = now_ms();
    if (e.expire_ms < 0 ? pttl != -1 : (pttl < 0 || std::llabs(now + pttl - e.expire_ms) > 2000)) {
      bad.push_back(fmt::format("{}: TTL {} ms, {} in the RDB", name, pttl,
                                e.expire_ms < 0 ? std::string("none") : fmt::format("{} ms", e.expire_ms - now)));
      continue;
    }
    if (family == "module") {
      ++ok_n;
      continue;
    }
    // The value: the RDB's own encoding restored beside it, and the two compared as Redis
    // sees them (DEBUG DIGEST-VALUE, whatever the encodings), else byte for byte (DUMP).
    // With the key's expiry too: DIGEST-VALUE tells a value with an expiry from one without.
    if (e.expire_ms >= 0)
      c.command({"RESTORE", probe, std::to_string(e.expire_ms), redis::dump_payload(e.type, e.value, f.version),
                 "REPLACE", "ABSTTL"});
    else
      c.command({"RESTORE", probe, "0", redis::dump_payload(e.type, e.value, f.version), "REPLACE"});
    bool same;
    if (digest) {
      redis::Reply a = c.command_raw({"DEBUG", "DIGEST-VALUE", e.key, probe});
      if (a->type == REDIS_REPLY_ARRAY && a->elements == 2) {
        same = redis::to_string(a->element[0]) == redis::to_string(a->element[1]);
      } else {
        digest = false;
      }
    }
    if (!digest)
      same = redis::to_string(c.command({"DUMP", e.key}).get()) == redis::to_string(c.command({"DUMP", probe}).get());
    c.command({"DEL", probe});
    if (!same) {
      bad.push_back(fmt::format("{}: its value differs from the RDB's", name));
      continue;
    }
    ++ok_n;
  }
  checks.push_back({{"check", "sample"},
                    {"ok", bad.empty()},
                    {"detail", bad.empty() ? fmt::format("{} sampled keys: type, TTL and value as in the RDB ({})", ok_n,
                                                         digest ? "DEBUG DIGEST-VALUE" : "DUMP")
                                           : fmt::format("{} of {} sampled keys differ: {}", bad.size(), bad.size() + ok_n,
                                                         bad.front())}});
  return checks;
}

nlohmann::json check_files(const fs::path& root, const nlohmann::json& members) {
  nlohmann::json checks = nlohmann::json::array();
  size_t ok_n = 0;
  std::vector<std::string> bad;
  for (auto& m : members) {
    std::string name = m.value("name", ""), type = m.value("type", "");
    fs::path p = root / name;
    std::error_code ec;
    if (type == "file") {
      std::ifstream in(p, std::ios::binary);
      if (!in) {
        bad.push_back(name + ": missing");
        continue;
      }
      Sha256 h;
      uint64_t size = 0;
      std::vector<char> buf(1 << 16);
      while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) {
        h.update(Bytes(reinterpret_cast<const std::byte*>(buf.data()), static_cast<size_t>(in.gcount())));
        size += static_cast<uint64_t>(in.gcount());
      }
      h.finish();
      if (h.hex() != m.value("sha256", "") || size != m.value("size", uint64_t{0})) {
        bad.push_back(fmt::format("{}: SHA-256 {} ({} bytes), {} in the backup", name, h.hex().substr(0, 16), size,
                                  m.value("sha256", "").substr(0, 16)));
        continue;
      }
      ++ok_n;
    } else if (type == "dir") {
      if (!fs::is_directory(fs::symlink_status(p, ec))) bad.push_back(name + ": directory missing");
    } else if (type == "symlink") {
      fs::path t = fs::read_symlink(p, ec);
      if (ec || t.string() != m.value("target", "")) bad.push_back(name + ": symlink missing or changed");
    }
  }
  checks.push_back({{"check", "files"},
                    {"ok", bad.empty()},
                    {"detail", bad.empty() ? fmt::format("{} files, every SHA-256 as in the backup", ok_n)
                                           : fmt::format("{} of {} entries differ: {}", bad.size(), members.size(),
                                                         fmt::join(bad.begin(), bad.begin() + std::min<size_t>(bad.size(), 5), "; "))}});
  return checks;
}

std::string seconds_text(double s) {
  if (s >= 3600) return fmt::format("{:.1f} h", s / 3600);
  if (s >= 60) return fmt::format("{:.1f} min", s / 60);
  return fmt::format("{:.1f} s", s);
}

}  // namespace

PlanReport drill_plan(const Plan& plan, const PlanDrillOptions& opts, const PlanEnvironment& env) {
  PlanReport r;
  r.operation = "drill";
  r.plan = plan.name;
  PlanStorage from = plan.repository;
  if (!opts.from.empty()) {
    bool found = false;
    for (auto& c : plan.copies)
      if (c.location == opts.from) from = c, found = true;
    if (!found) from.location = opts.from, from.storage_class.clear();
  }
  auto opened = open_plan_storage(from, env);
  Repository& repo = opened->repo;
  const RunContext& ctx = opened->ctx;
  Steps steps(r, ctx);
  const std::string scratch = scratch_name();
  const fs::path scratch_dir = fs::path(scratch_parent(plan)) / scratch;
  bool pg_made = false;
  std::unique_ptr<ScratchRedis> spawned;
  std::optional<redis::Url> redis_target;  // a redis:// drill target this drill filled

  // What killed drills left behind, on the drill server and in the scratch parent.
  steps.run("cleanup", [&](PlanStep& s) {
    std::vector<std::string> removed;
    std::error_code ec;
    fs::path parent = scratch_parent(plan);
    if (fs::is_directory(parent, ec))
      for (auto& d : fs::directory_iterator(parent, ec)) {
        std::string name = d.path().filename().string();
        if (!left_by_dead_drill(name) || !d.is_directory(ec) || d.is_symlink(ec)) continue;
        stop_scratch_redis(d.path(), ctx.log);
        fs::remove_all(d.path(), ec);
        if (ec) throw sys_error(ec.value(), fmt::format("removing {}, left by a killed drill", d.path().string()));
        removed.push_back("directory " + d.path().string());
      }
    // Listed before the database, which may fail (the server down): the directories are gone by then.
    s.detail["removed"] = removed;
    if (!plan.postgres.empty() && !plan.drill.postgres.empty()) {
      pg::Conn admin = pg::Conn::connect(plan.drill.postgres, "postgres");
      pg::Result res = admin.exec("SELECT datname FROM pg_database WHERE datname LIKE 'mevb\\_drill\\_%' ORDER BY 1",
                                  {}, "listing the drill's scratch databases");
      for (int i = 0; i < PQntuples(res.get()); ++i) {
        std::string name = PQgetvalue(res.get(), i, 0);
        if (!left_by_dead_drill(name)) continue;
        admin.exec(fmt::format("DROP DATABASE IF EXISTS {}", admin.quote_ident(name)), {},
                   "dropping a scratch database left by a killed drill");
        removed.push_back("database " + name);
      }
    }
    s.detail["removed"] = removed;
    s.message = removed.empty() ? "nothing left by earlier drills"
                                : fmt::format("removed what killed drills left: {}", fmt::join(removed, ", "));
  });

  BackupSetEntry e;
  double set_age = -1;
  bool have_set = steps.run("set", [&](PlanStep& s) {
    e = find_backup_set(repo, plan.name, opts.set, ctx.log);
    r.set_id = e.set.id;
    set_age = std::chrono::duration<double>(repo.clock().now() - parse_rfc3339(e.set.started_at)).count();
    s.message = fmt::format("{} ({} members, {} old)", e.set.id, e.set.members.size(), seconds_text(set_age));
    s.detail = e.set.to_json();
  });

  auto member = [&](const std::string& source) -> Manifest {
    const SetMember* mem = e.set.member(source);
    if (!mem) throw Error(Code::not_found, fmt::format("backup set {} has no member {}", e.set.id, source));
    Manifest listed;
    listed.id = mem->id;
    listed.path = mem->path;
    return repo.load(listed);
  };
  auto make_scratch_dir = [&] {
    std::error_code ec;
    if (!fs::is_directory(scratch_dir, ec)) {
      if (!fs::is_directory(scratch_dir.parent_path(), ec))
        throw Error(Code::not_found, fmt::format("drill: the scratch parent {} ([drill] files) is not a directory",
                                                 scratch_dir.parent_path().string()));
      fs::create_directory(scratch_dir, ec);
      if (ec) throw sys_error(ec.value(), "creating the drill's scratch directory " + scratch_dir.string());
      fs::permissions(scratch_dir, fs::perms::owner_all, ec);
    }
  };

  if (have_set) {
    for (auto& p : plan.postgres) {
      std::string src = "postgres." + p.name;
      Manifest m;
      bool restored = steps.run(src + " restore", [&](PlanStep& s) {
        if (plan.drill.postgres.empty())
          throw Error(Code::invalid_argument,
                      fmt::format("{}: [drill] postgres names no scratch server to restore {} into", plan.path, src));
        m = member(src);
        PgRestoreOptions o;
        o.conninfo = plan.drill.postgres;
        o.dbname = scratch;
        { pg::Conn reach = pg::Conn::connect(plan.drill.postgres, "postgres"); }  // a server down made nothing
        pg_made = true;
        restore_postgres(repo, m, o, ctx);
        s.message = fmt::format("{} restored into scratch database {}", m.id, scratch);
        s.detail = {{"id", m.id}, {"size", m.size}, {"database", scratch}};
      });
      if (restored)
        steps.run(src + " checks", [&](PlanStep& s) {
          fail_on_checks(src, check_restored_postgres(plan.drill.postgres, scratch, m, p.verify_queries), s);
        });
      else
        steps.note(src + " checks", "skipped", "the restore failed");
      if (pg_made && plan.postgres.size() > 1) {  // one scratch database at a time
        pg::Conn admin = pg::Conn::connect(plan.drill.postgres, "postgres");
        admin.exec(fmt::format("DROP DATABASE IF EXISTS {}", admin.quote_ident(scratch)), {}, "dropping the scratch database");
      }
    }
    // A base backup is read whole (every part's checksum, decryption, its tar members) and
    // its WAL archive checked for gaps; it is not replayed into a scratch server.
    for (auto& p : plan.pitr) {
      std::string src = "pitr." + p.name;
      steps.run(src + " checks", [&](PlanStep& s) {
        Manifest m = member(src);
        VerifyOptions vo;
        vo.kind = "basebackup";
        vo.record = false;
        std::vector<VerifyResult> res = verify(repo, m.id, vo, ctx);
        if (res.empty()) throw Error(Code::not_found, fmt::format("{}: base backup {} was not found", src, m.id));
        const Verification& v = res[0].verification;
        s.detail = {{"id", m.id}, {"checks", v.checks}};
        if (!v.ok) throw Error(Code::corrupt, fmt::format("{}: base backup {}: {}", src, m.id, v.message));
        s.message = fmt::format("{}: {} (not replayed)", m.id, v.message);
      });
    }
    for (auto& rd : plan.redis) {
      std::string src = "redis." + rd.name;
      Manifest m;
      int64_t started = now_ms();
      bool restored = steps.run(src + " restore", [&](PlanStep& s) {
        m = member(src);
        std::string how = plan.drill.redis.empty() ? "spawn" : plan.drill.redis;
        RedisRestoreOptions o;
        if (how == "spawn") {
          make_scratch_dir();
          spawned.reset();
          spawned = std::make_unique<ScratchRedis>(scratch_dir / "redis", ctx);
          o.redis_url = spawned->url();
          o.password = spawned->password();
        } else {
          redis::Url u = redis::parse_url(how);
          redis::Conn c = redis::Conn::connect(u, 10);
          auto ks = keyspace(c);
          if (!ks.empty())
            throw Error(Code::not_empty,
                        fmt::format("drill: the scratch Redis {} ([drill] redis) holds keys; a drill restores only "
                                    "into an empty server (and empties it afterwards)",
                                    u.redacted()));
          redis_target = u;
          o.redis_url = how;
          o.default_password = u.password;
        }
        started = now_ms();
        restore_redis(repo, m, o, ctx);
        s.message = fmt::format("{} restored into {}", m.id,
                                spawned ? fmt::format("a scratch redis-server on 127.0.0.1:{}", spawned->port())
                                        : redis_target->redacted());
        s.detail = {{"id", m.id}, {"size", m.size}};
      });
      if (restored)
        steps.run(src + " checks", [&](PlanStep& s) {
          RdbFacts f = read_rdb(repo, m, 100, ctx);
          redis::Url u;
          if (spawned) {
            u.port = spawned->port();
            u.password = spawned->password();
          } else {
            u = *redis_target;
          }
          redis::Conn c = redis::Conn::connect(u, 10);
          fail_on_checks(src, check_redis(c, f, started), s);
        });
      else
        steps.note(src + " checks", "skipped", "the restore failed");
    }
    for (auto& f : plan.files) {
      std::string src = "files." + f.name;
      Manifest m;
      fs::path target = scratch_dir / src;
      bool restored = steps.run(src + " restore", [&](PlanStep& s) {
        m = member(src);
        make_scratch_dir();
        FilesRestoreOptions o;
        o.target = target.string();
        auto acts = restore_files(repo, m, o, ctx);
        s.message = fmt::format("{} restored into {}: {} entries", m.id, target.string(), acts.size());
        s.detail = {{"id", m.id}, {"size", m.size}, {"entries", acts.size()}};
      });
      if (restored)
        steps.run(src + " checks", [&](PlanStep& s) {
          auto members = files::load_member_list(repo.storage(), m, ctx);
          if (!members)
            throw Error(Code::corrupt, fmt::format("{}: backup {} has no member list to check the files against", src, m.id));
          fail_on_checks(src, check_files(target, *members), s);
        });
      else
        steps.note(src + " checks", "skipped", "the restore failed");
    }
  }

  // Every scratch target goes, whatever happened above (a kill is the next drill's cleanup).
  steps.run("scratch cleanup", [&](PlanStep& s) {
    std::vector<std::string> done, failed;
    if (spawned) {
      spawned.reset();
      done.push_back("redis-server stopped");
    }
    if (redis_target) {
      try {
        redis::Conn c = redis::Conn::connect(*redis_target, 10);
        c.command({"FLUSHALL"});
        done.push_back(redis_target->redacted() + " emptied");
      } catch (const Error& x) {
        failed.push_back(x.what());
      }
    }
    if (pg_made) {
      try {
        pg::Conn admin = pg::Conn::connect(plan.drill.postgres, "postgres");
        admin.exec(fmt::format("DROP DATABASE IF EXISTS {}", admin.quote_ident(scratch)), {}, "dropping the scratch database");
        done.push_back("database " + scratch + " dropped");
      } catch (const Error& x) {
        failed.push_back(x.what());
      }
    }
    std::error_code ec;
    if (fs::exists(scratch_dir, ec)) {
      fs::remove_all(scratch_dir, ec);
      if (ec)
        failed.push_back(fmt::format("removing {}: {}", scratch_dir.string(), ec.message()));
      else
        done.push_back(scratch_dir.string() + " removed");
    }
    s.detail["done"] = done;
    s.message = done.empty() ? "nothing to clean up" : fmt::format("{}", fmt::join(done, ", "));
    if (!failed.empty())
      throw Error(Code::io, fmt::format("scratch cleanup: {} (the next drill removes it)", fmt::join(failed, "; ")));
  });

  bool checks_ok = !steps.failed();
  steps.finish("");
  double rto = static_cast<double>(plan.rto.count()), rpo = static_cast<double>(plan.rpo.count());
  bool rto_ok = rto <= 0 || r.seconds <= rto;
  bool rpo_ok = rpo <= 0 || (set_age >= 0 && set_age <= rpo);
  r.extra = {{"rto_seconds", rto},          {"rpo_seconds", rpo},   {"set_started_at", have_set ? e.set.started_at : ""},
             {"set_age_seconds", set_age},  {"rto_ok", rto_ok},     {"rpo_ok", rpo_ok},
             {"checks_ok", checks_ok}};
  std::vector<std::string> why;
  if (!checks_ok)
    for (auto& s : r.steps)
      if (s.status == "failed") why.push_back(fmt::format("{} failed: {}", s.name, s.message));
  if (!rto_ok) why.push_back(fmt::format("took {}, longer than the RTO of {}", seconds_text(r.seconds), seconds_text(rto)));
  if (have_set && !rpo_ok)
    why.push_back(fmt::format("backup set {} is {} old, older than the RPO of {}", e.set.id, seconds_text(set_age),
                              seconds_text(rpo)));
  r.ok = checks_ok && rto_ok && rpo_ok;
  if (r.ok) {
    r.message = fmt::format("drill passed: backup set {} restored and checked in {}{}{}", e.set.id,
                            seconds_text(r.seconds), rto > 0 ? fmt::format(" (RTO {})", seconds_text(rto)) : "",
                            rpo > 0 ? fmt::format("; set {} old (RPO {})", seconds_text(set_age), seconds_text(rpo)) : "");
  } else {
    if (r.code == Code::ok) r.code = Code::restore_failed;
    r.message = fmt::format("drill failed: {}", fmt::join(why, "; "));
  }
  if (!opts.report_dir.empty()) {
    DrillReportFiles files = write_drill_report(opts.report_dir, r.to_json());
    r.extra["report_files"] = {{"json", files.json}, {"summary", files.summary}, {"prometheus", files.prometheus},
                               {"html", files.html}};
  }
  return r;
}

}  // namespace mevbackup
