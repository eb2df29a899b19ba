// mevbackup: the command-line tool for scripts and cron, written on the C API only.
// Exit status: 0 success, 1 failure (one line on stderr), 2 usage error.
#include "cli.hpp"

namespace cli {
int cmd_backup_postgres(int argc, char** argv, int start);
int cmd_restore_postgres(int argc, char** argv, int start);
int cmd_list(int argc, char** argv, int start);
int cmd_prune(int argc, char** argv, int start);
int cmd_verify(int argc, char** argv, int start);
int cmd_check(int argc, char** argv, int start);
int cmd_backup_files(int argc, char** argv, int start);
int cmd_restore_files(int argc, char** argv, int start);
// Point-in-time recovery
int cmd_wal_push(int argc, char** argv, int start);
int cmd_wal_fetch(int argc, char** argv, int start);
}  // namespace cli

namespace {

const char* kUsage =
    "usage:\n"
    "  mevbackup backup postgres --repo REPO --dbname CONNINFO [--prefix NAME] [--compress gzip|zstd|none]\n"
    "                            [--level N] [--pg-dump PATH] [--pg-dump-arg ARG]... [--json]\n"
    "                            (gzip levels 1-3: ISA-L, default 1; 4-12: libdeflate; zstd 1-19, default 3)\n"
    "  mevbackup restore postgres --repo REPO --dbname CONNINFO [--backup ID|latest] [--source DB]\n"
    "                             [--clean] [--jobs N [--staging-dir DIR]] [--pg-restore PATH]\n"
    "  mevbackup backup files --repo REPO [--base DIR] [--exclude GLOB]... [--include-secrets]\n"
    "                         [--ignore-missing] [--prefix NAME] [--json] PATH...\n"
    "  mevbackup restore files --repo REPO --target DIR [--backup ID|latest] [--only GLOB]...\n"
    "                          [--dry-run] [--overwrite] [--source NAME]\n"
    "  mevbackup wal-push --repo REPO WALPATH           (archive_command: ... %p)\n"
    "  mevbackup wal-fetch --repo REPO WALNAME DEST     (restore_command: ... %f %p; exit 1 if absent)\n"
    "  mevbackup list --repo REPO [--kind postgres] [--json]\n"
    "  mevbackup prune --repo REPO [--keep-last N] [--keep-days N] [--keep-daily N] [--keep-weekly N]\n"
    "                  [--keep-monthly N] [--keep-yearly N] [--grace DURATION] [--kind K] [--source S]\n"
    "                  [--dry-run] [--now TIME] [--json]\n"
    "  mevbackup verify --repo REPO [--backup ID|latest|all] [--kind K] [--restore-test CONNINFO]\n"
    "                   [--query SQL]... [--no-record] [--json]\n"
    "  mevbackup check --repo REPO --max-age DURATION [--kind K] [--now TIME] [--json]\n"
    "                  [--prometheus FILE]      (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)\n"
    "  mevbackup version\n"
    "\n"
    "REPO may also come from MEVBACKUP_REPO. CONNINFO is a libpq connection string or URI;\n"
    "the PG* environment variables apply. Keep passwords in PGPASSWORD or a passfile, not\n"
    "on the command line.\n"
    "Files: PATHs (files, directories, globs) are relative to --base (default: the current\n"
    "directory); secrets (.env, *.pem, *.key, id_rsa*, secrets/, ...) stay out unless\n"
    "--include-secrets. A restore refuses to replace files that differ unless --overwrite.\n"
    "Common options: --quiet (no progress), --verbose (log details).\n";

struct Command {
  const char* verb;
  const char* kind;  // nullptr: the verb takes no kind
  cli::CommandFn run;
};

// One line per command; a new service adds its lines here and a file beside this one.
const Command kCommands[] = {
    {"backup", "postgres", cli::cmd_backup_postgres},
    {"restore", "postgres", cli::cmd_restore_postgres},
    {"list", nullptr, cli::cmd_list},
    {"prune", nullptr, cli::cmd_prune},
    {"verify", nullptr, cli::cmd_verify},
    {"check", nullptr, cli::cmd_check},
    {"backup", "files", cli::cmd_backup_files},
    {"restore", "files", cli::cmd_restore_files},
    // Point-in-time recovery
    {"wal-push", nullptr, cli::cmd_wal_push},
    {"wal-fetch", nullptr, cli::cmd_wal_fetch},
};

}  // namespace

int main(int argc, char** argv) {
  using cli::UsageError;
  try {
    std::string cmd = argc > 1 ? argv[1] : "";
    std::string sub = argc > 2 ? argv[2] : "";
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (cmd == "version" || cmd == "--version") {
      std::printf("mevbackup %s\n", mevb_version());
      return 0;
    }
    if (cmd.empty()) throw UsageError{"no command given"};
    bool verb_known = false;
    for (const Command& c : kCommands) {
      if (cmd != c.verb) continue;
      verb_known = true;
      if (!c.kind) return c.run(argc, argv, 2);
      if (sub == c.kind) return c.run(argc, argv, 3);
    }
    if (verb_known)
      throw UsageError{sub.empty() ? cmd + " needs a kind" : "unknown kind \"" + sub + "\" for " + cmd};
    throw UsageError{"unknown command \"" + cmd + "\""};
  } catch (const UsageError& e) {
    std::fprintf(stderr, "mevbackup: %s\n%s", e.msg.c_str(), kUsage);
    return 2;
  }
}
