// Running a plan (plan.hpp): `run` (a backup set of every source, copies, retention) and
// `restore --plan` (the full recovery in order). Compositions of the canned operations;
// the steps, their timings and the first failure go into a PlanReport.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "mevbackup/encryption.hpp"
#include "mevbackup/files.hpp"
#include "mevbackup/lock.hpp"
#include "mevbackup/maintenance.hpp"
#include "mevbackup/plan.hpp"
#include "mevbackup/pitr.hpp"
#include "mevbackup/postgres.hpp"
#include "mevbackup/redis.hpp"
#include "mevbackup/signing.hpp"
#include "mevbackup/sync.hpp"
#include "plan_internal.hpp"
#include "../io/subprocess.hpp"
#include "../redis/redis_conn.hpp"

namespace mevbackup {

nlohmann::json PlanReport::to_json() const {
  nlohmann::json st = nlohmann::json::array();
  for (auto& s : steps)
    st.push_back({{"name", s.name},
                  {"status", s.status},
                  {"message", s.message},
                  {"started_at", s.started_at},
                  {"seconds", s.seconds},
                  {"detail", s.detail}});
  nlohmann::json j = {{"operation", operation}, {"plan", plan},       {"set", set_id},
                      {"ok", ok},               {"status", code_name(code)}, {"message", message},
                      {"started_at", started_at}, {"finished_at", finished_at}, {"seconds", seconds},
                      {"steps", st}};
  for (auto& [k, v] : extra.items()) j[k] = v;
  return j;
}

Repository open_plan_repository(const PlanStorage& s, const PlanEnvironment& env, RunContext* ctx) {
  StorageOptions so = env.storage;
  if (!s.storage_class.empty()) so.storage_class = s.storage_class;
  if (!s.region.empty()) so.region = s.region;
  if (!s.endpoint_url.empty()) so.endpoint_url = s.endpoint_url;
  if (!s.profile.empty()) so.profile = s.profile;
  try {
    Repository repo = Repository::open(s.location, so);
    EncryptionKeys k;
    k.recipients = s.recipients;
    k.recipients_file = s.recipients_file;
    k.identity_files = s.identity_files;
    auto enc = load_encryption(k, "recipients");
    repo.set_signing(load_signing(s.signing_key_file, s.verify_key_files));
    if (ctx) {
      *ctx = env.ctx;
      if (enc) ctx->encryption = enc;
    }
    return repo;
  } catch (const Error& e) {
    throw Error(e.code(), fmt::format("{}: {}", s.place.str(), e.what()));
  }
}

namespace plan_detail {

std::unique_ptr<OpenedRepository> open_plan_storage(const PlanStorage& s, const PlanEnvironment& env) {
  RunContext ctx;
  Repository repo = open_plan_repository(s, env, &ctx);
  auto o = std::make_unique<OpenedRepository>(std::move(repo), ctx);
  o->place = s.place.str();
  o->location = s.location;
  return o;
}

Steps::Steps(PlanReport& r, const RunContext& ctx) : r_(r), ctx_(ctx), t0_(std::chrono::steady_clock::now()) {
  r_.started_at = format_rfc3339(std::chrono::system_clock::now());
}

bool Steps::run(const std::string& name, const std::function<void(PlanStep&)>& fn) {
  PlanStep s;
  s.name = name;
  s.started_at = format_rfc3339(std::chrono::system_clock::now());
  auto t = std::chrono::steady_clock::now();
  if (ctx_.log) ctx_.log(LogLevel::info, fmt::format("{}: starting", name));
  try {
    if (ctx_.cancel) ctx_.cancel->check();
    fn(s);
    s.status = "ok";
  } catch (const Error& e) {
    s.status = "failed";
    s.message = e.what();
    if (r_.code == Code::ok) r_.code = e.code();
  } catch (const std::bad_alloc&) {
    s.status = "failed";
    s.message = "out of memory";
    if (r_.code == Code::ok) r_.code = Code::no_memory;
  } catch (const std::exception& e) {
    s.status = "failed";
    s.message = e.what();
    if (r_.code == Code::ok) r_.code = Code::internal;
  }
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  if (ctx_.log)
    ctx_.log(LogLevel::info,  // a failure is the report's (and its caller's) to tell
             fmt::format("{}: {} in {:.1f} s{}{}", name, s.status, s.seconds, s.message.empty() ? "" : ": ", s.message));
  bool ok = s.status == "ok";
  r_.steps.push_back(std::move(s));
  return ok;
}

void Steps::note(const std::string& name, const std::string& status, const std::string& message) {
  PlanStep s;
  s.name = name;
  s.status = status;
  s.message = message;
  s.started_at = format_rfc3339(std::chrono::system_clock::now());
  if (ctx_.log) ctx_.log(LogLevel::info, fmt::format("{}: {}{}{}", name, status, message.empty() ? "" : ": ", message));
  r_.steps.push_back(std::move(s));
}

bool Steps::failed() const {
  for (auto& s : r_.steps)
    if (s.status == "failed") return true;
  return false;
}

void Steps::finish(const std::string& message) {
  r_.finished_at = format_rfc3339(std::chrono::system_clock::now());
  r_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  r_.ok = !failed();
  r_.message = message;
}

void run_hook(const Plan& plan, const std::string& command, std::chrono::seconds timeout, Code fail_code,
              const RunContext& ctx, PlanStep& step) {
  namespace fs = std::filesystem;
  std::string dir = plan.hooks.workdir;
  if (dir.empty()) dir = fs::absolute(fs::path(plan.path)).parent_path().string();
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error(fail_code, fmt::format("hook \"{}\": its working directory {} is not a directory", command, dir));
  SpawnOptions so;
  so.argv = {"/bin/sh", "-c", command};
  so.cwd = dir;
  // Only the base environment (no PGPASSWORD, no AWS secret) and what says which plan runs.
  so.env["MEVBACKUP_PLAN"] = plan.name;
  so.env["MEVBACKUP_PLAN_FILE"] = fs::absolute(fs::path(plan.path)).string();
  step.detail["command"] = command;
  step.detail["workdir"] = dir;
  Subprocess p(so);
  std::mutex mu;
  std::condition_variable cv;
  bool done = false, timed_out = false, cancelled = false;
  std::thread watch([&] {
    std::unique_lock lk(mu);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done) {
      if (std::chrono::steady_clock::now() >= deadline) {
        timed_out = true;
        break;
      }
      if (ctx.cancel && ctx.cancel->cancelled()) {
        cancelled = true;
        break;
      }
      cv.wait_for(lk, std::chrono::milliseconds(100));
    }
    if (done) return;
    p.terminate();  // the whole process group: the hook's own children too
    if (!cv.wait_for(lk, std::chrono::seconds(5), [&] { return done; })) p.kill();
  });
  int rc = p.wait();
  {
    std::lock_guard lk(mu);
    done = true;
  }
  cv.notify_all();
  watch.join();
  std::string err = p.stderr_text();
  step.detail["exit"] = rc;
  if (timed_out)
    throw Error(fail_code, fmt::format("hook \"{}\" did not finish within {} s and was killed", command,
                                       timeout.count()));
  if (cancelled) throw Error(Code::cancelled, fmt::format("hook \"{}\" stopped: the run was cancelled", command));
  if (rc != 0)
    throw Error(fail_code, fmt::format("hook \"{}\" {}{}{}", command, describe_exit(rc), err.empty() ? "" : ": ", err));
}

bool run_hooks(Steps& steps, const Plan& plan, const char* which, const std::vector<std::string>& commands,
               Code fail_code, const RunContext& ctx) {
  for (size_t i = 0; i < commands.size(); ++i)
    if (!steps.run(fmt::format("hook {}[{}]", which, i + 1), [&](PlanStep& s) {
          run_hook(plan, commands[i], plan.hooks.timeout, fail_code, ctx, s);
        }))
      return false;
  return true;
}

std::string redis_password(const PlanRedis& r) {
  if (r.password_file.empty()) return "";
  std::string text = read_private_file(r.password_file, "Redis password file");
  return text.substr(0, text.find_first_of("\r\n"));
}

}  // namespace plan_detail

using namespace plan_detail;

namespace {

nlohmann::json objectives_of(const Plan& plan) {
  nlohmann::json o = nlohmann::json::object();
  if (plan.rpo.count()) o["rpo_seconds"] = plan.rpo.count();
  if (plan.rto.count()) o["rto_seconds"] = plan.rto.count();
  return o;
}

std::string first_failure(const PlanReport& r) {
  for (auto& s : r.steps)
    if (s.status == "failed") return s.message;
  return "";
}

SetMember member_of(const std::string& source, const Manifest& m) {
  return SetMember{source, m.kind, m.id, m.path, m.sha256, m.source_name};
}

// The set manifests of `from` that `to` lacks, copied byte for byte (signatures and all),
// each only once all its members are in `to`.
size_t sync_sets(Repository& from, Repository& to, const std::string& plan, const LogFn& log) {
  size_t copied = 0;
  for (auto& e : list_backup_sets(from, plan, log)) {
    if (!e.complete || to.storage().stat(e.set.key())) continue;
    bool members_there = true;
    for (auto& m : e.set.members) members_there = members_there && to.storage().stat(m.path + Manifest::kManifestSuffix);
    if (!members_there) continue;
    to.storage().write_small(e.set.key(), from.storage().read_small(e.set.key(), 4 << 20));
    ++copied;
  }
  return copied;
}

// The plan's retention over its sets: complete sets are counted; a set kept keeps all its
// members; a set pruned goes members first, manifest last. Incomplete sets are neither
// counted nor deleted (what remains of them may still be wanted). Then the plan's sources'
// backups outside any set (members of failed runs) under the same policy.
nlohmann::json apply_plan_retention(Repository& repo, const Plan& plan, const RunContext& ctx) {
  nlohmann::json out = {{"deleted_sets", nlohmann::json::array()}, {"kept_sets", 0}, {"deleted_backups", 0}};
  {
    RepositoryLock lock(repo.storage(), LockKind::exclusive, ctx);
    RunContext g = lock.guard(ctx);
    auto sets = list_backup_sets(repo, plan.name, g.log);
    std::vector<RetentionItem> items;
    std::vector<const BackupSetEntry*> counted;
    for (auto& e : sets) {
      if (!e.complete) {
        if (g.log) g.log(LogLevel::warning, fmt::format("keeping incomplete backup set {} uncounted: {}", e.set.id, e.problem));
        continue;
      }
      RetentionItem it;
      it.id = e.set.id;
      it.kind = "set";
      it.source = plan.name;
      it.created = parse_rfc3339(e.set.started_at);
      it.finished = parse_rfc3339(e.set.finished_at);
      items.push_back(it);
      counted.push_back(&e);
    }
    auto decisions = apply_retention(items, {}, *plan.retention, repo.clock().now());
    for (size_t i = 0; i < decisions.size(); ++i) {
      if (g.log)
        g.log(LogLevel::info, fmt::format("{} backup set {}: {}", decisions[i].keep ? "keep" : "delete", decisions[i].id,
                                          decisions[i].reason));
      if (decisions[i].keep) {
        out["kept_sets"] = out["kept_sets"].get<int>() + 1;
        continue;
      }
      if (g.cancel) g.cancel->check();
      remove_backup_set(repo, counted[i]->set, g.log);
      out["deleted_sets"].push_back(counted[i]->set.id);
    }
  }
  // Backups of the plan's sources outside every set: prune protects set members.
  std::set<std::pair<std::string, std::string>> groups;  // (kind, source) of the plan's members
  for (auto& e : list_backup_sets(repo, plan.name, ctx.log))
    for (auto& m : e.set.members)
      if (!m.source_name.empty()) groups.insert({m.kind, m.source_name});
  for (auto& [kind, source] : groups) {
    PruneOptions po;
    po.policy = *plan.retention;
    po.kind = kind;
    po.source = source;
    PruneResult r = prune(repo, po, repo.clock().now(), ctx);
    out["deleted_backups"] = out["deleted_backups"].get<size_t>() + r.deleted;
  }
  return out;
}

// The newest complete set of the plan that finished at or before `t`: its members all
// describe the service before that moment.
BackupSetEntry newest_set_before(Repository& repo, const Plan& plan, TimePoint t, const LogFn& log) {
  std::optional<BackupSetEntry> best;
  for (auto& e : list_backup_sets(repo, plan.name, log))
    if (e.complete && parse_rfc3339(e.set.finished_at) <= t) best = e;  // oldest first
  if (!best)
    throw Error(Code::not_found, fmt::format("plan {} has no complete backup set that finished at or before {} in {}",
                                             plan.name, format_rfc3339(t), repo.storage().describe()));
  return *best;
}

// What restore_command's wal-fetch needs to open the repository: its storage options and
// key files (paths, never a secret).
std::vector<std::string> wal_fetch_args(const PlanStorage& s) {
  std::vector<std::string> a;
  auto add = [&](const char* opt, const std::string& v) {
    if (!v.empty()) a.insert(a.end(), {opt, v});
  };
  add("--region", s.region);
  add("--endpoint-url", s.endpoint_url);
  add("--profile", s.profile);
  for (auto& f : s.identity_files) add("--identity", std::filesystem::absolute(f).string());
  return a;
}

}  // namespace

std::vector<BackupSetEntry> plan_sets(const Plan& plan, const PlanEnvironment& env) {
  auto o = open_plan_storage(plan.repository, env);
  return list_backup_sets(o->repo, plan.name, o->ctx.log);
}

PlanReport run_plan(const Plan& plan, const PlanEnvironment& env) {
  PlanReport r;
  r.operation = "run";
  r.plan = plan.name;
  auto primary = open_plan_storage(plan.repository, env);
  std::vector<std::unique_ptr<OpenedRepository>> copies;
  for (auto& c : plan.copies) copies.push_back(open_plan_storage(c, env));
  Repository& repo = primary->repo;
  const RunContext& ctx = primary->ctx;
  Steps steps(r, ctx);

  BackupSet set;
  set.plan = plan.name;
  set.started_at = r.started_at;
  set.objectives = objectives_of(plan);
  set.id = plan.name + "_" + format_name_stamp(parse_rfc3339(r.started_at));
  std::vector<std::string> failed;

  bool hooks_ok = run_hooks(steps, plan, "before_backup", plan.hooks.before_backup, Code::dump_failed, ctx);
  if (hooks_ok) {
    // One shared lock across the members and the set: a prune elsewhere waits for the set.
    RepositoryLock lock(repo.storage(), LockKind::shared, ctx);
    RunContext g = lock.guard(ctx);
    auto member = [&](const std::string& source, const std::function<Manifest()>& backup) {
      bool ok = steps.run(source, [&](PlanStep& s) {
        Manifest m = backup();
        s.detail = {{"id", m.id}, {"kind", m.kind}, {"path", m.path}, {"size", m.size}, {"sha256", m.sha256}};
        s.message = fmt::format("{} ({} bytes)", m.id, m.size);
        set.members.push_back(member_of(source, m));
      });
      if (!ok) failed.push_back(source);
    };
    for (auto& p : plan.postgres)
      member("postgres." + p.name, [&] {
        PgBackupOptions o;
        o.conninfo = p.conninfo;
        if (!p.pg_dump_args.empty()) o.pg_dump_args = p.pg_dump_args;
        o.name_prefix = p.name_prefix;
        return backup_postgres(repo, o, g);
      });
    for (auto& p : plan.pitr)
      member("pitr." + p.name, [&] {
        pitr::BaseBackupOptions o;
        o.conninfo = p.conninfo;
        o.name_prefix = p.name_prefix;
        return pitr::backup_base(repo, o, g);
      });
    for (auto& rd : plan.redis)
      member("redis." + rd.name, [&] {
        RedisBackupOptions o;
        o.url = rd.url;
        o.password = redis_password(rd);
        o.mode = parse_redis_mode(rd.mode);
        o.name_prefix = rd.name_prefix;
        return backup_redis(repo, o, g);
      });
    for (auto& f : plan.files)
      member("files." + f.name, [&] {
        FilesBackupOptions o;
        o.base_dir = f.base;
        o.paths = f.paths;
        o.excludes = f.excludes;
        o.include_secrets = f.include_secrets;
        o.ignore_missing = f.ignore_missing;
        o.name_prefix = f.name_prefix;
        return backup_files(repo, o, g);
      });
    if (failed.empty()) {
      steps.run("set", [&](PlanStep& s) {
        set.finished_at = format_rfc3339(std::chrono::system_clock::now());
        write_backup_set(repo, set, g.log);
        r.set_id = set.id;
        s.message = fmt::format("{} ({} members)", set.id, set.members.size());
        s.detail = set.to_json();
      });
    } else {
      steps.note("set", "skipped",
                 fmt::format("not written: {} failed; the backups of the other sources stay, outside any set",
                             fmt::join(failed, ", ")));
    }
  }
  // After-hooks undo what the before-hooks did (resume writes), so they run whenever those did.
  if (hooks_ok) run_hooks(steps, plan, "after_backup", plan.hooks.after_backup, Code::dump_failed, ctx);

  if (!steps.failed()) {
    for (size_t i = 0; i < copies.size(); ++i) {
      steps.run(fmt::format("copy[{}] sync", i + 1), [&](PlanStep& s) {
        SyncResult sr = sync_repositories(repo, copies[i]->repo, "", copies[i]->ctx);
        size_t sets_copied = sync_sets(repo, copies[i]->repo, plan.name, ctx.log);
        s.message = fmt::format("{}: {} backups copied ({} bytes), {} present, {} sets", copies[i]->location,
                                sr.copied.size(), sr.bytes, sr.present, sets_copied);
        s.detail = {{"location", copies[i]->location}, {"copied", sr.copied}, {"bytes", sr.bytes},
                    {"present", sr.present}, {"sets", sets_copied}};
      });
    }
    if (plan.retention)
      steps.run("retention", [&](PlanStep& s) {
        s.detail = apply_plan_retention(repo, plan, ctx);
        s.message = fmt::format("{} sets kept, {} deleted", s.detail["kept_sets"].get<int>(),
                                s.detail["deleted_sets"].size());
      });
  } else {
    for (size_t i = 0; i < copies.size(); ++i)
      steps.note(fmt::format("copy[{}] sync", i + 1), "skipped", "the run failed");
    if (plan.retention) steps.note("retention", "skipped", "the run failed: nothing is pruned after a failed run");
  }

  std::string msg;
  if (!steps.failed())
    msg = fmt::format("backup set {} complete: {} members", set.id, set.members.size());
  else if (!failed.empty())
    msg = fmt::format("run failed: {} failed ({}); no backup set was written; every earlier set is unchanged",
                      fmt::join(failed, ", "), first_failure(r));
  else
    for (auto& s : r.steps)
      if (s.status == "failed" && msg.empty())
        msg = fmt::format("run failed at {}: {}{}", s.name, s.message,
                          r.set_id.empty() ? "" : fmt::format(" (backup set {} is complete)", r.set_id));
  steps.finish(msg);
  return r;
}

PlanReport restore_plan(const Plan& plan, const PlanRestoreOptions& opts, const PlanEnvironment& env) {
  PlanReport r;
  r.operation = "restore";
  r.plan = plan.name;
  const PlanStorage* from = &plan.repository;
  PlanStorage other;
  if (!opts.from.empty() && opts.from != plan.repository.location) {
    from = nullptr;
    for (auto& c : plan.copies)
      if (c.location == opts.from) from = &c;
    if (!from) {
      other = plan.repository;
      other.location = opts.from;
      other.storage_class.clear();
      from = &other;
    }
  }
  auto opened = open_plan_storage(*from, env);
  Repository& repo = opened->repo;
  const RunContext& ctx = opened->ctx;
  Steps steps(r, ctx);

  const bool point_in_time = !opts.target_time.empty();
  TimePoint target{};
  if (point_in_time) {
    if (plan.pitr.empty())
      throw Error(Code::invalid_argument,
                  fmt::format("plan {}: --target-time needs a [pitr.NAME] source (base backups and archived WAL); "
                              "the plan has none",
                              plan.path));
    target = pitr::parse_target_time(opts.target_time);
    r.extra["target_time"] = opts.target_time;
  }

  // The set and every member are checked before anything is stopped or touched.
  BackupSetEntry e;
  if (!steps.run("set", [&](PlanStep& s) {
        e = opts.target_time.empty() || opts.set != "latest" ? find_backup_set(repo, plan.name, opts.set, ctx.log)
                                                             : newest_set_before(repo, plan, target, ctx.log);
        auto need = [&](const std::string& source) {
          if (!e.set.member(source))
            throw Error(Code::not_found,
                        fmt::format("backup set {} has no member {} (the plan names it; the set was written by "
                                    "another version of the plan)",
                                    e.set.id, source));
        };
        if (!point_in_time)
          for (auto& p : plan.postgres) need("postgres." + p.name);
        for (auto& p : plan.pitr) need("pitr." + p.name);
        for (auto& rd : plan.redis) need("redis." + rd.name);
        for (auto& f : plan.files) need("files." + f.name);
        r.set_id = e.set.id;
        s.message = fmt::format("{} ({} members, started {})", e.set.id, e.set.members.size(), e.set.started_at);
        s.detail = e.set.to_json();
      })) {
    steps.finish(fmt::format("restore not started: {}; nothing was stopped or changed", r.steps.back().message));
    return r;
  }
  auto load = [&](const std::string& source) {
    const SetMember* mem = e.set.member(source);
    Manifest listed;
    listed.id = mem->id;
    listed.path = mem->path;
    return repo.load(listed);
  };

  struct Action {
    std::string name, what;
    std::function<void(PlanStep&)> fn;
  };
  std::vector<Action> actions;
  std::vector<std::pair<std::string, std::string>> skipped;  // sources the restore leaves alone, and why
  for (auto& c : plan.hooks.before_restore)
    actions.push_back({fmt::format("hook before_restore[{}]", &c - plan.hooks.before_restore.data() + 1),
                       "run: " + c,
                       [&, c](PlanStep& s) { run_hook(plan, c, plan.hooks.timeout, Code::restore_failed, ctx, s); }});
  for (auto& p : plan.postgres) {
    std::string src = "postgres." + p.name;
    if (point_in_time) {
      skipped.push_back({src, fmt::format("not restored: PostgreSQL comes back to {} through the WAL "
                                          "(a dump would replace what it replayed)",
                                          opts.target_time)});
      continue;
    }
    actions.push_back({src, fmt::format("restore {} into {} (replacing it)", e.set.member(src)->id,
                                        pg_conninfo_dbname(p.conninfo)),
                       [&, src](PlanStep& s) {
                         Manifest m = load(src);
                         PgRestoreOptions o;
                         o.conninfo = p.conninfo;
                         o.clean = true;
                         restore_postgres(repo, m, o, ctx);
                         s.message = fmt::format("{} restored into {}", m.id, pg_conninfo_dbname(p.conninfo));
                         s.detail = {{"id", m.id}, {"size", m.size}};
                       }});
  }
  for (auto& p : plan.pitr) {
    std::string src = "pitr." + p.name;
    if (!point_in_time && !plan.postgres.empty()) {
      skipped.push_back({src, "not restored: the plan's [postgres] dumps restore the database; give --target-time "
                              "to restore it through its base backup and WAL"});
      continue;
    }
    std::string to = point_in_time ? opts.target_time : std::string("the end of the archived WAL");
    actions.push_back({src, fmt::format("restore base backup {} into {} and recover to {}{}", e.set.member(src)->id,
                                        p.data_dir, to, p.start ? " (the server is started)" : ""),
                       [&, src, to](PlanStep& s) {
                         pitr::PitrRestoreOptions o;
                         o.data_dir = p.data_dir;
                         o.target_time = opts.target_time;
                         o.backup_id = e.set.member(src)->id;
                         o.repo_url = from->location;
                         o.mevbackup_path = opts.mevbackup_path;
                         o.wal_fetch_args = wal_fetch_args(*from);
                         o.owner = p.owner;
                         o.settings = p.settings;
                         o.start = p.start;
                         o.timeout_seconds = static_cast<int>(p.timeout.count());
                         pitr::PitrRestoreResult res = pitr::restore_pitr(repo, o, ctx);
                         s.message = fmt::format("base backup {} restored into {}, recovered to {}{}", res.backup.id,
                                                 p.data_dir, to,
                                                 res.started ? " and started" : "; start it with: " + res.start_command);
                         s.detail = res.to_json();
                       }});
  }
  for (auto& rd : plan.redis) {
    std::string src = "redis." + rd.name;
    actions.push_back({src, fmt::format("restore {} into {} (live; its keys are flushed first)",
                                        e.set.member(src)->id, redis::redact(rd.url)),
                       [&, src](PlanStep& s) {
                         Manifest m = load(src);
                         RedisRestoreOptions o;
                         o.redis_url = rd.url;
                         o.password = redis_password(rd);
                         o.flush = true;
                         restore_redis(repo, m, o, ctx);
                         s.message = fmt::format("{} restored into {}", m.id, redis::redact(rd.url));
                         s.detail = {{"id", m.id}, {"size", m.size}};
                       }});
  }
  for (auto& f : plan.files) {
    std::string src = "files." + f.name;
    actions.push_back({src, fmt::format("restore {} into {} (files that differ are replaced)", e.set.member(src)->id,
                                        f.base),
                       [&, src](PlanStep& s) {
                         Manifest m = load(src);
                         FilesRestoreOptions o;
                         o.target = f.base;
                         o.overwrite = true;
                         auto acts = restore_files(repo, m, o, ctx);
                         size_t changed = 0;
                         for (auto& a : acts) changed += a.action != "unchanged";
                         s.message = fmt::format("{} restored into {}: {} of {} files written", m.id, f.base, changed,
                                                 acts.size());
                         s.detail = {{"id", m.id}, {"files", acts.size()}, {"written", changed}};
                       }});
  }
  for (auto& c : plan.hooks.after_restore)
    actions.push_back({fmt::format("hook after_restore[{}]", &c - plan.hooks.after_restore.data() + 1), "run: " + c,
                       [&, c](PlanStep& s) { run_hook(plan, c, plan.hooks.timeout, Code::restore_failed, ctx, s); }});

  for (auto& [name, why] : skipped) steps.note(name, "skipped", why);
  if (opts.dry_run) {
    for (auto& a : actions) steps.note(a.name, "planned", a.what);
    steps.finish(fmt::format("dry run: would restore backup set {} in {} steps; nothing was changed", e.set.id,
                             actions.size()));
    return r;
  }
  std::vector<std::string> restored;
  std::string failed_at;
  for (auto& a : actions) {
    if (!failed_at.empty()) {
      steps.note(a.name, "skipped", "an earlier step failed");
      continue;
    }
    if (steps.run(a.name, a.fn)) {
      if (a.name.rfind("hook ", 0) != 0) restored.push_back(a.name);
    } else {
      failed_at = a.name;
    }
  }
  std::vector<std::string> not_restored;
  for (auto& a : actions)
    if (a.name.rfind("hook ", 0) != 0 && std::find(restored.begin(), restored.end(), a.name) == restored.end())
      not_restored.push_back(a.name);
  if (failed_at.empty())
    steps.finish(fmt::format("backup set {} restored: {}", e.set.id, fmt::join(restored, ", ")));
  else
    steps.finish(fmt::format("restore of backup set {} failed at {}: {}. Restored: {}. Not restored: {}.{}", e.set.id,
                             failed_at, first_failure(r),
                             restored.empty() ? "none" : fmt::format("{}", fmt::join(restored, ", ")),
                             not_restored.empty() ? "none" : fmt::format("{}", fmt::join(not_restored, ", ")),
                             plan.hooks.after_restore.empty()
                                 ? ""
                                 : " The after_restore hooks did not run: the service was left as the before_restore "
                                   "hooks left it."));
  return r;
}

}  // namespace mevbackup
