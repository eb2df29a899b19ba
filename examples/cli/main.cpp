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
int cmd_adopt(int argc, char** argv, int start);
int cmd_backup_files(int argc, char** argv, int start);
int cmd_restore_files(int argc, char** argv, int start);
int cmd_backup_redis(int argc, char** argv, int start);
int cmd_restore_redis(int argc, char** argv, int start);
int cmd_sync(int argc, char** argv, int start);
int cmd_lifecycle(int argc, char** argv, int start);
// Point-in-time recovery
int cmd_wal_push(int argc, char** argv, int start);
int cmd_wal_fetch(int argc, char** argv, int start);
int cmd_backup_basebackup(int argc, char** argv, int start);
int cmd_restore_pitr(int argc, char** argv, int start);
}  // namespace cli

namespace {

const char* kUsage =
    "usage:\n"
    "  mevbackup backup postgres --repo REPO --dbname CONNINFO [--prefix NAME] [--compress gzip|zstd|none]\n"
    "                            [--level N] [--pg-dump PATH] [--pg-dump-arg ARG]... [--json]\n"
    "                            (gzip levels 1-3: ISA-L, default 1; 4-12: libdeflate; zstd 1-22, default 3)\n"
    "  mevbackup restore postgres --repo REPO --dbname CONNINFO [--backup ID|latest] [--source DB]\n"
    "                             [--clean] [--jobs N [--staging-dir DIR]] [--pg-restore PATH]\n"
    "  mevbackup backup files --repo REPO [--base DIR] [--exclude GLOB]... [--include-secrets]\n"
    "                         [--ignore-missing] [--prefix NAME] [--json] PATH...\n"
    "  mevbackup restore files --repo REPO --target DIR [--backup ID|latest] [--only GLOB]...\n"
    "                          [--dry-run] [--overwrite] [--source NAME]\n"
    "  mevbackup backup redis --repo REPO --redis-url redis://[user@]host:port\n"
    "                         [--mode auto|bgsave|replication] [--prefix NAME] [--compress gzip|zstd|none]\n"
    "                         [--level N] [--timeout SECONDS] [--json]\n"
    "  mevbackup restore redis --repo REPO [--backup ID|latest] [--source PREFIX]\n"
    "                          (--redis-url redis://[user@]host:port [--replace | --flush]\n"
    "                           | --data-dir DIR [--rdb-name dump.rdb] [--before CMD] [--after CMD]\n"
    "                             [--target-rdb-version N])\n"
    "  mevbackup wal-push --repo REPO WALPATH           (archive_command: ... %p)\n"
    "  mevbackup wal-fetch --repo REPO WALNAME DEST     (restore_command: ... %f %p; exit 1 if absent)\n"
    "  mevbackup backup basebackup --repo REPO --dbname CONNINFO [--prefix NAME] [--compress gzip|zstd|none]\n"
    "                              [--level N] [--max-rate KBPS] [--spread-checkpoint] [--json]\n"
    "  mevbackup restore pitr --repo REPO --data-dir DIR [--target-time TIME | --target-lsn LSN |\n"
    "                         --target-name NAME] [--backup ID] [--owner USER] [--set NAME=VALUE]...\n"
    "                         [--tablespace-map OID=DIR]... [--start [--timeout SECONDS] [--log FILE]]\n"
    "  mevbackup list --repo REPO [--kind postgres] [--json]\n"
    "  mevbackup prune --repo REPO [--keep-last N] [--keep-days N] [--keep-daily N] [--keep-weekly N]\n"
    "                  [--keep-monthly N] [--keep-yearly N] [--grace DURATION] [--kind K] [--source S]\n"
    "                  [--dry-run] [--now TIME] [--json]\n"
    "  mevbackup verify --repo REPO [--backup ID|latest|all] [--kind K] [--restore-test CONNINFO]\n"
    "                   [--query SQL]... [--no-record] [--json]\n"
    "  mevbackup check --repo REPO --max-age DURATION [--kind K] [--now TIME] [--json]\n"
    "                  [--warning DURATION] [--critical DURATION] [--future-skew DURATION]\n"
    "                  [--prometheus FILE]      (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)\n"
    "  mevbackup adopt --repo REPO [--dry-run] [--json]   (manifests for the runbook's backups)\n"
    "  mevbackup sync --from REPO --to REPO [--kind postgres] [--storage-class CLASS]\n"
    "  mevbackup lifecycle --repo s3://BUCKET/PREFIX [--transition DAYS:CLASS]... [--expire DAYS]\n"
    "                      [--abort-incomplete DAYS] [--rule-id ID]\n"
    "  mevbackup version\n"
    "\n"
    "REPO may also come from MEVBACKUP_REPO. CONNINFO is a libpq connection string or URI;\n"
    "the PG* environment variables apply. Keep passwords in PGPASSWORD or a passfile, not\n"
    "on the command line.\n"
    "Files: PATHs (files, directories, globs) are relative to --base (default: the current\n"
    "directory); secrets (.env, *.pem, *.key, id_rsa*, secrets/, ...) stay out unless\n"
    "--include-secrets. A restore refuses to replace files that differ unless --overwrite.\n"
    "Redis: the password comes from MEVBACKUP_REDIS_PASSWORD (or the URL, visible to other\n"
    "users). --before/--after commands are split into words (quotes and backslashes\n"
    "honoured, nothing expanded) and run without a shell.\n"
    "Common options: --quiet (no progress), --verbose (log details).\n"
    "MEVBACKUP_STALL_TIMEOUT=SECONDS fails an operation whose data stops moving that long.\n"
    "Repository lock: backup, restore and verify share it, prune takes it alone; a run that\n"
    "finds it taken fails at once (\"locked\") unless MEVBACKUP_LOCK_WAIT=SECONDS. Also\n"
    "MEVBACKUP_LOCK_TTL, MEVBACKUP_LOCK_REFRESH, MEVBACKUP_NO_LOCK=1 (docs/lock.md).\n"
    "\n"
    "REPO may be s3://bucket/prefix (S3-compatible object storage). Credentials and defaults come\n"
    "from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL.\n"
    "S3 options: --storage-class CLASS, --endpoint-url URL, --region R, --ca-bundle PEM,\n"
    "            --no-verify-tls, --path-style, --unsigned-payload (https only),\n"
    "            --sse AES256|aws:kms [--sse-kms-key-id ID],\n"
    "            --part-size MiB (first multipart part, default 8).\n";

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
    {"adopt", nullptr, cli::cmd_adopt},
    {"backup", "files", cli::cmd_backup_files},
    {"restore", "files", cli::cmd_restore_files},
    {"backup", "redis", cli::cmd_backup_redis},
    {"restore", "redis", cli::cmd_restore_redis},
    {"sync", nullptr, cli::cmd_sync},
    {"lifecycle", nullptr, cli::cmd_lifecycle},
    // Point-in-time recovery
    {"wal-push", nullptr, cli::cmd_wal_push},
    {"wal-fetch", nullptr, cli::cmd_wal_fetch},
    {"backup", "basebackup", cli::cmd_backup_basebackup},
    {"restore", "pitr", cli::cmd_restore_pitr},
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
