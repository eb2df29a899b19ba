// mevbackup wal-push / wal-fetch: PostgreSQL's archive_command and restore_command.
//   archive_command = 'mevbackup wal-push --repo /backups %p'
//   restore_command = 'mevbackup wal-fetch --repo /backups %f %p'
#include <climits>

#include <algorithm>

#include "cli.hpp"

namespace cli {

Action setup_wal_push(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::vector<std::string> pos;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  add_output_options(app, o->out, false);
  app->add_option("walpath", o->pos, "the WAL file to archive (%p)")->type_name("WALPATH");
  return [o] {
    apply_output(o->out);
    g_progress = false;
    if (o->pos.size() != 1) throw UsageError{"wal-push takes one WAL file path (%p)"};
    mevb_repo* repo = open_repo(o->repo);
    int already = 0;
    if (mevb_wal_push(repo, o->pos[0].c_str(), &already) != MEVB_OK) fail();
    mevb_repo_free(repo);
    if (already && g_verbose) std::fprintf(stderr, "mevbackup: %s was already archived\n", o->pos[0].c_str());
    return kExitOk;
  };
}

Action setup_wal_fetch(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::vector<std::string> pos;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  add_output_options(app, o->out, false);
  app->add_option("names", o->pos, "the WAL file's name (%f) and where to put it (%p)")
      ->type_name("WALNAME DEST");
  return [o] {
    apply_output(o->out);
    g_progress = false;
    if (o->pos.size() != 2) throw UsageError{"wal-fetch takes a WAL file name (%f) and a destination path (%p)"};
    mevb_repo* repo = open_repo(o->repo);
    int rc = mevb_wal_fetch(repo, o->pos[0].c_str(), o->pos[1].c_str());
    // PostgreSQL asks for files that do not exist (the next timeline's history, the
    // segment past the end of the archive): that is an ordinary "no", said quietly.
    if (rc == MEVB_ERR_NOT_FOUND) {
      if (g_verbose) std::fprintf(stderr, "mevbackup: %s is not archived\n", o->pos[0].c_str());
      mevb_repo_free(repo);
      return kExitFailure;
    }
    if (rc != MEVB_OK) fail();
    mevb_repo_free(repo);
    return kExitOk;
  };
}

// mevbackup backup basebackup --repo R --dbname CONNINFO
Action setup_backup_basebackup(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::string dbname, prefix, compress;
    int level = -1;
    bool spread_checkpoint = false, allow_no_archiving = false;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  app->add_option("-d,--dbname", o->dbname, "libpq connection string or URI of the server")
      ->required()->type_name("CONNINFO");
  app->add_option("--prefix", o->prefix, "name prefix of the backup")->type_name("NAME");
  app->add_option("--compress", o->compress, "compression (default gzip)")->type_name("gzip|zstd|none");
  add_level_option(app, o->level);
  app->add_flag("--spread-checkpoint", o->spread_checkpoint, "let the server spread its checkpoint");
  app->add_flag("--allow-no-archiving", o->allow_no_archiving, "accept a server that archives no WAL");
  add_output_options(app, o->out);
  return [o] {
    apply_output(o->out);
    warn_password_in_argv(o->dbname);
    auto c = [](const std::string& v) { return v.empty() ? nullptr : v.c_str(); };
    mevb_basebackup_opts bo = MEVB_BASEBACKUP_OPTS_INIT;
    bo.conninfo = o->dbname.c_str();
    bo.name_prefix = c(o->prefix);
    bo.compression = c(o->compress);
    bo.level = o->level;
    bo.spread_checkpoint = o->spread_checkpoint ? 1 : 0;
    bo.allow_no_archiving = o->allow_no_archiving ? 1 : 0;
    // --max-rate (every command's) also asks the server to send no faster (MAX_RATE, kB/s).
    if (!o->repo.storage.max_rate.empty()) {
      uint64_t rate = 0;
      if (mevb_parse_rate(o->repo.storage.max_rate.c_str(), &rate) != MEVB_OK) fail();
      bo.max_rate_kbps = static_cast<uint32_t>(std::clamp<uint64_t>(rate / 1024, 32, 1048576));
    }
    bo.progress = on_progress;
    mevb_repo* repo = open_repo(o->repo);
    mevb_backup* b = nullptr;
    if (mevb_repo_backup_basebackup(repo, &bo, &b) != MEVB_OK) fail();
    return report_backup(repo, b, o->out);
  };
}

// mevbackup restore pitr --repo R [--target-time T | --target-lsn L | --target-name N] --data-dir DIR
Action setup_restore_pitr(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::string target_time, target_lsn, target_name, data_dir, backup, owner, timeout, log;
    std::vector<std::string> sets, tablespace_maps;
    bool start = false;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  app->add_option("--data-dir", o->data_dir, "the new server's data directory (empty or absent)")
      ->required()->type_name("DIR");
  const char* g = "Recovery target (at most one; default: the end of the archive)";
  auto* t = app->add_option("--target-time", o->target_time, "recover to this time")->type_name("TIME")->group(g);
  auto* l = app->add_option("--target-lsn", o->target_lsn, "recover to this LSN")->type_name("LSN")->group(g);
  auto* n = app->add_option("--target-name", o->target_name, "recover to this restore point")->type_name("NAME")->group(g);
  t->excludes(l)->excludes(n);
  l->excludes(n);
  app->add_option("-b,--backup", o->backup, "base backup to start from (default: the newest before the target)")
      ->type_name("ID");
  app->add_option("--owner", o->owner, "user that owns the data directory")->type_name("USER");
  app->add_option("--set", o->sets, "a server setting NAME=VALUE (repeatable)")
      ->allow_extra_args(false)->type_name("NAME=VALUE");
  app->add_option("--tablespace-map", o->tablespace_maps, "where a tablespace goes: OID=DIR, or OID=original to confirm the recorded location (one for every tablespace; repeatable)")
      ->allow_extra_args(false)->type_name("OID=DIR|OID=original");
  app->add_flag("--start", o->start, "start the server and wait for the recovery to finish");
  app->add_option("--timeout", o->timeout, "with --start: the longest wait (up to 7d)")
      ->type_name("DURATION")->check(duration_validator());
  app->add_option("--log", o->log, "with --start: the server's log file")->type_name("FILE");
  add_output_options(app, o->out);
  return [o] {
    apply_output(o->out);
    // restore_command runs this very program, by its absolute path.
    std::string exe = self_path();
    // S3 options that are not secrets travel into restore_command; credentials must come
    // from the server's environment (AWS_ACCESS_KEY_ID, ...), never from its configuration.
    std::vector<std::string> fetch_args = o->repo.storage.as_args();
    std::vector<const char*> fa, sets, maps;
    for (auto& s : fetch_args) fa.push_back(s.c_str());
    for (auto& s : o->sets) sets.push_back(s.c_str());
    for (auto& s : o->tablespace_maps) maps.push_back(s.c_str());
    auto c = [](const std::string& v) { return v.empty() ? nullptr : v.c_str(); };
    mevb_pitr_restore_opts po = MEVB_PITR_RESTORE_OPTS_INIT;
    po.data_dir = o->data_dir.c_str();
    po.target_time = c(o->target_time);
    po.target_lsn = c(o->target_lsn);
    po.target_name = c(o->target_name);
    po.backup_id = c(o->backup);
    po.repo_url = o->repo.repo.c_str();
    po.mevbackup_path = exe.c_str();
    po.owner = c(o->owner);
    po.settings = sets.empty() ? nullptr : sets.data();
    po.settings_count = sets.size();
    po.tablespace_map = maps.empty() ? nullptr : maps.data();
    po.tablespace_map_count = maps.size();
    po.wal_fetch_args = fa.empty() ? nullptr : fa.data();
    po.wal_fetch_args_count = fa.size();
    po.start = o->start ? 1 : 0;
    if (!o->timeout.empty()) {
      long long s = parse_duration("--timeout", o->timeout);
      if (s > 86400 * 7) throw UsageError{"--timeout: at most 7d, not \"" + o->timeout + "\""};
      po.timeout_seconds = static_cast<int>(s);
    }
    po.log_file = c(o->log);
    po.progress = on_progress;
    mevb_repo* repo = open_repo(o->repo);
    mevb_report* r = nullptr;
    if (mevb_repo_restore_pitr(repo, &po, &r) != MEVB_OK) fail();
    if (o->out.json) std::fputs(mevb_report_json(r), stdout);
    else if (!o->out.quiet) std::fputs(mevb_report_text(r), stdout);
    mevb_report_free(r);
    mevb_repo_free(repo);
    return kExitOk;
  };
}

}  // namespace cli
