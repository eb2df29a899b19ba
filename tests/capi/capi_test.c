/* The C API tested in C (C99, -pedantic).
 *   mevb_capi_test                      checks that need no server
 *   mevb_capi_test REPO CONNINFO TARGET also a backup/list/restore round trip */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <mevbackup.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures = 0;
#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                           \
    }                                                                       \
  } while (0)

static int progress_calls = 0;
static int count_progress(const mevb_progress *p, void *user) {
  CHECK(p->struct_size >= sizeof(mevb_progress));
  CHECK(user == (void *)&progress_calls);
  progress_calls++;
  return 0;
}

static int cancel_at_once(const mevb_progress *p, void *user) {
  (void)p;
  (void)user;
  return 1;
}

static void no_server_checks(void) {
  mevb_repo *repo = NULL;
  mevb_backup_list *list = NULL;
  mevb_backup *b = (mevb_backup *)&failures; /* must be reset to NULL on failure */
  mevb_pg_backup_opts bo = MEVB_PG_BACKUP_OPTS_INIT;
  mevb_pg_backup_opts big[2];
  mevb_repo_opts ro;
  int rc;

  CHECK(strcmp(mevb_version(), "0.1.0") == 0);
  CHECK(mevb_version_number() == MEVB_VERSION_NUMBER);
  CHECK(strcmp(mevb_status_str(MEVB_OK), "ok") == 0);
  CHECK(strcmp(mevb_status_str(MEVB_ERR_NOT_FOUND), "not found") == 0);
  CHECK(strcmp(mevb_status_str(9999), "unknown status") == 0);
  CHECK(mevb_error_last() != NULL);

  /* NULL arguments are errors, not crashes. */
  CHECK(mevb_repo_open(NULL, "/tmp", NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_repo_open(&repo, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(repo == NULL);
  CHECK(strstr(mevb_error_last()->message, "location") != NULL);
  mevb_repo_free(NULL);
  mevb_backup_free(NULL);
  mevb_backup_list_free(NULL);

  CHECK(mevb_repo_open(&repo, "ftp://example/x", NULL) == MEVB_ERR_UNSUPPORTED);
  CHECK(mevb_error_last()->code == MEVB_ERR_UNSUPPORTED);
  CHECK(strstr(mevb_error_last()->message, "ftp") != NULL);

  /* The lock's timing is an option (the library reads no MEVBACKUP_LOCK_* variable). */
  CHECK(mevb_repo_opts_init(&ro, sizeof ro) == MEVB_OK);
  CHECK(ro.lock_ttl_seconds == 0 && ro.lock_refresh_seconds == 0 && ro.lock_wait_seconds == 0 && ro.no_lock == 0);
  CHECK(ro.s3_retry_base_ms == 0);
  ro.lock_ttl_seconds = -1;
  CHECK(mevb_repo_open(&repo, "/tmp/mevb-capi-lock", &ro) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(repo == NULL && strstr(mevb_error_last()->message, "mevb_repo_opts.lock_ttl_seconds") != NULL);
  ro.lock_ttl_seconds = 60;
  ro.lock_wait_seconds = 400000000;
  CHECK(mevb_repo_open(&repo, "/tmp/mevb-capi-lock", &ro) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(mevb_error_last()->message, "mevb_repo_opts.lock_wait_seconds") != NULL);
  ro.lock_wait_seconds = 0;
  CHECK(mevb_repo_open(&repo, "/tmp/mevb-capi-lock", &ro) == MEVB_OK);
  mevb_repo_free(repo);
  repo = NULL;

  /* Keys are options too: a recipient with a bad checksum, or a count without an array,
   * fails the open naming the field; nothing is opened. */
  {
    char secret[MEVB_AGE_SECRET_SIZE], recipient[MEVB_AGE_RECIPIENT_SIZE];
    const char *rs[1];
    CHECK(mevb_age_generate(secret, sizeof secret, recipient, sizeof recipient) == MEVB_OK);
    CHECK(mevb_repo_opts_init(&ro, sizeof ro) == MEVB_OK);
    CHECK(ro.recipients == NULL && ro.recipients_count == 0 && ro.identity_files_count == 0 &&
          ro.passphrase_file == NULL);
    ro.recipients_count = 1;
    CHECK(mevb_repo_open(&repo, "/tmp/mevb-capi-keys", &ro) == MEVB_ERR_INVALID_ARGUMENT);
    CHECK(repo == NULL && strstr(mevb_error_last()->message, "mevb_repo_opts.recipients") != NULL);
    recipient[strlen(recipient) - 1] = recipient[strlen(recipient) - 1] == 'q' ? 'p' : 'q';
    rs[0] = recipient;
    ro.recipients = rs;
    CHECK(mevb_repo_open(&repo, "/tmp/mevb-capi-keys", &ro) == MEVB_ERR_INVALID_ARGUMENT);
    CHECK(repo == NULL && strstr(mevb_error_last()->message, "recipients[0]") != NULL);
    ro.recipients_count = 0;
    ro.identity_files_count = 1;
    CHECK(mevb_repo_open(&repo, "/tmp/mevb-capi-keys", &ro) == MEVB_ERR_INVALID_ARGUMENT);
    CHECK(repo == NULL && strstr(mevb_error_last()->message, "mevb_repo_opts.identity_files") != NULL);
  }

  CHECK(mevb_repo_opts_init(&ro, sizeof ro) == MEVB_OK);
  CHECK(ro.struct_size == sizeof ro && ro.log == NULL);
  CHECK(mevb_repo_open(&repo, "/nonexistent/mevb-capi-test", &ro) == MEVB_OK);
  CHECK(mevb_error_last()->code == MEVB_OK);

  /* An empty (even missing) repository lists nothing; "latest" is not found. */
  CHECK(mevb_repo_list(repo, NULL, &list) == MEVB_OK);
  CHECK(mevb_backup_list_count(list) == 0);
  CHECK(mevb_backup_list_get(list, 0) == NULL);
  mevb_backup_list_free(list);
  CHECK(mevb_repo_find(repo, "latest", "postgres", NULL, &b) == MEVB_ERR_NOT_FOUND);
  CHECK(b == NULL);

  /* Options: missing conninfo, unknown compression, connection refused. */
  CHECK(mevb_repo_backup_postgres(repo, &bo, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(mevb_error_last()->message, "conninfo") != NULL);
  bo.conninfo = "host=127.0.0.1 port=1 dbname=x connect_timeout=3";
  bo.compression = "lz4";
  CHECK(mevb_repo_backup_postgres(repo, &bo, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(mevb_error_last()->message, "lz4") != NULL);
  bo.compression = NULL;
  rc = mevb_repo_backup_postgres(repo, &bo, NULL);
  CHECK(rc == MEVB_ERR_CONNECTION);
  CHECK(mevb_error_last()->retriable);
  CHECK(strstr(mevb_error_last()->message, "\"x\"") != NULL);
  bo.conninfo = "host=127.0.0.1 port=1 dbname=x password=hunter2 connect_timeout=3";
  CHECK(mevb_repo_backup_postgres(repo, &bo, NULL) == MEVB_ERR_CONNECTION);
  CHECK(strstr(mevb_error_last()->message, "hunter2") == NULL);
  bo.conninfo = "this is = not valid";
  CHECK(mevb_repo_backup_postgres(repo, &bo, NULL) == MEVB_ERR_INVALID_ARGUMENT);

  /* struct_size: a newer caller's larger struct with zero tail is fine; non-zero tail is not. */
  memset(big, 0, sizeof big);
  CHECK(mevb_pg_backup_opts_init(&big[0], sizeof big) == MEVB_OK);
  CHECK(big[0].struct_size == sizeof(mevb_pg_backup_opts));
  CHECK(big[0].level == -1);
  big[0].struct_size = (uint32_t)(sizeof(mevb_pg_backup_opts) + 8);
  big[0].conninfo = "host=127.0.0.1 port=1 dbname=x connect_timeout=3";
  CHECK(mevb_repo_backup_postgres(repo, &big[0], NULL) == MEVB_ERR_CONNECTION);
  ((unsigned char *)&big[1])[3] = 1;
  CHECK(mevb_repo_backup_postgres(repo, &big[0], NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(mevb_error_last()->message, "does not know") != NULL);
  big[0].struct_size = 2;
  CHECK(mevb_repo_backup_postgres(repo, &big[0], NULL) == MEVB_ERR_INVALID_ARGUMENT);

  /* Reports: an empty repository checks CRITICAL, prunes nothing, has no "latest" to verify. */
  {
    mevb_report *rep = NULL;
    mevb_check_opts co = MEVB_CHECK_OPTS_INIT;
    mevb_prune_opts po;
    CHECK(mevb_repo_check(repo, &co, &rep) == MEVB_OK);
    CHECK(mevb_report_status(rep) == 2);
    CHECK(strncmp(mevb_report_text(rep), "MEVBACKUP CRITICAL", 18) == 0);
    CHECK(strstr(mevb_report_json(rep), "\"CRITICAL\"") != NULL);
    mevb_report_free(rep);
    co.now = "not a time";
    CHECK(mevb_repo_check(repo, &co, &rep) == MEVB_ERR_INVALID_ARGUMENT);
    CHECK(rep == NULL);
    CHECK(mevb_prune_opts_init(&po, sizeof po) == MEVB_OK);
    CHECK(po.keep_last == 1 && po.incomplete_grace_seconds == 86400);
    CHECK(mevb_repo_prune(repo, &po, &rep) == MEVB_OK);
    CHECK(mevb_report_status(rep) == 0);
    mevb_report_free(rep);
    po.keep_last = 0;
    CHECK(mevb_repo_prune(repo, &po, &rep) == MEVB_ERR_INVALID_ARGUMENT);
    CHECK(mevb_repo_verify(repo, "latest", NULL, &rep) == MEVB_ERR_NOT_FOUND);
    mevb_report_free(NULL);
  }
  /* adopt: nothing to take over in an empty repository; the thresholds default to 0 (max-age). */
  {
    mevb_report *rep = NULL;
    mevb_adopt_opts ao;
    mevb_check_opts co;
    CHECK(mevb_check_opts_init(&co, sizeof co) == MEVB_OK);
    CHECK(co.warning_seconds == 0 && co.critical_seconds == 0 && co.future_skew_seconds == 300);
    CHECK(mevb_adopt_opts_init(&ao, sizeof ao) == MEVB_OK);
    CHECK(ao.dry_run == 0 && ao.pg_restore_path == NULL);
    ao.dry_run = 1;
    CHECK(mevb_repo_adopt(repo, &ao, &rep) == MEVB_OK);
    CHECK(mevb_report_status(rep) == 0);
    CHECK(strstr(mevb_report_json(rep), "\"adopted\": 0") != NULL);
    mevb_report_free(rep);
    CHECK(mevb_repo_adopt(repo, &ao, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  }
  mevb_repo_free(repo);
}

static void round_trip(const char *repo_path, const char *conninfo, const char *target) {
  mevb_repo *repo = NULL;
  mevb_backup *b = NULL, *found = NULL;
  mevb_backup_list *list = NULL;
  mevb_pg_backup_opts bo = MEVB_PG_BACKUP_OPTS_INIT;
  mevb_pg_restore_opts rs = MEVB_PG_RESTORE_OPTS_INIT;
  size_t n;

  CHECK(mevb_repo_open(&repo, repo_path, NULL) == MEVB_OK);
  bo.conninfo = conninfo;
  bo.progress = count_progress;
  bo.progress_user = &progress_calls;
  CHECK(mevb_repo_backup_postgres(repo, &bo, &b) == MEVB_OK);
  if (!b) {
    fprintf(stderr, "backup failed: %s\n", mevb_error_last()->message);
    failures++;
    return;
  }
  CHECK(progress_calls >= 1);
  CHECK(strcmp(mevb_backup_kind(b), "postgres") == 0);
  CHECK(strncmp(mevb_backup_path(b), "database/", 9) == 0);
  CHECK(strlen(mevb_backup_sha256(b)) == 64);
  CHECK(mevb_backup_size(b) > 0);
  CHECK(strstr(mevb_backup_manifest_json(b), "\"tables\"") != NULL);

  CHECK(mevb_repo_list(repo, "postgres", &list) == MEVB_OK);
  n = mevb_backup_list_count(list);
  CHECK(n >= 1);
  CHECK(strcmp(mevb_backup_id(mevb_backup_list_get(list, n - 1)), mevb_backup_id(b)) == 0);
  mevb_backup_list_free(list);
  CHECK(mevb_repo_find(repo, mevb_backup_id(b), "postgres", NULL, &found) == MEVB_OK);
  CHECK(found && strcmp(mevb_backup_sha256(found), mevb_backup_sha256(b)) == 0);
  mevb_backup_free(found);

  /* A progress callback that cancels: the backup fails as cancelled and adds nothing. */
  bo.progress = cancel_at_once;
  {
    mevb_backup *none = NULL;
    int rc = mevb_repo_backup_postgres(repo, &bo, &none);
    CHECK(rc == MEVB_ERR_CANCELLED || rc == MEVB_OK); /* a tiny dump may finish before the first report */
    if (rc == MEVB_OK) mevb_backup_free(none);
  }

  rs.conninfo = target;
  CHECK(mevb_repo_restore_postgres(repo, mevb_backup_id(b), &rs) == MEVB_OK);
  if (mevb_error_last()->code != MEVB_OK) fprintf(stderr, "restore failed: %s\n", mevb_error_last()->message);
  /* Restoring again into the now non-empty target needs clean. */
  CHECK(mevb_repo_restore_postgres(repo, mevb_backup_id(b), &rs) == MEVB_ERR_NOT_EMPTY);
  rs.clean = 1;
  CHECK(mevb_repo_restore_postgres(repo, mevb_backup_id(b), &rs) == MEVB_OK);
  mevb_backup_free(b);
  mevb_repo_free(repo);
}

/* Redis: options and refusals that need no server. */
static void redis_checks(void) {
  mevb_repo *repo = NULL;
  mevb_backup *b = (mevb_backup *)&failures;
  mevb_redis_backup_opts bo = MEVB_REDIS_BACKUP_OPTS_INIT;
  mevb_redis_restore_opts ro = MEVB_REDIS_RESTORE_OPTS_INIT;
  mevb_redis_backup_opts init;
  const char *argv_true[] = {"true"};

  CHECK(mevb_redis_backup_opts_init(&init, sizeof init) == MEVB_OK);
  CHECK(init.struct_size == sizeof init && init.level == -1 && init.url == NULL);
  CHECK(mevb_repo_open(&repo, "/nonexistent/mevb-capi-redis", NULL) == MEVB_OK);
  CHECK(mevb_repo_backup_redis(repo, &bo, &b) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(b == NULL);
  bo.url = "redis://:hunter2@127.0.0.1:1";
  CHECK(mevb_repo_backup_redis(repo, &bo, NULL) == MEVB_ERR_CONNECTION);
  CHECK(strstr(mevb_error_last()->message, "hunter2") == NULL);
  CHECK(mevb_error_last()->retriable);
  bo.mode = "rsync";
  CHECK(mevb_repo_backup_redis(repo, &bo, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_repo_restore_redis(repo, "latest", &ro) == MEVB_ERR_INVALID_ARGUMENT);
  ro.data_dir = "/tmp";
  ro.redis_url = "redis://127.0.0.1:1";
  CHECK(mevb_repo_restore_redis(repo, "latest", &ro) == MEVB_ERR_INVALID_ARGUMENT);
  ro.redis_url = NULL;
  ro.before = argv_true;
  ro.before_count = 1;
  CHECK(mevb_repo_restore_redis(repo, "latest", &ro) == MEVB_ERR_NOT_FOUND);
  mevb_repo_free(repo);
}

/* S3 repositories: options reach the storage; errors name what is wrong. */
static void s3_option_checks(void) {
  mevb_repo *repo = NULL;
  mevb_repo_opts ro = MEVB_REPO_OPTS_INIT;
  ro.access_key_id = "AKIDEXAMPLE";
  ro.secret_access_key = "capi-test-secret";
  ro.endpoint_url = "ftp://127.0.0.1:1";
  CHECK(mevb_repo_open(&repo, "s3://bucket/prefix", &ro) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(mevb_error_last()->message, "http") != NULL);
  CHECK(strstr(mevb_error_last()->message, "capi-test-secret") == NULL);
  ro.endpoint_url = "http://127.0.0.1:1";
  ro.part_size = 1024; /* below S3's 5 MiB minimum */
  CHECK(mevb_repo_open(&repo, "s3://bucket/prefix", &ro) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(mevb_error_last()->message, "part size") != NULL);
  ro.part_size = 0;
  ro.unsigned_payload = 1; /* refused without TLS */
  CHECK(mevb_repo_open(&repo, "s3://bucket/prefix", &ro) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(mevb_error_last()->message, "UNSIGNED-PAYLOAD") != NULL);
  ro.unsigned_payload = 0;
  ro.s3_retry_base_ms = 60001; /* the test backoff, an option (not MEVBACKUP_S3_RETRY_BASE_MS) */
  CHECK(mevb_repo_open(&repo, "s3://bucket/prefix", &ro) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(mevb_error_last()->message, "S3 retry base 60001 ms") != NULL);
  ro.s3_retry_base_ms = 5;
  CHECK(mevb_repo_open(&repo, "s3://", &ro) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_repo_open(&repo, "s3://bucket/prefix", &ro) == MEVB_OK);
  mevb_repo_free(repo);
}

/* Point-in-time recovery: options, argument checks, and the empty repository. */
static void pitr_checks(void) {
  mevb_repo *repo = NULL;
  mevb_basebackup_opts bo;
  mevb_pitr_restore_opts po = MEVB_PITR_RESTORE_OPTS_INIT;
  mevb_backup *b = NULL;
  mevb_report *rep = (mevb_report *)&failures; /* reset to NULL on failure */
  char repo_dir[] = "/tmp/mevb-capi-pitr-XXXXXX";
  char data_dir[512];
  CHECK(mevb_basebackup_opts_init(&bo, sizeof bo) == MEVB_OK);
  CHECK(bo.struct_size == sizeof bo && bo.level == -1 && bo.max_rate_kbps == 0);
  CHECK(mevb_pitr_restore_opts_init(&po, sizeof po) == MEVB_OK);
  CHECK(po.start == 0 && po.data_dir == NULL);
  if (!mkdtemp(repo_dir)) {
    CHECK(0);
    return;
  }
  CHECK(mevb_repo_open(&repo, repo_dir, NULL) == MEVB_OK);
  CHECK(mevb_repo_backup_basebackup(repo, NULL, &b) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_repo_backup_basebackup(repo, &bo, &b) == MEVB_ERR_INVALID_ARGUMENT); /* no conninfo */
  CHECK(b == NULL);
  bo.conninfo = "host=127.0.0.1 port=1 dbname=x connect_timeout=2";
  CHECK(mevb_repo_backup_basebackup(repo, &bo, &b) == MEVB_ERR_CONNECTION);
  CHECK(mevb_repo_restore_pitr(repo, &po, &rep) == MEVB_ERR_INVALID_ARGUMENT); /* no data_dir */
  CHECK(rep == NULL);
  snprintf(data_dir, sizeof data_dir, "%s/data", repo_dir);
  po.data_dir = data_dir;
  po.repo_url = repo_dir;
  po.target_time = "2026-11-27 07:00:00"; /* no zone */
  CHECK(mevb_repo_restore_pitr(repo, &po, &rep) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(strstr(mevb_error_last()->message, "zone") != NULL);
  po.target_time = "2026-11-27 07:00:00+00";
  CHECK(mevb_repo_restore_pitr(repo, &po, &rep) == MEVB_ERR_NOT_FOUND); /* no base backup */
  CHECK(strstr(mevb_error_last()->message, "base backup") != NULL);
  mevb_repo_free(repo);
  rmdir(repo_dir);
}

int main(int argc, char **argv) {
  no_server_checks();
  redis_checks();
  s3_option_checks();
  pitr_checks();
  if (argc == 4) round_trip(argv[1], argv[2], argv[3]);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("capi: all checks passed%s\n", argc == 4 ? " (with round trip)" : "");
  return 0;
}
