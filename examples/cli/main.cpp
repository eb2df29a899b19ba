// mevbackup: the command-line tool for scripts and cron, written on the C API only.
// Exit status: 0 success, 1 failure (one line on stderr), 2 usage error.
#include "cli.hpp"

namespace cli {
int cmd_backup_postgres(int argc, char** argv, int start);
int cmd_restore_postgres(int argc, char** argv, int start);
int cmd_list(int argc, char** argv, int start);
int cmd_sync(int argc, char** argv, int start);
int cmd_lifecycle(int argc, char** argv, int start);
}  // namespace cli

namespace {

const char* kUsage =
    "usage:\n"
    "  mevbackup backup postgres --repo REPO --dbname CONNINFO [--prefix NAME] [--compress gzip|none]\n"
    "                            [--level N] [--pg-dump PATH] [--pg-dump-arg ARG]... [--json]\n"
    "  mevbackup restore postgres --repo REPO --dbname CONNINFO [--backup ID|latest] [--source DB]\n"
    "                             [--clean] [--pg-restore PATH]\n"
    "  mevbackup list --repo REPO [--kind postgres] [--json]\n"
    "  mevbackup sync --from REPO --to REPO [--kind postgres] [--storage-class CLASS]\n"
    "  mevbackup lifecycle --repo s3://BUCKET/PREFIX [--transition DAYS:CLASS]... [--expire DAYS]\n"
    "                      [--abort-incomplete DAYS] [--rule-id ID]\n"
    "  mevbackup version\n"
    "\n"
    "REPO may also come from MEVBACKUP_REPO. CONNINFO is a libpq connection string or URI;\n"
    "the PG* environment variables apply. Keep passwords in PGPASSWORD or a passfile, not\n"
    "on the command line.\n"
    "Common options: --quiet (no progress), --verbose (log details).\n"
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
    {"sync", nullptr, cli::cmd_sync},
    {"lifecycle", nullptr, cli::cmd_lifecycle},
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
