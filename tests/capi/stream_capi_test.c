/* The stream layer of the C API, tested in C (C99, -pedantic): sources, filters and
 * sinks round-trip bytes; every failing stage fails the run naming the stage and
 * commits nothing; bad arguments get MEVB_ERR_INVALID_ARGUMENT. */
#define _XOPEN_SOURCE 700
#include <dirent.h>
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

/* ---- the caller's bytes: a generated stream, and a sink collecting into memory ---- */

struct gen {
  size_t total, pos, max_read;
  int fail_at_pos; /* >= 0: the read at or after this position returns MEVB_ERR_IO */
  int lie;         /* non-zero: reports one byte more than the buffer holds */
  int closed;
};

static unsigned char byte_at(size_t i) { return (unsigned char)((i * 2654435761u) >> 13); }

static int gen_read(void *user, void *buf, size_t cap, size_t *got) {
  struct gen *g = (struct gen *)user;
  size_t n = g->total - g->pos, i;
  if (g->fail_at_pos >= 0 && g->pos >= (size_t)g->fail_at_pos) return MEVB_ERR_IO;
  if (g->lie) {
    *got = cap + 1;
    return 0;
  }
  if (n > cap) n = cap;
  if (n > g->max_read) n = g->max_read;
  for (i = 0; i < n; ++i) ((unsigned char *)buf)[i] = byte_at(g->pos + i);
  g->pos += n;
  *got = n;
  return 0;
}
static void gen_close(void *user) { ((struct gen *)user)->closed++; }
static void gen_init(struct gen *g, size_t total) {
  memset(g, 0, sizeof *g);
  g->total = total;
  g->max_read = (size_t)-1;
  g->fail_at_pos = -1;
}

struct mem {
  unsigned char *data;
  size_t size, cap;
  int fail_write, fail_commit;
  int commits, aborts;
};

static int mem_write(void *user, const void *data, size_t size) {
  struct mem *m = (struct mem *)user;
  if (m->fail_write) return MEVB_ERR_NO_SPACE;
  if (m->size + size > m->cap) {
    size_t cap = (m->size + size) * 2;
    unsigned char *p = (unsigned char *)realloc(m->data, cap);
    if (!p) return MEVB_ERR_NOMEM;
    m->data = p;
    m->cap = cap;
  }
  memcpy(m->data + m->size, data, size);
  m->size += size;
  return 0;
}
static int mem_commit(void *user) {
  struct mem *m = (struct mem *)user;
  if (m->fail_commit) return MEVB_ERR_IO;
  m->commits++;
  return 0;
}
static void mem_abort(void *user) { ((struct mem *)user)->aborts++; }

static int matches_gen(const struct mem *m, size_t total) {
  size_t i;
  if (m->size != total) return 0;
  for (i = 0; i < total; ++i)
    if (m->data[i] != byte_at(i)) return 0;
  return 1;
}

static void path_of(char *out, size_t n, const char *rel) { snprintf(out, n, "%s/%s", root, rel); }

/* Entries of the test directory whose name holds `part` (temporary files are ".x.tmp-..."). */
static int dir_entries_with(const char *part) {
  DIR *d = opendir(root);
  struct dirent *e;
  int n = 0;
  if (!d) return -1;
  while ((e = readdir(d)) != NULL)
    if (strstr(e->d_name, part)) n++;
  closedir(d);
  return n;
}

static int file_text_is(const char *path, const char *text) {
  char buf[256];
  size_t got;
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  got = fread(buf, 1, sizeof buf - 1, f);
  buf[got] = 0;
  fclose(f);
  return strcmp(buf, text) == 0;
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (!f) return;
  fputs(text, f);
  fclose(f);
}

/* ---- round trips ---------------------------------------------------------------- */

static void test_roundtrip(int compression, size_t total, size_t max_read) {
  char path[512];
  struct gen g;
  struct mem m;
  mevb_source *src = NULL;
  mevb_sink *sink = NULL;
  mevb_filter *f[3] = {NULL, NULL, NULL};
  mevb_filter *back[2] = {NULL, NULL};
  char sha_in[65];
  uint64_t n_in;

  snprintf(path, sizeof path, "%s/roundtrip-%d-%lu", root, compression, (unsigned long)max_read);
  gen_init(&g, total);
  g.max_read = max_read;
  memset(&m, 0, sizeof m);
  CHECK(mevb_source_new_callbacks(&src, gen_read, gen_close, &g) == MEVB_OK);
  CHECK(mevb_filter_new_observer(&f[0]) == MEVB_OK);
  CHECK(mevb_filter_new_compressor(&f[1], compression, -1) == MEVB_OK);
  CHECK(mevb_filter_new_observer(&f[2]) == MEVB_OK);
  CHECK(mevb_sink_new_path(&sink, path, 0) == MEVB_OK);
  CHECK(access(path, F_OK) != 0); /* nothing under the name before the commit */
  CHECK(mevb_pipeline_run(src, f, 3, sink, NULL) == MEVB_OK);
  CHECK(access(path, F_OK) == 0);
  CHECK(mevb_filter_observed_bytes(f[0]) == total);
  CHECK(strlen(mevb_filter_observed_sha256(f[0])) == 64);
  {
    struct stat st;
    CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == mevb_filter_observed_bytes(f[2]));
    if (compression != MEVB_COMPRESSION_NONE) CHECK((uint64_t)st.st_size != total || total == 0);
  }
  strcpy(sha_in, mevb_filter_observed_sha256(f[0]));
  n_in = mevb_filter_observed_bytes(f[0]);
  mevb_source_free(src);
  CHECK(g.closed == 1);
  mevb_sink_free(sink);
  mevb_filter_free(f[0]);
  mevb_filter_free(f[1]);
  mevb_filter_free(f[2]);

  src = NULL;
  sink = NULL;
  CHECK(mevb_source_new_path(&src, path) == MEVB_OK);
  CHECK(mevb_filter_new_decompressor(&back[0], compression) == MEVB_OK);
  CHECK(mevb_filter_new_observer(&back[1]) == MEVB_OK);
  CHECK(mevb_sink_new_callbacks(&sink, mem_write, mem_commit, mem_abort, &m) == MEVB_OK);
  CHECK(mevb_pipeline_run(src, back, 2, sink, NULL) == MEVB_OK);
  CHECK(m.commits == 1 && m.aborts == 0);
  CHECK(matches_gen(&m, total));
  CHECK(mevb_filter_observed_bytes(back[1]) == n_in);
  CHECK(strcmp(mevb_filter_observed_sha256(back[1]), sha_in) == 0);
  mevb_source_free(src);
  mevb_sink_free(sink);
  CHECK(m.aborts == 0); /* a committed sink is not aborted by its free */
  mevb_filter_free(back[0]);
  mevb_filter_free(back[1]);
  free(m.data);
  unlink(path);
}

static void test_file_sink_never_replaces(void) {
  char path[512];
  struct gen g;
  mevb_source *src = NULL;
  mevb_sink *sink = NULL;
  path_of(path, sizeof path, "existing");
  write_text(path, "keep me");
  gen_init(&g, 1000);
  CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
  CHECK(mevb_sink_new_path(&sink, path, 0) == MEVB_OK);
  CHECK(mevb_pipeline_run(src, NULL, 0, sink, NULL) == MEVB_ERR_EXISTS);
  MSG_HAS("sink (file ");
  MSG_HAS("not overwritten");
  CHECK(file_text_is(path, "keep me"));
  CHECK(dir_entries_with(".tmp-") == 0);
  mevb_source_free(src);
  mevb_sink_free(sink);

  /* replace = 1: replaced, atomically */
  gen_init(&g, 5);
  CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
  CHECK(mevb_sink_new_path(&sink, path, 1) == MEVB_OK);
  CHECK(mevb_pipeline_run(src, NULL, 0, sink, NULL) == MEVB_OK);
  {
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size == 5);
  }
  CHECK(dir_entries_with(".tmp-") == 0);
  mevb_source_free(src);
  mevb_sink_free(sink);
  unlink(path);
}

/* ---- failing stages -------------------------------------------------------------- */

static void test_failing_read_callback(void) {
  char path[512];
  struct gen g;
  mevb_source *src = NULL;
  mevb_sink *sink = NULL;
  mevb_filter *z = NULL;
  path_of(path, sizeof path, "never-there");
  gen_init(&g, 10u << 20);
  g.fail_at_pos = 1 << 20;
  CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
  CHECK(mevb_filter_new_compressor(&z, MEVB_COMPRESSION_ZSTD, 1) == MEVB_OK);
  CHECK(mevb_sink_new_path(&sink, path, 0) == MEVB_OK);
  CHECK(mevb_pipeline_run(src, &z, 1, sink, NULL) == MEVB_ERR_IO);
  MSG_HAS("pipeline: source (callbacks): the read callback returned status 4");
  CHECK(access(path, F_OK) != 0);
  CHECK(dir_entries_with(".tmp-") == 0);
  mevb_source_free(src);
  mevb_filter_free(z);
  mevb_sink_free(sink);
}

static void test_read_callback_overstating(void) {
  struct gen g;
  struct mem m;
  mevb_source *src = NULL;
  mevb_sink *sink = NULL;
  gen_init(&g, 100);
  g.lie = 1;
  memset(&m, 0, sizeof m);
  CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
  CHECK(mevb_sink_new_callbacks(&sink, mem_write, mem_commit, mem_abort, &m) == MEVB_OK);
  CHECK(mevb_pipeline_run(src, NULL, 0, sink, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("source (callbacks): the read callback reported");
  CHECK(m.commits == 0 && m.aborts == 1);
  mevb_source_free(src);
  mevb_sink_free(sink);
  CHECK(m.aborts == 1); /* aborted once, not again by the free */
  free(m.data);
}

static void test_failing_write_and_commit(void) {
  int which;
  for (which = 0; which < 2; ++which) {
    struct gen g;
    struct mem m;
    mevb_source *src = NULL;
    mevb_sink *sink = NULL;
    gen_init(&g, 3u << 20);
    memset(&m, 0, sizeof m);
    if (which == 0) m.fail_write = 1;
    else m.fail_commit = 1;
    CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
    CHECK(mevb_sink_new_callbacks(&sink, mem_write, mem_commit, mem_abort, &m) == MEVB_OK);
    if (which == 0) {
      CHECK(mevb_pipeline_run(src, NULL, 0, sink, NULL) == MEVB_ERR_NO_SPACE);
      MSG_HAS("sink (callbacks): the write callback returned status 15");
    } else {
      CHECK(mevb_pipeline_run(src, NULL, 0, sink, NULL) == MEVB_ERR_IO);
      MSG_HAS("sink (callbacks): commit failed: the commit callback returned status 4");
      CHECK(m.size == 3u << 20);
    }
    CHECK(m.commits == 0 && m.aborts == 1);
    mevb_source_free(src);
    mevb_sink_free(sink);
    free(m.data);
  }
}

/* Cancels at its 20th call (it runs on the caller's thread, between chunks). */
static int cancel_after(void *user) {
  int *polls = (int *)user;
  return ++*polls >= 20;
}

static int progress_stops(const mevb_progress *p, void *user) {
  (void)user;
  return p->bytes_out > (4u << 20);
}

static void test_cancel_endless_source(void) {
  int how;
  for (how = 0; how < 2; ++how) {
    char path[512];
    struct gen g;
    mevb_source *src = NULL;
    mevb_sink *sink = NULL;
    mevb_run_opts o = MEVB_RUN_OPTS_INIT;
    int polls = 0;
    path_of(path, sizeof path, "endless");
    gen_init(&g, (size_t)-1); /* never ends */
    if (how == 0) {
      o.cancel = cancel_after;
      o.cancel_user = &polls;
    } else {
      o.progress = progress_stops;
    }
    o.stage = "endless";
    CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
    CHECK(mevb_sink_new_path(&sink, path, 0) == MEVB_OK);
    CHECK(mevb_pipeline_run(src, NULL, 0, sink, &o) == MEVB_ERR_CANCELLED);
    MSG_HAS("endless: cancelled");
    if (how == 0) {
      MSG_HAS("cancel callback");
      CHECK(polls == 20);
    }
    CHECK(access(path, F_OK) != 0);
    CHECK(dir_entries_with(".tmp-") == 0);
    mevb_source_free(src);
    mevb_sink_free(sink);
  }
}

static void test_wrong_magic(void) {
  char path[512];
  struct gen g;
  struct mem m;
  mevb_source *src = NULL;
  mevb_sink *sink = NULL;
  mevb_filter *f = NULL;
  path_of(path, sizeof path, "gzipped");
  gen_init(&g, 100000);
  CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
  CHECK(mevb_filter_new_compressor(&f, MEVB_COMPRESSION_GZIP, 6) == MEVB_OK);
  CHECK(mevb_sink_new_path(&sink, path, 0) == MEVB_OK);
  CHECK(mevb_pipeline_run(src, &f, 1, sink, NULL) == MEVB_OK);
  mevb_source_free(src);
  mevb_filter_free(f);
  mevb_sink_free(sink);

  memset(&m, 0, sizeof m);
  CHECK(mevb_source_new_path(&src, path) == MEVB_OK);
  CHECK(mevb_filter_new_decompressor(&f, MEVB_COMPRESSION_ZSTD) == MEVB_OK);
  CHECK(mevb_sink_new_callbacks(&sink, mem_write, mem_commit, mem_abort, &m) == MEVB_OK);
  CHECK(mevb_pipeline_run(src, &f, 1, sink, NULL) == MEVB_ERR_CORRUPT);
  MSG_HAS("filter 0 (zstd decompressor): ");
  CHECK(m.commits == 0 && m.aborts == 1);
  mevb_source_free(src);
  mevb_filter_free(f);
  mevb_sink_free(sink);
  free(m.data);
  unlink(path);
}

/* ---- bad arguments ---------------------------------------------------------------- */

static void test_bad_arguments(void) {
  struct gen g;
  struct mem m;
  mevb_source *src = (mevb_source *)&g; /* must be set to NULL on failure */
  mevb_sink *sink = NULL;
  mevb_filter *f = (mevb_filter *)&g;
  mevb_filter *twice[2];
  mevb_run_opts o = MEVB_RUN_OPTS_INIT;
  unsigned char big[sizeof(mevb_run_opts) + 8];
  gen_init(&g, 10);
  memset(&m, 0, sizeof m);

  CHECK(mevb_source_new_callbacks(NULL, gen_read, NULL, &g) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_source_new_callbacks(&src, NULL, NULL, &g) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(src == NULL);
  MSG_HAS("read must not be NULL");
  CHECK(mevb_source_new_path(&src, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_source_new_path(&src, "/nonexistent/mevb/file") == MEVB_ERR_NOT_FOUND);
  MSG_HAS("/nonexistent/mevb/file");
  CHECK(mevb_source_new_fd(&src, -1, 0) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_sink_new_callbacks(&sink, NULL, mem_commit, NULL, &m) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_sink_new_callbacks(&sink, mem_write, NULL, NULL, &m) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_sink_new_path(&sink, NULL, 0) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_sink_new_path(&sink, "/nonexistent/mevb/dir/file", 0) == MEVB_ERR_NOT_FOUND);
  CHECK(sink == NULL);
  CHECK(mevb_filter_new_compressor(&f, 7, -1) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(f == NULL);
  MSG_HAS("compression 7");
  CHECK(mevb_filter_new_compressor(&f, MEVB_COMPRESSION_ZSTD, 99) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_filter_new_decompressor(&f, -1) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_filter_new_observer(NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_filter_observed_bytes(NULL) == 0);
  CHECK(mevb_filter_observed_sha256(NULL) == NULL);
  mevb_source_free(NULL);
  mevb_sink_free(NULL);
  mevb_filter_free(NULL);

  CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
  CHECK(mevb_sink_new_callbacks(&sink, mem_write, mem_commit, mem_abort, &m) == MEVB_OK);
  CHECK(mevb_filter_new_observer(&f) == MEVB_OK);
  CHECK(mevb_pipeline_run(NULL, NULL, 0, sink, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_pipeline_run(src, NULL, 0, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_pipeline_run(src, NULL, 1, sink, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  twice[0] = NULL;
  CHECK(mevb_pipeline_run(src, twice, 1, sink, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("filters[0] is NULL");
  twice[0] = twice[1] = f;
  CHECK(mevb_pipeline_run(src, twice, 2, sink, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("appears twice");
  o.struct_size = 2;
  CHECK(mevb_pipeline_run(src, NULL, 0, sink, &o) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("struct_size");
  memset(big, 0, sizeof big);
  o.struct_size = (uint32_t)sizeof big;
  memcpy(big, &o, sizeof o);
  big[sizeof big - 1] = 1;
  CHECK(mevb_pipeline_run(src, NULL, 0, sink, (const mevb_run_opts *)(const void *)big) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("fields this library version does not know");
  CHECK(mevb_run_opts_init(NULL, sizeof o) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_run_opts_init(&o, sizeof o) == MEVB_OK && o.struct_size == sizeof o);
  /* None of those rejected calls consumed anything: the run still works. */
  CHECK(m.aborts == 0);
  CHECK(mevb_pipeline_run(src, &f, 1, sink, &o) == MEVB_OK);
  CHECK(m.commits == 1 && matches_gen(&m, 10));
  CHECK(mevb_filter_observed_bytes(f) == 10);

  /* Consumed handles cannot run again. */
  CHECK(mevb_pipeline_run(src, NULL, 0, sink, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("already used by a run");
  mevb_source_free(src);
  CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
  CHECK(mevb_pipeline_run(src, NULL, 0, sink, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("sink (callbacks) was already used");
  mevb_sink_free(sink);
  CHECK(mevb_sink_new_callbacks(&sink, mem_write, mem_commit, mem_abort, &m) == MEVB_OK);
  CHECK(mevb_pipeline_run(src, &f, 1, sink, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("filters[0] (observer) was already used");
  mevb_source_free(src);
  mevb_sink_free(sink);
  mevb_filter_free(f);
  free(m.data);
}

/* ---- storage ---------------------------------------------------------------------- */

static void test_storage_local(void) {
  char url[512];
  struct gen g;
  struct mem m;
  mevb_storage *st = NULL;
  mevb_source *src = NULL;
  mevb_sink *sink = NULL;
  mevb_object_list *list = NULL;
  mevb_object_info info = MEVB_OBJECT_INFO_INIT;
  path_of(url, sizeof url, "store");

  CHECK(mevb_storage_open(NULL, url, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_storage_open(&st, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_storage_open(&st, "ftp://host/x", NULL) != MEVB_OK);
  CHECK(st == NULL);
  CHECK(mevb_storage_open(&st, url, NULL) == MEVB_OK);

  gen_init(&g, 200000);
  CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
  CHECK(mevb_storage_put(st, "a/b.bin", &sink) == MEVB_OK);
  CHECK(mevb_storage_stat(st, "a/b.bin", &info) == MEVB_ERR_NOT_FOUND); /* not before the commit */
  CHECK(mevb_pipeline_run(src, NULL, 0, sink, NULL) == MEVB_OK);
  mevb_source_free(src);
  mevb_sink_free(sink);
  CHECK(mevb_storage_stat(st, "a/b.bin", &info) == MEVB_OK);
  CHECK(info.size == 200000 && info.mtime > 1600000000);

  /* never over an existing key */
  gen_init(&g, 10);
  CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
  CHECK(mevb_storage_put(st, "a/b.bin", &sink) == MEVB_OK);
  CHECK(mevb_pipeline_run(src, NULL, 0, sink, NULL) == MEVB_ERR_EXISTS);
  MSG_HAS("a/b.bin");
  mevb_source_free(src);
  mevb_sink_free(sink);
  CHECK(mevb_storage_stat(st, "a/b.bin", &info) == MEVB_OK && info.size == 200000);

  CHECK(mevb_storage_list(st, "a/", &list) == MEVB_OK);
  CHECK(mevb_object_list_count(list) == 1);
  CHECK(strcmp(mevb_object_list_key(list, 0), "a/b.bin") == 0);
  CHECK(mevb_object_list_size(list, 0) == 200000);
  CHECK(mevb_object_list_mtime(list, 0) == info.mtime);
  CHECK(mevb_object_list_key(list, 1) == NULL);
  mevb_object_list_free(list);

  /* get gives the bytes back; the storage may go before its source */
  memset(&m, 0, sizeof m);
  CHECK(mevb_storage_get(st, "a/b.bin", &src) == MEVB_OK);
  CHECK(mevb_sink_new_callbacks(&sink, mem_write, mem_commit, mem_abort, &m) == MEVB_OK);
  mevb_storage_free(st);
  st = NULL;
  CHECK(mevb_pipeline_run(src, NULL, 0, sink, NULL) == MEVB_OK);
  CHECK(matches_gen(&m, 200000));
  mevb_source_free(src);
  mevb_sink_free(sink);
  free(m.data);

  CHECK(mevb_storage_open(&st, url, NULL) == MEVB_OK);
  src = (mevb_source *)&g;
  CHECK(mevb_storage_get(st, "a/missing", &src) == MEVB_ERR_NOT_FOUND);
  CHECK(src == NULL);
  MSG_HAS("a/missing");
  CHECK(mevb_storage_get(st, "../outside", &src) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_storage_put(st, "a//b", &sink) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_storage_put(NULL, "a", &sink) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_storage_put(st, NULL, &sink) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_storage_stat(st, "a/b.bin", NULL) == MEVB_ERR_INVALID_ARGUMENT);
  info.struct_size = 0;
  CHECK(mevb_storage_stat(st, "a/b.bin", &info) == MEVB_ERR_INVALID_ARGUMENT);
  info.struct_size = sizeof info;
  CHECK(mevb_storage_list(st, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_object_list_count(NULL) == 0 && mevb_object_list_key(NULL, 0) == NULL);
  CHECK(mevb_storage_remove(st, "a/b.bin") == MEVB_OK);
  CHECK(mevb_storage_remove(st, "a/b.bin") == MEVB_OK); /* a missing key is not an error */
  CHECK(mevb_storage_stat(st, "a/b.bin", &info) == MEVB_ERR_NOT_FOUND);
  mevb_storage_free(st);
  mevb_storage_free(NULL);
  mevb_object_list_free(NULL);
}

/* ---- artifacts of the user's own kind --------------------------------------------- */

static void test_artifact_user_kind(void) {
  char url[512], artifact[600];
  struct gen g;
  struct mem m;
  mevb_repo *repo = NULL;
  mevb_source *src = NULL;
  mevb_sink *sink = NULL;
  mevb_backup *b = NULL;
  mevb_backup_list *list = NULL;
  mevb_artifact_opts ao = MEVB_ARTIFACT_OPTS_INIT;
  const char *bad_kinds[] = {"", "Export", "9lives", "database", "config", "wal", "locks", "basebackup", "a/b",
                             "ex port", NULL};
  size_t i;
  path_of(url, sizeof url, "repo");
  CHECK(mevb_repo_open(&repo, url, NULL) == MEVB_OK);

  ao.kind = "export";
  ao.name_prefix = "service";
  ao.compression = MEVB_COMPRESSION_ZSTD;
  ao.format = "json";
  ao.extension = ".json";
  gen_init(&g, 300000);
  CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
  CHECK(mevb_repo_put_artifact(repo, src, &ao, NULL, &b) == MEVB_OK);
  CHECK(b != NULL);
  if (!b) return;
  CHECK(strcmp(mevb_backup_kind(b), "export") == 0);
  CHECK(strncmp(mevb_backup_path(b), "export/service_", 15) == 0);
  CHECK(strstr(mevb_backup_path(b), ".json.zst") != NULL);
  CHECK(strcmp(mevb_backup_compression(b), "zstd") == 0);
  CHECK(strcmp(mevb_backup_source_name(b), "service") == 0);
  CHECK(strstr(mevb_backup_manifest_json(b), "\"payload_size\": 300000") != NULL);
  /* the source is consumed */
  CHECK(mevb_repo_put_artifact(repo, src, &ao, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  mevb_source_free(src);

  CHECK(mevb_repo_list(repo, "export", &list) == MEVB_OK);
  CHECK(mevb_backup_list_count(list) == 1);
  mevb_backup_list_free(list);

  memset(&m, 0, sizeof m);
  CHECK(mevb_sink_new_callbacks(&sink, mem_write, mem_commit, mem_abort, &m) == MEVB_OK);
  CHECK(mevb_repo_get_artifact(repo, b, sink, NULL) == MEVB_OK);
  CHECK(m.commits == 1 && matches_gen(&m, 300000));
  CHECK(mevb_repo_get_artifact(repo, b, sink, NULL) == MEVB_ERR_INVALID_ARGUMENT); /* consumed */
  mevb_sink_free(sink);
  free(m.data);

  /* A stored byte changed (same size): the sink is never committed. */
  snprintf(artifact, sizeof artifact, "%s/%s", url, mevb_backup_path(b));
  {
    FILE *f = fopen(artifact, "r+b");
    int c;
    CHECK(f != NULL);
    if (f) {
      fseek(f, 100, SEEK_SET);
      c = fgetc(f);
      fseek(f, 100, SEEK_SET);
      fputc(c ^ 0x01, f);
      fclose(f);
    }
  }
  memset(&m, 0, sizeof m);
  CHECK(mevb_sink_new_callbacks(&sink, mem_write, mem_commit, mem_abort, &m) == MEVB_OK);
  CHECK(mevb_repo_get_artifact(repo, b, sink, NULL) == MEVB_ERR_CORRUPT);
  MSG_HAS("restore: ");
  CHECK(m.commits == 0 && m.aborts == 1);
  mevb_sink_free(sink);
  free(m.data);

  for (i = 0; bad_kinds[i]; ++i) {
    ao.kind = bad_kinds[i];
    gen_init(&g, 10);
    CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
    CHECK(mevb_repo_put_artifact(repo, src, &ao, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
    MSG_HAS("kind");
    mevb_source_free(src);
  }
  ao.kind = "export";
  ao.extension = "/../x";
  CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
  CHECK(mevb_repo_put_artifact(repo, src, &ao, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("extension");
  ao.extension = ".json";
  ao.compression = 9;
  CHECK(mevb_repo_put_artifact(repo, src, &ao, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  ao.compression = MEVB_COMPRESSION_GZIP;
  ao.name_prefix = NULL;
  CHECK(mevb_repo_put_artifact(repo, src, &ao, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  ao.name_prefix = "service";
  ao.struct_size = 1;
  CHECK(mevb_repo_put_artifact(repo, src, &ao, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  ao.struct_size = sizeof ao;
  CHECK(mevb_repo_put_artifact(NULL, src, &ao, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_repo_put_artifact(repo, NULL, &ao, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_repo_put_artifact(repo, src, NULL, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_repo_get_artifact(repo, NULL, NULL, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  /* none of the rejected calls consumed the source */
  CHECK(mevb_repo_put_artifact(repo, src, &ao, NULL, NULL) == MEVB_OK);
  mevb_source_free(src);
  CHECK(mevb_repo_list(repo, "export", &list) == MEVB_OK);
  CHECK(mevb_backup_list_count(list) == 2);
  mevb_backup_list_free(list);
  CHECK(mevb_artifact_opts_init(&ao, sizeof ao) == MEVB_OK && ao.compression == MEVB_COMPRESSION_GZIP && ao.level == -1);
  mevb_backup_free(b);
  mevb_repo_free(repo);
}

/* ---- handles used after free, freed twice, or of another type ------------------------ *
 * Run under ASan in CI: without the library's registry of live handles, each of these
 * reads freed memory. */

#define STALE(call)                                    \
  do {                                                 \
    CHECK((call) == MEVB_ERR_INVALID_ARGUMENT);        \
    MSG_HAS("not a live handle");                      \
  } while (0)

static void test_stale_handles(void) {
  char url[512];
  struct gen g;
  struct mem m;
  mevb_source *src = NULL, *src2 = NULL;
  mevb_sink *sink = NULL, *sink2 = NULL;
  mevb_filter *f = NULL, *live_f = NULL;
  mevb_storage *st = NULL;
  mevb_object_list *ol = NULL;
  mevb_repo *repo = NULL;
  mevb_backup *b = NULL;
  mevb_backup_list *list = NULL;
  const mevb_backup *item = NULL;
  mevb_report *rep = NULL;
  mevb_retention_result *rr = NULL;
  mevb_retention_opts ro = MEVB_RETENTION_OPTS_INIT;
  mevb_artifact_opts ao = MEVB_ARTIFACT_OPTS_INIT;
  mevb_object_info info = MEVB_OBJECT_INFO_INIT;
  gen_init(&g, 1000);
  memset(&m, 0, sizeof m);

  /* stream handles */
  CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
  CHECK(mevb_sink_new_callbacks(&sink, mem_write, mem_commit, mem_abort, &m) == MEVB_OK);
  CHECK(mevb_filter_new_observer(&f) == MEVB_OK);
  CHECK(mevb_source_new_callbacks(&src2, gen_read, NULL, &g) == MEVB_OK);
  CHECK(mevb_filter_new_observer(&live_f) == MEVB_OK);
  mevb_source_free(src);
  mevb_filter_free(f);
  mevb_source_free(src); /* twice: nothing happens */
  mevb_filter_free(f);
  CHECK(mevb_filter_observed_bytes(f) == 0 && mevb_filter_observed_sha256(f) == NULL);
  STALE(mevb_pipeline_run(src, NULL, 0, sink, NULL));
  CHECK(mevb_pipeline_run(src2, &f, 1, sink, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("filters[0] is not a live filter handle");
  /* a handle of another type */
  STALE(mevb_pipeline_run((mevb_source *)(void *)sink, NULL, 0, sink, NULL));
  STALE(mevb_pipeline_run(src2, NULL, 0, (mevb_sink *)(void *)live_f, NULL));
  /* sink2 first: a handle made after the free could take the freed one's address */
  CHECK(mevb_sink_new_callbacks(&sink2, mem_write, mem_commit, mem_abort, &m) == MEVB_OK);
  mevb_sink_free(sink);
  mevb_sink_free(sink);
  CHECK(m.aborts == 1 && m.commits == 0); /* the first free aborted it, the second did nothing */
  STALE(mevb_pipeline_run(src2, NULL, 0, sink, NULL));
  /* the rejected calls consumed nothing */
  CHECK(mevb_pipeline_run(src2, &live_f, 1, sink2, NULL) == MEVB_OK);
  CHECK(m.commits == 1 && mevb_filter_observed_bytes(live_f) == 1000);
  mevb_source_free(src2);
  mevb_sink_free(sink2);
  mevb_filter_free(live_f);
  free(m.data);

  /* storage and object lists */
  path_of(url, sizeof url, "stale-storage");
  CHECK(mevb_storage_open(&st, url, NULL) == MEVB_OK);
  CHECK(mevb_storage_list(st, NULL, &ol) == MEVB_OK);
  mevb_object_list_free(ol);
  CHECK(mevb_object_list_count(ol) == 0 && mevb_object_list_key(ol, 0) == NULL);
  CHECK(mevb_object_list_size(ol, 0) == 0 && mevb_object_list_mtime(ol, 0) == 0);
  mevb_object_list_free(ol);
  mevb_storage_free(st);
  STALE(mevb_storage_put(st, "k", &sink));
  CHECK(sink == NULL);
  STALE(mevb_storage_get(st, "k", &src));
  STALE(mevb_storage_stat(st, "k", &info));
  STALE(mevb_storage_remove(st, "k"));
  STALE(mevb_storage_list(st, NULL, &ol));
  mevb_storage_free(st);

  /* repositories, backups, lists, reports */
  path_of(url, sizeof url, "stale-repo");
  CHECK(mevb_repo_open(&repo, url, NULL) == MEVB_OK);
  gen_init(&g, 1000);
  ao.kind = "export";
  ao.name_prefix = "stale";
  CHECK(mevb_source_new_callbacks(&src, gen_read, NULL, &g) == MEVB_OK);
  CHECK(mevb_repo_put_artifact(repo, src, &ao, NULL, &b) == MEVB_OK);
  mevb_source_free(src);
  CHECK(mevb_repo_list(repo, NULL, &list) == MEVB_OK);
  CHECK(mevb_backup_list_count(list) == 1);
  item = mevb_backup_list_get(list, 0);
  CHECK(item != NULL && strcmp(mevb_backup_id(item), mevb_backup_id(b)) == 0);
  mevb_backup_free((mevb_backup *)item); /* the list's: not freed alone */
  CHECK(mevb_backup_list_count(list) == 1 && mevb_backup_id(item) != NULL);
  mevb_backup_list_free(list);
  CHECK(mevb_backup_id(item) == NULL && mevb_backup_size(item) == 0);
  CHECK(mevb_backup_list_count(list) == 0 && mevb_backup_list_get(list, 0) == NULL);
  mevb_backup_list_free(list);
  CHECK(mevb_repo_check(repo, NULL, &rep) == MEVB_OK);
  CHECK(mevb_report_json(rep) != NULL);
  mevb_report_free(rep);
  CHECK(mevb_report_json(rep) == NULL && mevb_report_text(rep) == NULL && mevb_report_status(rep) == -1);
  mevb_report_free(rep);
  mevb_backup_free(b);
  CHECK(mevb_backup_id(b) == NULL && mevb_backup_manifest_json(b) == NULL);
  CHECK(mevb_sink_new_callbacks(&sink, mem_write, mem_commit, mem_abort, &m) == MEVB_OK);
  STALE(mevb_repo_get_artifact(repo, b, sink, NULL));
  mevb_sink_free(sink);
  mevb_backup_free(b);
  mevb_repo_free(repo);
  mevb_repo_cancel(repo);
  STALE(mevb_repo_list(repo, NULL, &list));
  CHECK(list == NULL);
  STALE(mevb_repo_check(repo, NULL, &rep));
  mevb_repo_free(repo);

  /* retention results */
  CHECK(mevb_retention_apply(&ro, NULL, 0, NULL, 1795755600, &rr) == MEVB_OK);
  mevb_retention_result_free(rr);
  CHECK(mevb_retention_result_count(rr) == 0 && mevb_retention_result_get(rr, 0) == NULL);
  mevb_retention_result_free(rr);
}

int main(void) {
  size_t sizes[] = {0, 1, 7, 4096, (3u << 20) + 17};
  size_t reads[] = {1, 7, 4096, 1u << 20};
  int comps[] = {MEVB_COMPRESSION_NONE, MEVB_COMPRESSION_GZIP, MEVB_COMPRESSION_ZSTD};
  size_t i, j;
  const char *tmp = getenv("TMPDIR");
  snprintf(root, sizeof root, "%s/mevb_stream_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(root)) {
    perror("mkdtemp");
    return 2;
  }
  for (i = 0; i < sizeof comps / sizeof comps[0]; ++i)
    for (j = 0; j < sizeof sizes / sizeof sizes[0]; ++j) /* 1-byte reads only of small streams */
      test_roundtrip(comps[i], sizes[j], sizes[j] > 100000 ? reads[3 - i % 2] : reads[j % 4]);
  test_roundtrip(MEVB_COMPRESSION_ZSTD, 5000, 1);
  test_file_sink_never_replaces();
  test_failing_read_callback();
  test_read_callback_overstating();
  test_failing_write_and_commit();
  test_cancel_endless_source();
  test_wrong_magic();
  test_bad_arguments();
  test_storage_local();
  test_artifact_user_kind();
  test_stale_handles();
  if (!failures) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  }
  if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
  else printf("stream C API: all checks passed\n");
  return failures ? 1 : 0;
}
