// mevbackup backup postgres / restore postgres
#include "cli.hpp"

namespace cli {

Action setup_backup_postgres(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::string dbname, prefix, compress, pg_dump;
    std::vector<std::string> pg_dump_args;
    int level = -1;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  app->add_option("-d,--dbname", o->dbname, "libpq connection string or URI of the database")
      ->required()->type_name("CONNINFO");
  app->add_option("--prefix", o->prefix, "name prefix of the backup (default: the database name)")->type_name("NAME");
  app->add_option("--compress", o->compress, "compression (default gzip)")->type_name("gzip|zstd|none");
  add_level_option(app, o->level);
  app->add_option("--pg-dump", o->pg_dump, "pg_dump to run (default: the newest able to dump the server)")
      ->type_name("PATH");
  app->add_option("--pg-dump-arg", o->pg_dump_args, "argument for pg_dump, replacing --no-owner --no-acl (repeatable)")
      ->allow_extra_args(false)->type_name("ARG");
  add_output_options(app, o->out);
  return [o] {
    apply_output(o->out);
    warn_password_in_argv(o->dbname);
    auto c = [](const std::string& v) { return v.empty() ? nullptr : v.c_str(); };
    mevb_pg_backup_opts po = MEVB_PG_BACKUP_OPTS_INIT;
    po.conninfo = o->dbname.c_str();
    po.name_prefix = c(o->prefix);
    po.compression = c(o->compress);
    po.pg_dump_path = c(o->pg_dump);
    po.level = o->level;
    std::vector<const char*> extra;
    for (auto& s : o->pg_dump_args) extra.push_back(s.c_str());
    if (!extra.empty()) {
      po.pg_dump_args = extra.data();
      po.pg_dump_args_count = extra.size();
    }
    po.progress = on_progress;
    mevb_repo* repo = open_repo(o->repo);
    mevb_backup* b = nullptr;
    if (mevb_repo_backup_postgres(repo, &po, &b) != MEVB_OK) fail();
    return report_backup(repo, b, o->out);
  };
}

Action setup_restore_postgres(CLI::App* app) {
  struct Opts {
    RepoOptions repo;
    OutputOptions out;
    std::string dbname, backup = "latest", source, pg_restore, staging_dir;
    std::vector<std::string> pg_restore_args;
    int jobs = 0;
    bool clean = false, allow_property_loss = false, stage = false;
  };
  auto o = std::make_shared<Opts>();
  add_repo_options(app, o->repo);
  app->add_option("-d,--dbname", o->dbname, "libpq connection string or URI of the target database")
      ->required()->type_name("CONNINFO");
  app->add_option("-b,--backup", o->backup, "backup id, or latest (default)")->type_name("ID|latest");
  app->add_option("--source", o->source, "with latest: the latest backup of this database")->type_name("DB");
  app->add_flag("--clean", o->clean, "replace a target database that is not empty");
  app->add_flag("--allow-property-loss", o->allow_property_loss,
                "go on (with a warning) when the target server cannot honour a property of the source "
                "database (encoding, collation, locale provider, a setting)");
  app->add_option("-j,--jobs", o->jobs,
                  "sessions loading the data, each reading the artifact once (default 0: one per core, at most 4)")
      ->type_name("N")->check(CLI::Range(0, 64));
  app->add_flag("--stage", o->stage,
                "stage the decompressed dump in a temporary file for pg_restore --jobs instead (reads it once)");
  app->add_option("--staging-dir", o->staging_dir,
                  "where the table of contents, and with --stage the dump, is kept (default $TMPDIR or /tmp)")
      ->type_name("DIR");
  app->add_option("--pg-restore", o->pg_restore, "pg_restore to run")->type_name("PATH");
  app->add_option("--pg-restore-arg", o->pg_restore_args, "argument for pg_restore (repeatable)")
      ->allow_extra_args(false)->type_name("ARG");
  add_output_options(app, o->out);
  return [o] {
    apply_output(o->out);
    warn_password_in_argv(o->dbname);
    auto c = [](const std::string& v) { return v.empty() ? nullptr : v.c_str(); };
    mevb_pg_restore_opts po = MEVB_PG_RESTORE_OPTS_INIT;
    po.conninfo = o->dbname.c_str();
    po.clean = o->clean ? 1 : 0;
    po.allow_property_loss = o->allow_property_loss ? 1 : 0;
    po.source_name = c(o->source);
    po.pg_restore_path = c(o->pg_restore);
    po.staging_dir = c(o->staging_dir);
    po.jobs = o->jobs;
    po.stage = o->stage ? 1 : 0;
    std::vector<const char*> extra;
    for (auto& s : o->pg_restore_args) extra.push_back(s.c_str());
    if (!extra.empty()) {
      po.pg_restore_args = extra.data();
      po.pg_restore_args_count = extra.size();
    }
    po.progress = on_progress;
    mevb_repo* repo = open_repo(o->repo);
    std::string id = resolve_backup(repo, o->backup, "postgres", po.source_name);
    if (mevb_repo_restore_postgres(repo, id.c_str(), &po) != MEVB_OK) fail();
    report_restore(o->out, id, "postgres", "");
    mevb_repo_free(repo);
    return kExitOk;
  };
}

}  // namespace cli
