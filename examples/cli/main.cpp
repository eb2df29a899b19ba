// mevbackup: the command-line tool for scripts and cron, written on the C API only.
// Exit status: 0 success, 1 failure (one line on stderr), 2 usage error, 11 repository
// locked by another run; `check` exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
#include <algorithm>
#include <map>
#include <set>

#include "cli.hpp"

namespace cli {
Action setup_backup_postgres(CLI::App* app);
Action setup_restore_postgres(CLI::App* app);
Action setup_list(CLI::App* app);
Action setup_prune(CLI::App* app);
Action setup_verify(CLI::App* app);
Action setup_check(CLI::App* app);
Action setup_adopt(CLI::App* app);
Action setup_backup_files(CLI::App* app);
Action setup_restore_files(CLI::App* app);
Action setup_backup_redis(CLI::App* app);
Action setup_restore_redis(CLI::App* app);
Action setup_sync(CLI::App* app);
Action setup_lifecycle(CLI::App* app);
Action setup_wal_push(CLI::App* app);
Action setup_wal_fetch(CLI::App* app);
Action setup_backup_basebackup(CLI::App* app);
Action setup_restore_pitr(CLI::App* app);
Action setup_key_generate(CLI::App* app);
Action setup_rekey(CLI::App* app);
Action setup_run(CLI::App* app);
Action setup_restore_plan(CLI::App* app);
Action setup_drill(CLI::App* app);
void print_man_page(const CLI::App& app, const char* footer);
void print_bash_completion(const CLI::App& app);
}  // namespace cli

namespace {

struct Command {
  const char* verb;
  const char* kind;  // nullptr: the verb takes no kind
  const char* help;
  cli::Setup setup;
};

const char* const kVerbHelp[][2] = {
    {"backup", "back up a service into the repository"},
    {"restore", "restore a backup"},
    {"key", "keys for encryption and signed manifests"},
};

// One line per command; a new service adds its lines here and a file beside this one.
const Command kCommands[] = {
    {"backup", "postgres", "back up a PostgreSQL database (pg_dump -Fc)", cli::setup_backup_postgres},
    {"restore", "postgres", "restore a PostgreSQL backup into a database", cli::setup_restore_postgres},
    {"list", nullptr, "list the backups of a repository", cli::setup_list},
    {"prune", nullptr, "delete the backups a retention policy no longer keeps", cli::setup_prune},
    {"verify", nullptr, "verify checksums, optionally by a test restore", cli::setup_verify},
    {"check", nullptr, "monitoring: is the newest good backup fresh? (Nagios exit codes)", cli::setup_check},
    {"adopt", nullptr, "write manifests for the runbook's backups (checked first) so they count",
     cli::setup_adopt},
    {"backup", "files", "back up configuration files (tar)", cli::setup_backup_files},
    {"restore", "files", "restore configuration files into a directory", cli::setup_restore_files},
    {"backup", "redis", "back up a Redis server (RDB)", cli::setup_backup_redis},
    {"restore", "redis", "restore an RDB into a running or a stopped Redis", cli::setup_restore_redis},
    {"sync", nullptr, "copy complete backups between repositories (local <-> S3)", cli::setup_sync},
    {"lifecycle", nullptr, "install the bucket lifecycle rule of an S3 repository", cli::setup_lifecycle},
    // Point-in-time recovery
    {"wal-push", nullptr, "archive_command: archive a WAL file (... %p)", cli::setup_wal_push},
    {"wal-fetch", nullptr, "restore_command: fetch a WAL file (... %f %p; exit 1 if absent)", cli::setup_wal_fetch},
    {"backup", "basebackup", "back up a whole PostgreSQL cluster for point-in-time recovery",
     cli::setup_backup_basebackup},
    {"restore", "pitr", "restore a cluster to a point in time", cli::setup_restore_pitr},
    {"key", "generate", "generate an age identity and an Ed25519 signing key (files 0600)", cli::setup_key_generate},
    {"rekey", nullptr, "re-encrypt a backup to new recipients (rewrites its age headers only)", cli::setup_rekey},
    // The whole service from one plan file
    {"run", nullptr, "back up every source of a plan into a backup set, sync the copies, apply retention",
     cli::setup_run},
    {"restore", "plan", "restore a backup set of a plan in order (also: restore --plan FILE)", cli::setup_restore_plan},
    {"drill", nullptr, "restore the newest backup set into scratch targets, check it, measure it against RTO and RPO",
     cli::setup_drill},
};

const char* kFooter =
    "Exit status: 0 success, 1 failure, 2 usage error, 11 repository locked (try again later);\n"
    "check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. With --json a failure is a JSON object on stderr.\n"
    "\n"
    "REPO may also come from MEVBACKUP_REPO: a directory or s3://bucket/prefix. S3 credentials and\n"
    "defaults come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION,\n"
    "AWS_ENDPOINT_URL; every command takes the S3 options (--endpoint-url, --region, ...).\n"
    "CONNINFO is a libpq connection string or URI; the PG* environment variables apply. Keep\n"
    "passwords in PGPASSWORD or a passfile, Redis's in MEVBACKUP_REDIS_PASSWORD, not in arguments.\n"
    "DURATION: seconds, or a number with a unit: 90s, 30m, 25h, 2d, 1w, 1d12h.\n"
    "MEVBACKUP_STALL_TIMEOUT=DURATION fails an operation whose data stops moving that long.\n"
    "Repository lock: backup, restore and verify share it, prune takes it alone; a run that finds\n"
    "it taken exits 11 at once unless MEVBACKUP_LOCK_WAIT=DURATION. Also MEVBACKUP_LOCK_TTL,\n"
    "MEVBACKUP_LOCK_REFRESH, MEVBACKUP_NO_LOCK=1 (docs/lock.md).";

// Options whose value may begin with '-' (an argument for pg_dump, a hook command, SQL):
// "--pg-dump-arg --file=x" passes "--file=x" as the value, as it always did.
const std::set<std::string> kRawValueOptions = {"--pg-dump-arg", "--pg-restore-arg", "--before", "--after",
                                                "--query",       "--set",            "--exclude", "--only"};

std::vector<std::string> join_raw_values(int argc, char** argv) {
  std::vector<std::string> out;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      for (; i < argc; ++i) out.push_back(argv[i]);
      break;
    }
    if (kRawValueOptions.count(a) && i + 1 < argc) {
      out.push_back(a + "=" + argv[++i]);
      continue;
    }
    out.push_back(a);
  }
  return out;
}

bool wants_json(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) break;
    if (std::strcmp(argv[i], "--json") == 0) return true;
  }
  return false;
}

CLI::App* find_subcommand(CLI::App* app, const std::string& name) {
  for (CLI::App* s : app->get_subcommands([](CLI::App*) { return true; }))
    if (s->get_name() == name) return s;
  return nullptr;
}

int usage_error(const std::string& msg, bool json, bool nagios, const std::string& hint) {
  if (nagios) {
    std::printf("MEVBACKUP UNKNOWN - usage: %s\n", msg.c_str());
    return 3;
  }
  if (json)
    std::fprintf(stderr, "%s\n", cli::error_json("usage", -1, cli::kExitUsage, msg).dump().c_str());
  else
    std::fprintf(stderr, "mevbackup: %s\n%s\n", msg.c_str(), hint.c_str());
  return cli::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  // Passwords and keys pass through this process: no core file, no ptrace by others.
  mevb_protect_secrets_in_memory();
  CLI::App app{"mevbackup: backup and restore of PostgreSQL, Redis and configuration files", "mevbackup"};
  app.footer(kFooter);
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("mevbackup ") + mevb_version());
  auto* version = app.add_subcommand("version", "print the version");
  app.add_subcommand("help", "print this help");

  std::map<std::string, CLI::App*> verbs;
  std::map<const CLI::App*, cli::Action> actions;
  for (const Command& c : kCommands) {
    CLI::App*& verb = verbs[c.verb];
    if (!verb) {
      const char* vh = c.help;
      for (auto& h : kVerbHelp)
        if (std::strcmp(h[0], c.verb) == 0) vh = h[1];
      verb = app.add_subcommand(c.verb, vh);
      if (c.kind) verb->require_subcommand(1);
    }
    CLI::App* leaf = c.kind ? verb->add_subcommand(c.kind, c.help) : verb;
    actions[leaf] = c.setup(leaf);
  }

  std::string cmd = argc > 1 ? argv[1] : "", sub = argc > 2 ? argv[2] : "";
  if (cmd == "help" && argc == 2) {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  }
  // Generators of the manual page and the completion, run by the build.
  if (cmd == "--help-man" && argc == 2) {
    cli::print_man_page(app, kFooter);
    return 0;
  }
  if (cmd == "--completion") {
    if (argc != 3 || sub != "bash") return usage_error("--completion takes one shell: bash", false, false, "");
    cli::print_bash_completion(app);
    return 0;
  }
  bool nagios = cmd == "check", json = wants_json(argc, argv);
  std::string named = cmd.empty() || cmd[0] == '-' ? std::string() : cmd + " ";
  if (CLI::App* v = find_subcommand(&app, cmd); v && !sub.empty() && find_subcommand(v, sub)) named += sub + " ";
  std::string hint = "run \"mevbackup " + named + "--help\" for the options";
  // Friendlier than the parser's own words for the commonest slips.
  if (cmd.empty()) return usage_error("no command given", json, false, "run \"mevbackup --help\" for the commands");
  if (cmd[0] != '-' && !find_subcommand(&app, cmd))
    return usage_error("unknown command \"" + cmd + "\"", json, false, "run \"mevbackup --help\" for the commands");
  if (CLI::App* v = find_subcommand(&app, cmd); v && v->get_require_subcommand_min() > 0) {
    if (sub.empty()) return usage_error(cmd + " needs a kind", json, false, hint);
    if (sub[0] != '-' && !find_subcommand(v, sub))
      return usage_error("unknown kind \"" + sub + "\" for " + cmd, json, false, hint);
  }

  std::vector<std::string> args = join_raw_values(argc, argv);
  // "restore --plan FILE ..." is "restore plan --plan FILE ...".
  if (cmd == "restore" && (sub == "--plan" || sub.rfind("--plan=", 0) == 0)) args.insert(args.begin() + 1, "plan");
  std::reverse(args.begin(), args.end());  // CLI11 takes them last first
  try {
    app.parse(args);
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const CLI::CallForVersion& e) {
    std::printf("%s\n", e.what());
    return 0;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    return usage_error(e.what(), json, nagios, hint);
  }
  if (version->parsed()) {
    std::printf("mevbackup %s\n", mevb_version());
    return 0;
  }
  for (auto& [leaf, action] : actions) {
    if (!leaf->parsed()) continue;
    if (leaf->get_parent() != &app && !leaf->get_parent()->parsed()) continue;
    try {
      return action();
    } catch (const cli::UsageError& e) {
      return usage_error(e.msg, json, nagios, hint);
    }
  }
  return usage_error("no command given", json, false, "run \"mevbackup --help\" for the commands");
}
