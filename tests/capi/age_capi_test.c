/* The age filters of the C API, tested in C (C99, -pedantic): keys generated, bytes
 * round-tripped through the encryptor and decryptor, a wrong key, a bad recipient and an
 * identity file others may read refused with a message naming what was wrong. */
#define _XOPEN_SOURCE 700
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

struct buf {
  unsigned char *data;
  size_t size, pos;
  int commits, aborts;
};

static int buf_read(void *user, void *out, size_t cap, size_t *got) {
  struct buf *b = (struct buf *)user;
  size_t n = b->size - b->pos;
  if (n > cap) n = cap;
  if (n > 1000) n = 1000; /* odd-sized pieces */
  memcpy(out, b->data + b->pos, n);
  b->pos += n;
  *got = n;
  return 0;
}

static int buf_write(void *user, const void *data, size_t size) {
  struct buf *b = (struct buf *)user;
  unsigned char *p = (unsigned char *)realloc(b->data, b->size + size + 1);
  if (!p) return MEVB_ERR_NOMEM;
  b->data = p;
  memcpy(b->data + b->size, data, size);
  b->size += size;
  return 0;
}
static int buf_commit(void *user) {
  ((struct buf *)user)->commits++;
  return 0;
}
static void buf_abort(void *user) { ((struct buf *)user)->aborts++; }

/* Runs `in` through one filter into `out`; returns the run's status. */
static int run(struct buf *in, mevb_filter *f, struct buf *out) {
  mevb_source *src = NULL;
  mevb_sink *sink = NULL;
  int rc;
  in->pos = 0;
  CHECK(mevb_source_new_callbacks(&src, buf_read, NULL, in) == MEVB_OK);
  CHECK(mevb_sink_new_callbacks(&sink, buf_write, buf_commit, buf_abort, out) == MEVB_OK);
  rc = mevb_pipeline_run(src, &f, 1, sink, NULL);
  mevb_source_free(src);
  mevb_sink_free(sink);
  return rc;
}

int main(void) {
  char secret[MEVB_AGE_SECRET_SIZE], recipient[MEVB_AGE_RECIPIENT_SIZE];
  char secret2[MEVB_AGE_SECRET_SIZE], recipient2[MEVB_AGE_RECIPIENT_SIZE];
  char text[256], bad[MEVB_AGE_RECIPIENT_SIZE], path[256];
  const char *both[2];
  struct buf plain = {NULL, 0, 0, 0, 0}, enc = {NULL, 0, 0, 0, 0}, back = {NULL, 0, 0, 0, 0};
  mevb_filter *f = NULL;
  size_t i;
  FILE *fp;
  const char *tmp = getenv("TMPDIR");

  /* keys */
  CHECK(mevb_age_generate(secret, sizeof secret, recipient, sizeof recipient) == MEVB_OK);
  CHECK(strncmp(secret, "AGE-SECRET-KEY-1", 16) == 0 && strlen(secret) == MEVB_AGE_SECRET_SIZE - 1);
  CHECK(strncmp(recipient, "age1", 4) == 0 && strlen(recipient) == MEVB_AGE_RECIPIENT_SIZE - 1);
  CHECK(mevb_age_generate(secret2, sizeof secret2, recipient2, 10) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("recipient buffer of 10 bytes is too small");
  CHECK(mevb_age_generate(secret2, sizeof secret2, recipient2, sizeof recipient2) == MEVB_OK);
  CHECK(strcmp(secret, secret2) != 0);

  /* round trip to two recipients, 200000 bytes */
  plain.size = 200000;
  plain.data = (unsigned char *)malloc(plain.size);
  for (i = 0; i < plain.size; ++i) plain.data[i] = (unsigned char)((i * 2654435761u) >> 13);
  both[0] = recipient;
  both[1] = recipient2;
  CHECK(mevb_filter_new_age_encrypt(&f, both, 2) == MEVB_OK);
  CHECK(run(&plain, f, &enc) == MEVB_OK);
  mevb_filter_free(f);
  CHECK(enc.commits == 1 && enc.size > plain.size);
  CHECK(enc.size > 22 && memcmp(enc.data, "age-encryption.org/v1\n", 22) == 0);
  snprintf(text, sizeof text, "# created by a test\n\n%s\n", secret2);
  CHECK(mevb_filter_new_age_decrypt(&f, text) == MEVB_OK);
  CHECK(run(&enc, f, &back) == MEVB_OK);
  mevb_filter_free(f);
  CHECK(back.commits == 1 && back.size == plain.size && memcmp(back.data, plain.data, plain.size) == 0);

  /* a wrong identity: MEVB_ERR_AUTH, nothing committed */
  CHECK(mevb_age_generate(secret2, sizeof secret2, recipient2, sizeof recipient2) == MEVB_OK);
  free(back.data);
  memset(&back, 0, sizeof back);
  CHECK(mevb_filter_new_age_decrypt(&f, secret2) == MEVB_OK);
  CHECK(run(&enc, f, &back) == MEVB_ERR_AUTH);
  MSG_HAS("age decryptor");
  MSG_HAS("no identity matches");
  CHECK(strstr(mevb_error_last()->message, secret2 + 16) == NULL);
  CHECK(back.commits == 0 && back.size == 0);
  mevb_filter_free(f);

  /* a cut file: MEVB_ERR_CORRUPT, nothing committed */
  memset(&back, 0, sizeof back);
  enc.size -= 1;
  CHECK(mevb_filter_new_age_decrypt(&f, secret) == MEVB_OK);
  CHECK(run(&enc, f, &back) == MEVB_ERR_CORRUPT);
  MSG_HAS("age payload");
  CHECK(back.commits == 0);
  mevb_filter_free(f);
  free(back.data);

  /* a bad recipient names its position; no handle is made */
  strcpy(bad, recipient);
  bad[20] = bad[20] == 'q' ? 'p' : 'q';
  both[1] = bad;
  f = NULL;
  CHECK(mevb_filter_new_age_encrypt(&f, both, 2) == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("recipient 2");
  MSG_HAS("bad checksum");
  CHECK(f == NULL);
  CHECK(mevb_filter_new_age_encrypt(&f, both, 0) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(mevb_filter_new_age_decrypt(&f, "# nothing\n") == MEVB_ERR_INVALID_ARGUMENT);
  MSG_HAS("no AGE-SECRET-KEY-1");

  /* an identity file others may read is refused, naming file and mode */
  snprintf(path, sizeof path, "%s/mevb_age_capi_%ld.txt", tmp && *tmp ? tmp : "/tmp", (long)getpid());
  fp = fopen(path, "w");
  CHECK(fp != NULL);
  if (fp) {
    fprintf(fp, "%s\n", secret);
    fclose(fp);
  }
  CHECK(chmod(path, 0640) == 0);
  CHECK(mevb_filter_new_age_decrypt_file(&f, path) == MEVB_ERR_PERMISSION);
  MSG_HAS(path);
  MSG_HAS("mode 0640");
  CHECK(chmod(path, 0600) == 0);
  CHECK(mevb_filter_new_age_decrypt_file(&f, path) == MEVB_OK);
  mevb_filter_free(f);
  unlink(path);

  free(plain.data);
  free(enc.data);
  if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
  return failures ? 1 : 0;
}
