/* Composes the stream layer: the caller's bytes (generated here) -> zstd -> S3 (or any
 * storage), then the object read back -> zstd decompression -> the caller's sink, which
 * compares every byte with what was sent.
 *
 *   mevb_example_compose URL [BYTES]     e.g. s3://backups/demo 5000000
 *
 * URL is "s3://bucket/prefix" or a local directory. S3 settings and credentials come from
 * the AWS_* environment variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), never from
 * the command line. Exits 0 when the bytes read back are the bytes sent, 1 otherwise. */
#include <mevbackup.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char byte_at(unsigned long long i) {
  /* Compressible but not trivial: a text-like pattern with a counter in it. */
  static const char text[] = "{\"id\": 0000, \"state\": \"protected\", \"note\": \"composed by the stream layer\"}\n";
  return (unsigned char)(text[i % (sizeof text - 1)] + (unsigned char)((i / 997) % 3));
}

struct producer {
  unsigned long long total, sent;
};

static int produce(void *user, void *buf, size_t cap, size_t *got) {
  struct producer *p = (struct producer *)user;
  size_t n = 0;
  while (n < cap && p->sent < p->total) ((unsigned char *)buf)[n++] = byte_at(p->sent++);
  *got = n;
  return 0;
}

struct checker {
  unsigned long long seen, mismatches;
  int committed;
};

static int check_bytes(void *user, const void *data, size_t size) {
  struct checker *c = (struct checker *)user;
  const unsigned char *d = (const unsigned char *)data;
  size_t i;
  for (i = 0; i < size; ++i)
    if (d[i] != byte_at(c->seen + i)) c->mismatches++;
  c->seen += size;
  return 0;
}

static int check_commit(void *user) {
  ((struct checker *)user)->committed = 1;
  return 0;
}

static int fail(const char *what) {
  const mevb_error *e = mevb_error_last();
  fprintf(stderr, "compose: %s: %s (%s)\n", what, e->message, mevb_status_str(e->code));
  return 1;
}

int main(int argc, char **argv) {
  const char *key = "compose/payload.bin.zst";
  struct producer prod = {0, 0};
  struct checker chk = {0, 0, 0};
  mevb_storage *storage = NULL;
  mevb_source *src = NULL;
  mevb_sink *sink = NULL;
  mevb_filter *up[2] = {NULL, NULL};
  mevb_filter *down[2] = {NULL, NULL};
  mevb_object_info info = MEVB_OBJECT_INFO_INIT;
  int rc = 1;

  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s URL [BYTES]\n", argv[0]);
    return 2;
  }
  prod.total = argc == 3 ? strtoull(argv[2], NULL, 10) : 5000000ULL;
  if (mevb_storage_open(&storage, argv[1], NULL) != MEVB_OK) return fail("open storage");
  mevb_storage_remove(storage, key); /* a run before this one */

  /* Up: the caller's bytes -> observer (what was sent) -> zstd -> storage. */
  if (mevb_source_new_callbacks(&src, produce, NULL, &prod) != MEVB_OK) goto out_fail_src;
  if (mevb_filter_new_observer(&up[0]) != MEVB_OK || mevb_filter_new_compressor(&up[1], MEVB_COMPRESSION_ZSTD, 3) != MEVB_OK)
    goto out_fail_filters;
  if (mevb_storage_put(storage, key, &sink) != MEVB_OK) goto out_fail_put;
  if (mevb_pipeline_run(src, up, 2, sink, NULL) != MEVB_OK) {
    rc = fail("upload");
    goto out;
  }
  if (mevb_storage_stat(storage, key, &info) != MEVB_OK) {
    rc = fail("stat");
    goto out;
  }
  mevb_source_free(src);
  mevb_sink_free(sink);
  src = NULL;
  sink = NULL;

  /* Down: storage -> zstd decompression -> observer (what came back) -> the caller's check. */
  if (mevb_storage_get(storage, key, &src) != MEVB_OK) {
    rc = fail("get");
    goto out;
  }
  if (mevb_filter_new_decompressor(&down[0], MEVB_COMPRESSION_ZSTD) != MEVB_OK ||
      mevb_filter_new_observer(&down[1]) != MEVB_OK) {
    rc = fail("filters");
    goto out;
  }
  if (mevb_sink_new_callbacks(&sink, check_bytes, check_commit, NULL, &chk) != MEVB_OK) {
    rc = fail("sink");
    goto out;
  }
  if (mevb_pipeline_run(src, down, 2, sink, NULL) != MEVB_OK) {
    rc = fail("download");
    goto out;
  }

  if (!chk.committed || chk.seen != prod.total || chk.mismatches != 0 ||
      strcmp(mevb_filter_observed_sha256(up[0]), mevb_filter_observed_sha256(down[1])) != 0) {
    fprintf(stderr, "compose: MISMATCH: sent %llu bytes (sha256 %s), got %llu (sha256 %s), %llu differ\n", prod.total,
            mevb_filter_observed_sha256(up[0]), chk.seen, mevb_filter_observed_sha256(down[1]), chk.mismatches);
    rc = 1;
    goto out;
  }
  printf("compose: %llu bytes -> zstd -> %s (%llu bytes stored) -> back, identical, sha256 %s\n", prod.total, key,
         (unsigned long long)info.size, mevb_filter_observed_sha256(down[1]));
  rc = 0;
  goto out;

out_fail_src:
  rc = fail("source");
  goto out;
out_fail_filters:
  rc = fail("filters");
  goto out;
out_fail_put:
  rc = fail("put");
out:
  mevb_source_free(src);
  mevb_sink_free(sink);
  mevb_filter_free(up[0]);
  mevb_filter_free(up[1]);
  mevb_filter_free(down[0]);
  mevb_filter_free(down[1]);
  mevb_storage_free(storage);
  return rc;
}
