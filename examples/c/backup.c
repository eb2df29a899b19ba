/* Backs up one PostgreSQL database with the C API only.
 *   mevb_example_backup REPO CONNINFO
 * Prints the new backup's id and path. */
#include <mevbackup.h>
#include <stdio.h>

static void log_line(int level, const char *message, void *user) {
  (void)user;
  if (level >= MEVB_LOG_WARNING) fprintf(stderr, "warning: %s\n", message);
}

int main(int argc, char **argv) {
  mevb_repo_opts ro = MEVB_REPO_OPTS_INIT;
  mevb_pg_backup_opts opts = MEVB_PG_BACKUP_OPTS_INIT;
  mevb_repo *repo = NULL;
  mevb_backup *backup = NULL;
  int rc;

  if (argc != 3) {
    fprintf(stderr, "usage: %s REPO CONNINFO\n", argv[0]);
    return 2;
  }
  ro.log = log_line;
  if (mevb_repo_open(&repo, argv[1], &ro) != MEVB_OK) {
    fprintf(stderr, "error: %s\n", mevb_error_last()->message);
    return 1;
  }
  opts.conninfo = argv[2];
  rc = mevb_repo_backup_postgres(repo, &opts, &backup);
  if (rc != MEVB_OK) {
    fprintf(stderr, "error (%s): %s\n", mevb_status_str(rc), mevb_error_last()->message);
    mevb_repo_free(repo);
    return 1;
  }
  printf("%s %s\n", mevb_backup_id(backup), mevb_backup_path(backup));
  mevb_backup_free(backup);
  mevb_repo_free(repo);
  return 0;
}
