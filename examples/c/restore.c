/* Restores a PostgreSQL backup with the C API only.
 *   mevb_example_restore REPO ID|latest CONNINFO [--clean] */
#include <mevbackup.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  mevb_pg_restore_opts opts;
  mevb_repo *repo = NULL;
  int rc;

  if (argc < 4 || argc > 5 || (argc == 5 && strcmp(argv[4], "--clean") != 0)) {
    fprintf(stderr, "usage: %s REPO ID|latest CONNINFO [--clean]\n", argv[0]);
    return 2;
  }
  /* The function form of initialisation, as an FFI would use it. */
  if (mevb_pg_restore_opts_init(&opts, sizeof opts) != MEVB_OK) return 1;
  opts.conninfo = argv[3];
  opts.clean = argc == 5;
  if (mevb_repo_open(&repo, argv[1], NULL) != MEVB_OK) {
    fprintf(stderr, "error: %s\n", mevb_error_last()->message);
    return 1;
  }
  rc = mevb_repo_restore_postgres(repo, argv[2], &opts);
  if (rc != MEVB_OK) {
    fprintf(stderr, "error (%s): %s\n", mevb_status_str(rc), mevb_error_last()->message);
    mevb_repo_free(repo);
    return 1;
  }
  printf("restored %s\n", argv[2]);
  mevb_repo_free(repo);
  return 0;
}
