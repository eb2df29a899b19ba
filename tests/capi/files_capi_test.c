/* The configuration-files part of the C API, tested in C (C99, -pedantic):
 * backup, dry run, restore, refusal to overwrite, overwrite, argument errors. */
#define _XOPEN_SOURCE 700
#include <mevbackup.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures = 0;
#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                           \
    }                                                                       \
  } while (0)

static char root[256];

static void path_of(char *out, size_t n, const char *rel) { snprintf(out, n, "%s/%s", root, rel); }

static void put(const char *rel, const char *text) {
  char p[512];
  FILE *f;
  path_of(p, sizeof p, rel);
  f = fopen(p, "w");
  CHECK(f != NULL);
  if (!f) return;
  fputs(text, f);
  fclose(f);
}

static int read_back(const char *rel, char *buf, size_t n) {
  char p[512];
  FILE *f;
  size_t got;
  path_of(p, sizeof p, rel);
  f = fopen(p, "r");
  if (!f) return 0;
  got = fread(buf, 1, n - 1, f);
  buf[got] = 0;
  fclose(f);
  return 1;
}

struct counts {
  int create, replace, unchanged, conflict;
};

static void on_entry(const char *name, const char *action, void *user) {
  struct counts *c = (struct counts *)user;
  CHECK(name != NULL && *name);
  if (strcmp(action, "create") == 0) c->create++;
  else if (strcmp(action, "replace") == 0) c->replace++;
  else if (strcmp(action, "unchanged") == 0) c->unchanged++;
  else if (strcmp(action, "conflict") == 0) c->conflict++;
}

int main(void) {
  mevb_repo *repo = NULL;
  mevb_backup *b = NULL;
  mevb_files_backup_opts bo = MEVB_FILES_BACKUP_OPTS_INIT;
  mevb_files_restore_opts ro;
  const char *paths[] = {"app.conf", "nginx", ".env"};
  const char *missing[] = {"nope.conf"};
  struct counts c;
  char p[512], repo_path[512], target[512], buf[256];
  const char *tmp = getenv("TMPDIR");

  snprintf(root, sizeof root, "%s/mevb-capi-files-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(root)) {
    perror("mkdtemp");
    return 1;
  }
  path_of(p, sizeof p, "src");
  mkdir(p, 0755);
  path_of(p, sizeof p, "src/nginx");
  mkdir(p, 0755);
  put("src/app.conf", "port = 8080\n");
  put("src/nginx/nginx.conf", "worker_processes 1;\n");
  put("src/.env", "PASSWORD=hunter2\n");
  path_of(repo_path, sizeof repo_path, "repo");
  path_of(target, sizeof target, "out");

  CHECK(mevb_repo_open(&repo, repo_path, NULL) == MEVB_OK);

  /* Argument errors. */
  CHECK(mevb_repo_backup_files(repo, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_repo_backup_files(repo, &bo, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(mevb_error_last()->message, "paths") != NULL);
  path_of(p, sizeof p, "src");
  bo.base_dir = p;
  bo.paths = missing;
  bo.paths_count = 1;
  b = (mevb_backup *)&failures;
  CHECK(mevb_repo_backup_files(repo, &bo, &b) == MEVB_ERR_NOT_FOUND);
  CHECK(b == NULL);
  CHECK(strstr(mevb_error_last()->message, "nope.conf") != NULL);

  /* Backup: the secret stays out. */
  bo.paths = paths;
  bo.paths_count = 3;
  CHECK(mevb_repo_backup_files(repo, &bo, &b) == MEVB_OK);
  CHECK(b != NULL);
  if (b) {
    CHECK(strcmp(mevb_backup_kind(b), "files") == 0);
    CHECK(strncmp(mevb_backup_path(b), "config/config_", 14) == 0);
    CHECK(strstr(mevb_backup_manifest_json(b), "\".env\"") != NULL); /* listed as excluded */
    CHECK(strstr(mevb_backup_manifest_json(b), "hunter2") == NULL);
    mevb_backup_free(b);
  }

  /* Dry run writes nothing. */
  CHECK(mevb_files_restore_opts_init(&ro, sizeof ro) == MEVB_OK);
  CHECK(ro.struct_size == sizeof ro && ro.dry_run == 0);
  CHECK(mevb_repo_restore_files(repo, "latest", &ro) == MEVB_ERR_INVALID_ARGUMENT); /* no target */
  memset(&c, 0, sizeof c);
  ro.target = target;
  ro.dry_run = 1;
  ro.on_entry = on_entry;
  ro.on_entry_user = &c;
  CHECK(mevb_repo_restore_files(repo, "latest", &ro) == MEVB_OK);
  CHECK(c.create == 3); /* app.conf, nginx, nginx/nginx.conf */
  CHECK(access(target, F_OK) != 0);

  /* Restore, then a local edit is refused, then replaced with overwrite. */
  ro.dry_run = 0;
  memset(&c, 0, sizeof c);
  CHECK(mevb_repo_restore_files(repo, "latest", &ro) == MEVB_OK);
  CHECK(c.create == 3);
  CHECK(read_back("out/nginx/nginx.conf", buf, sizeof buf) && strcmp(buf, "worker_processes 1;\n") == 0);
  CHECK(!read_back("out/.env", buf, sizeof buf));
  put("out/app.conf", "edited\n");
  CHECK(mevb_repo_restore_files(repo, "latest", &ro) == MEVB_ERR_EXISTS);
  CHECK(strstr(mevb_error_last()->message, "app.conf") != NULL);
  CHECK(read_back("out/app.conf", buf, sizeof buf) && strcmp(buf, "edited\n") == 0);
  ro.overwrite = 1;
  memset(&c, 0, sizeof c);
  CHECK(mevb_repo_restore_files(repo, "latest", &ro) == MEVB_OK);
  CHECK(c.replace == 1 && c.unchanged == 2);
  CHECK(read_back("out/app.conf", buf, sizeof buf) && strcmp(buf, "port = 8080\n") == 0);
  CHECK(mevb_repo_restore_files(repo, "no_such_backup", &ro) == MEVB_ERR_NOT_FOUND);

  mevb_repo_free(repo);
  snprintf(p, sizeof p, "rm -rf '%s'", root);
  if (system(p) != 0) fprintf(stderr, "could not remove %s\n", root);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("capi files: all checks passed\n");
  return 0;
}
