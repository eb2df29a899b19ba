/* The services' sources and sinks of the C API, tested in C (C99, -pedantic): NULL and
 * bad arguments get MEVB_ERR_INVALID_ARGUMENT naming what was wrong, options structs honour
 * struct_size, and a files tar source into an extract sink round-trips a small tree. No
 * server is needed: the database and Redis endpoints are driven by tests/python. */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <mevbackup.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures = 0;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                              \
    }                                                                          \
  } while (0)
#define MSG_HAS(text) CHECK(strstr(mevb_error_last()->message, (text)) != NULL)

static char root[256];

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (!f) return;
  fputs(text, f);
  fclose(f);
}

static int file_equals(const char *path, const char *text) {
  char buf[256];
  size_t n;
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strcmp(buf, text) == 0;
}

static void test_null_arguments(void) {
  mevb_source *src = (mevb_source *)&src; /* set to NULL by a failing call */
  mevb_sink *sink = (mevb_sink *)&sink;
  mevb_pg_source_opts pso = MEVB_PG_SOURCE_OPTS_INIT;
  mevb_pg_sink_opts pko = MEVB_PG_SINK_OPTS_INIT;
  mevb_files_source_opts fso = MEVB_FILES_SOURCE_OPTS_INIT;
  mevb_extract_sink_opts eso = MEVB_EXTRACT_SINK_OPTS_INIT;
  mevb_redis_source_opts rso = MEVB_REDIS_SOURCE_OPTS_INIT;
  mevb_redis_offline_sink_opts roo = MEVB_REDIS_OFFLINE_SINK_OPTS_INIT;
  mevb_redis_live_sink_opts rlo = MEVB_REDIS_LIVE_SINK_OPTS_INIT;
  mevb_basebackup_source_opts bso;

  CHECK(mevb_source_new_pg_dump(NULL, &pso) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("out must not be NULL");
  CHECK(mevb_source_new_pg_dump(&src, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("opts must not be NULL");
  CHECK(src == NULL);
  CHECK(mevb_source_new_pg_dump(&src, &pso) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("mevb_pg_source_opts.conninfo must be set");
  CHECK(mevb_sink_new_pg_restore(&sink, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(sink == NULL);
  CHECK(mevb_sink_new_pg_restore(&sink, &pko) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("mevb_pg_sink_opts.conninfo must be set");
  pko.conninfo = "dbname=x";
  pko.jobs = 0;
  CHECK(mevb_sink_new_pg_restore(&sink, &pko) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("mevb_pg_sink_opts.jobs must be 1..64");

  CHECK(mevb_basebackup_source_opts_init(&bso, sizeof bso) == MEVB_OK);
  CHECK(bso.fast_checkpoint == 1 && bso.include_wal == 1 && bso.max_rate_kbps == 0 && bso.conninfo == NULL);
  CHECK(mevb_source_new_basebackup(&src, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_source_new_basebackup(&src, &bso) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("mevb_basebackup_source_opts.conninfo must be set");
  bso.conninfo = "host=127.0.0.1 port=1";
  bso.max_rate_kbps = 16;
  CHECK(mevb_source_new_basebackup(&src, &bso) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("max rate 16 kB/s is outside 32..1048576");
  bso.struct_size = 3;
  CHECK(mevb_source_new_basebackup(&src, &bso) == MEVB_ERR_INVALID_ARGUMENT);

  CHECK(mevb_source_new_files_tar(&src, &fso) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("mevb_files_source_opts.paths must name at least one path");
  CHECK(mevb_sink_new_extract(&sink, &eso) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("mevb_extract_sink_opts.target must be set");
  CHECK(mevb_source_new_redis_rdb(&src, &rso) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("mevb_redis_source_opts.url must be set");
  rso.url = "redis://127.0.0.1:1";
  rso.mode = "telepathy";
  CHECK(mevb_source_new_redis_rdb(&src, &rso) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("telepathy");
  CHECK(mevb_sink_new_redis_offline(&sink, &roo) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("mevb_redis_offline_sink_opts.data_dir must be set");
  CHECK(mevb_sink_new_redis_live(&sink, &rlo) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("mevb_redis_live_sink_opts.url must be set");
  CHECK(mevb_sink_new_redis_live(&sink, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(src == NULL && sink == NULL);

  CHECK(mevb_pg_source_opts_init(NULL, sizeof pso) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_extract_sink_opts_init(&eso, 2) == MEVB_ERR_INVALID_ARGUMENT);
}

static void test_struct_size(void) {
  /* An older caller's smaller struct keeps the defaults of the fields it lacks; a larger one
   * is refused when its unknown tail is not zero. */
  struct {
    mevb_redis_offline_sink_opts o;
    int future;
  } big;
  mevb_sink *sink = NULL;
  mevb_pg_sink_opts pko;
  char dir[300];
  CHECK(mevb_pg_sink_opts_init(&pko, sizeof pko) == MEVB_OK);
  CHECK(pko.struct_size == sizeof pko && pko.jobs == 1 && pko.conninfo == NULL);

  memset(&big, 0, sizeof big);
  CHECK(mevb_redis_offline_sink_opts_init(&big.o, sizeof big) == MEVB_OK);
  CHECK(big.o.struct_size == sizeof big.o);
  snprintf(dir, sizeof dir, "%s/redis", root);
  CHECK(mkdir(dir, 0700) == 0);
  big.o.data_dir = dir;
  big.o.struct_size = (uint32_t)sizeof big;
  big.future = 1;
  CHECK(mevb_sink_new_redis_offline(&sink, &big.o) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("mevb_redis_offline_sink_opts has fields this library version does not know");
  CHECK(sink == NULL);
  big.future = 0;
  big.o.rdb_name = "../escape.rdb";
  CHECK(mevb_sink_new_redis_offline(&sink, &big.o) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("bad RDB file name \"../escape.rdb\"");
  big.o.rdb_name = NULL;
  big.o.target_rdb_version = 12;
  CHECK(mevb_sink_new_redis_offline(&sink, &big.o) == MEVB_OK);
  CHECK(sink != NULL);
  mevb_sink_free(sink); /* uncommitted: leaves nothing in the data directory */
  {
    char probe[400];
    snprintf(probe, sizeof probe, "%s/dump.rdb", dir);
    CHECK(access(probe, F_OK) != 0);
    CHECK(rmdir(dir) == 0); /* empty: the temporary file went with the sink */
  }
}

static void test_files_round_trip(void) {
  char base[300], target[300], path[400];
  const char *paths[] = {"etc"};
  mevb_files_source_opts fso = MEVB_FILES_SOURCE_OPTS_INIT;
  mevb_extract_sink_opts eso = MEVB_EXTRACT_SINK_OPTS_INIT;
  mevb_source *src = NULL;
  mevb_sink *sink = NULL;
  snprintf(base, sizeof base, "%s/base", root);
  snprintf(target, sizeof target, "%s/target", root);
  CHECK(mkdir(base, 0700) == 0);
  snprintf(path, sizeof path, "%s/etc", base);
  CHECK(mkdir(path, 0700) == 0);
  snprintf(path, sizeof path, "%s/etc/app.conf", base);
  write_file(path, "port = 8080\n");

  fso.base_dir = base;
  fso.paths = paths;
  fso.paths_count = 1;
  CHECK(mevb_source_new_files_tar(&src, &fso) == MEVB_OK);
  eso.target = target;
  CHECK(mevb_sink_new_extract(&sink, &eso) == MEVB_OK);
  CHECK(mevb_pipeline_run(src, NULL, 0, sink, NULL) == MEVB_OK);
  snprintf(path, sizeof path, "%s/etc/app.conf", target);
  CHECK(file_equals(path, "port = 8080\n"));
  mevb_source_free(src);
  mevb_sink_free(sink);

  /* A path that does not exist is named when the source is created. */
  paths[0] = "nope";
  src = (mevb_source *)&src;
  CHECK(mevb_source_new_files_tar(&src, &fso) == MEVB_ERR_NOT_FOUND);
  MSG_HAS("nope");
  CHECK(src == NULL);
}

int main(void) {
  const char *tmp = getenv("TMPDIR");
  char cmd[300];
  snprintf(root, sizeof root, "%s/mevb-endpoints-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(root)) {
    perror("mkdtemp");
    return 2;
  }
  test_null_arguments();
  test_struct_size();
  test_files_round_trip();
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
  return failures ? 1 : 0;
}
