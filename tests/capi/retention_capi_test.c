/* The retention policy of the C API, tested in C (C99, -pedantic): decisions and their
 * reasons for tables of items, and every bad input failing with a message naming it. */
#include <mevbackup.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                               \
    }                                                                           \
  } while (0)

static const char *last_message(void) { return mevb_error_last()->message; }

static int message_has(const char *part) {
  const char *m = last_message();
  if (m && strstr(m, part)) return 1;
  fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", m ? m : "(null)", part);
  return 0;
}

static mevb_retention_item item(const char *id, const char *source, const char *created, int verified) {
  mevb_retention_item it = MEVB_RETENTION_ITEM_INIT;
  it.id = id;
  it.kind = "postgres";
  it.source = source;
  it.created = created;
  it.verified = verified;
  return it;
}

/* The decision for items[i], checked against the expected action and a part of its reason. */
static void expect(const mevb_retention_result *r, size_t i, const char *id, int keep, const char *reason) {
  const mevb_retention_decision *d = mevb_retention_result_get(r, i);
  CHECK(d != NULL);
  if (!d) return;
  CHECK(d->struct_size == sizeof(mevb_retention_decision));
  CHECK(strcmp(d->id, id) == 0);
  CHECK(d->keep == keep);
  if (!strstr(d->reason, reason)) {
    fprintf(stderr, "  %s: reason \"%s\" lacks \"%s\"\n", id, d->reason, reason);
    failures++;
  }
}

static void test_keep_last_per_group_in_input_order(void) {
  mevb_retention_opts o = MEVB_RETENTION_OPTS_INIT;
  mevb_retention_item items[5];
  mevb_retention_result *r = NULL;
  o.keep_last = 2;
  /* Not sorted: the answer follows the input order, the policy sorts within groups. */
  items[0] = item("db_2", "db", "2026-11-26T04:00:00Z", MEVB_VERIFIED_NEVER);
  items[1] = item("db_1", "db", "2026-11-25T04:00:00Z", MEVB_VERIFIED_NEVER);
  items[2] = item("db_3", "db", "2026-11-27T04:00:00Z", MEVB_VERIFIED_NEVER);
  items[3] = item("other_1", "other", "2026-01-01T00:00:00Z", MEVB_VERIFIED_NEVER);
  /* Seconds since the epoch instead of a string: 2026-11-24T04:00:00Z. */
  items[4] = item("db_0", "db", NULL, MEVB_VERIFIED_NEVER);
  items[4].created_epoch = 1795492800;
  CHECK(mevb_retention_apply(&o, items, 5, "2026-11-27T05:00:00Z", 0, &r) == MEVB_OK);
  CHECK(r != NULL);
  if (!r) return;
  CHECK(mevb_retention_result_count(r) == 5);
  expect(r, 0, "db_2", 1, "one of the last 2");
  expect(r, 1, "db_1", 0, "matches no keep rule");
  expect(r, 2, "db_3", 1, "one of the last 2");
  expect(r, 3, "other_1", 1, "one of the last 2"); /* its own group: never emptied */
  expect(r, 4, "db_0", 0, "matches no keep rule");
  CHECK(mevb_retention_result_get(r, 5) == NULL);
  mevb_retention_result_free(r);
}

static void test_verification_states(void) {
  mevb_retention_opts o = MEVB_RETENTION_OPTS_INIT;
  mevb_retention_item items[4];
  mevb_retention_result *r = NULL;
  items[0] = item("a", "db", "2026-11-24T04:00:00Z", MEVB_VERIFIED_OK);
  items[1] = item("b", "db", "2026-11-25T04:00:00Z", MEVB_VERIFIED_EVER_OK);
  items[2] = item("c", "db", "2026-11-26T04:00:00Z", MEVB_VERIFIED_FAILED);
  items[3] = item("d", "db", "2026-11-27T04:00:00Z", MEVB_VERIFIED_NEVER);
  CHECK(mevb_retention_apply(&o, items, 4, NULL, 1795755600, &r) == MEVB_OK); /* 2026-11-27T05:00:00Z */
  if (!r) return;
  expect(r, 0, "a", 1, "newest verified-good backup");
  expect(r, 1, "b", 1, "newest backup that ever verified good");
  expect(r, 2, "c", 0, "failed verification");
  expect(r, 3, "d", 1, "one of the last 1");
  mevb_retention_result_free(r);
}

static void test_daily_and_days_and_future(void) {
  mevb_retention_opts o = MEVB_RETENTION_OPTS_INIT;
  mevb_retention_item items[4];
  mevb_retention_result *r = NULL;
  o.keep_daily = 2;
  items[0] = item("d27b", "db", "2026-11-27T03:00:00Z", MEVB_VERIFIED_NEVER);
  items[1] = item("d27a", "db", "2026-11-27T01:00:00Z", MEVB_VERIFIED_NEVER);
  items[2] = item("d26", "db", "2026-11-26T01:00:00Z", MEVB_VERIFIED_NEVER);
  items[3] = item("d25", "db", "2026-11-25T01:00:00Z", MEVB_VERIFIED_NEVER);
  CHECK(mevb_retention_apply(&o, items, 4, "2026-11-27T05:00:00+00:00", 0, &r) == MEVB_OK);
  if (!r) return;
  expect(r, 0, "d27b", 1, "daily 2026-11-27");
  expect(r, 1, "d27a", 0, "matches no keep rule");
  expect(r, 2, "d26", 1, "daily 2026-11-26");
  expect(r, 3, "d25", 0, "matches no keep rule");
  mevb_retention_result_free(r);

  /* A backup that finished two hours from now: kept, counted for no rule, so keep_last
   * still keeps the real newest one. */
  o = (mevb_retention_opts)MEVB_RETENTION_OPTS_INIT;
  o.keep_days = 1;
  items[0] = item("future", "db", "2026-11-27T06:00:00Z", MEVB_VERIFIED_NEVER);
  items[0].finished = "2026-11-27T07:00:00Z";
  items[1] = item("now", "db", "2026-11-27T04:00:00Z", MEVB_VERIFIED_NEVER);
  items[2] = item("old", "db", "2026-11-20T04:00:00Z", MEVB_VERIFIED_NEVER);
  CHECK(mevb_retention_apply(&o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_OK);
  if (!r) return;
  expect(r, 0, "future", 1, "a wrong clock?");
  expect(r, 1, "now", 1, "one of the last 1; within 1 days");
  expect(r, 2, "old", 0, "matches no keep rule");
  mevb_retention_result_free(r);
}

static void test_incomplete_objects_and_grace(void) {
  mevb_retention_opts o = MEVB_RETENTION_OPTS_INIT;
  mevb_retention_item items[3];
  mevb_retention_result *r = NULL;
  o.incomplete_grace_seconds = 3600;
  items[0] = item("database/.x.dump.gz.tmp-1", NULL, "2026-11-27T03:00:00Z", MEVB_VERIFIED_NEVER);
  items[0].incomplete = 1;
  items[1] = item("db_1", "db", "2026-11-27T03:00:00Z", MEVB_VERIFIED_NEVER);
  items[2] = item("database/.y.dump.gz.tmp-2", NULL, "2026-11-27T04:30:00Z", MEVB_VERIFIED_NEVER);
  items[2].incomplete = 1;
  CHECK(mevb_retention_apply(&o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_OK);
  if (!r) return;
  expect(r, 0, "database/.x.dump.gz.tmp-1", 0, "incomplete (no manifest), stored 2026-11-27T03:00:00Z");
  CHECK(mevb_retention_result_get(r, 0)->incomplete == 1);
  expect(r, 1, "db_1", 1, "one of the last 1");
  CHECK(mevb_retention_result_get(r, 1)->incomplete == 0);
  expect(r, 2, "database/.y.dump.gz.tmp-2", 1, "within the grace period");
  mevb_retention_result_free(r);

  CHECK(mevb_retention_apply(NULL, NULL, 0, "2026-11-27T05:00:00Z", 0, &r) == MEVB_OK);
  CHECK(r != NULL && mevb_retention_result_count(r) == 0);
  mevb_retention_result_free(r);
  mevb_retention_result_free(NULL);
  CHECK(mevb_retention_result_count(NULL) == 0);
  CHECK(mevb_retention_result_get(NULL, 0) == NULL);
}

static void test_bad_input(void) {
  mevb_retention_opts o = MEVB_RETENTION_OPTS_INIT;
  mevb_retention_item items[3];
  mevb_retention_result *r = (mevb_retention_result *)&o; /* must be reset to NULL on failure */
  struct {
    mevb_retention_opts o;
    int extra;
  } bigger;
  items[0] = item("a", "db", "2026-11-25T04:00:00Z", 0);
  items[1] = item("b", "db", "yesterday", 0);
  items[2] = item("c", "db", "2026-11-26T04:00:00Z", 0);

  CHECK(mevb_retention_apply(&o, items, 1, "2026-11-27T05:00:00Z", 0, NULL) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(message_has("out"));
  CHECK(mevb_retention_apply(&o, NULL, 1, "2026-11-27T05:00:00Z", 0, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(r == NULL && message_has("items"));

  CHECK(mevb_retention_apply(&o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(r == NULL && message_has("item 1 (\"b\"): created \"yesterday\" is not an RFC 3339 time"));
  items[1].created = "2026-11-26T04:00:00"; /* no zone */
  CHECK(mevb_retention_apply(&o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(message_has("item 1 (\"b\")") && message_has("zone"));
  items[1].created = NULL;
  items[1].created_epoch = -5;
  CHECK(mevb_retention_apply(&o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(message_has("item 1 (\"b\"): created_epoch -5 is outside 1970..2200"));
  items[1].created_epoch = 1795492800;
  items[1].finished = "soon";
  CHECK(mevb_retention_apply(&o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(message_has("item 1 (\"b\"): finished \"soon\""));
  items[1].finished = NULL;
  CHECK(mevb_retention_apply(&o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_OK);
  mevb_retention_result_free(r);
  r = NULL;

  items[2].id = NULL;
  CHECK(mevb_retention_apply(&o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(message_has("item 2: the id must not be NULL or empty"));
  items[2].id = "c";
  items[2].verified = 7;
  CHECK(mevb_retention_apply(&o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(message_has("item 2 (\"c\"): verified 7"));
  items[2].verified = 0;

  items[0].struct_size = 4;
  CHECK(mevb_retention_apply(&o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(message_has("item 0: struct_size 4"));
  items[0].struct_size = sizeof(mevb_retention_item);
  items[2].struct_size = sizeof(mevb_retention_item) + 8;
  CHECK(mevb_retention_apply(&o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(message_has("item 2: struct_size"));
  items[2].struct_size = sizeof(mevb_retention_item);

  CHECK(mevb_retention_apply(&o, items, 3, "27/11/2026", 0, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(message_has("now \"27/11/2026\""));
  CHECK(mevb_retention_apply(&o, items, 3, NULL, -1, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(message_has("now_epoch -1"));

  o.keep_last = 0;
  CHECK(mevb_retention_apply(&o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(message_has("keep-last must be at least 1"));
  o.keep_last = 1;
  o.keep_weekly = -2;
  CHECK(mevb_retention_apply(&o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(message_has("keep-weekly must not be negative"));
  o.keep_weekly = 0;
  o.struct_size = 2;
  CHECK(mevb_retention_apply(&o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(message_has("mevb_retention_opts.struct_size is too small"));

  /* A newer caller's larger struct: fine while the fields this library lacks are zero. */
  memset(&bigger, 0, sizeof bigger);
  CHECK(mevb_retention_opts_init(&bigger.o, sizeof bigger) == MEVB_OK);
  CHECK(bigger.o.keep_last == 1 && bigger.o.incomplete_grace_seconds == 86400);
  CHECK(bigger.o.future_allowance_seconds == 900);
  bigger.o.struct_size = sizeof bigger;
  CHECK(mevb_retention_apply(&bigger.o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_OK);
  mevb_retention_result_free(r);
  r = NULL;
  bigger.extra = 1;
  CHECK(mevb_retention_apply(&bigger.o, items, 3, "2026-11-27T05:00:00Z", 0, &r) == MEVB_ERR_INVALID_ARGUMENT);
  CHECK(message_has("fields this library version does not know"));
  CHECK(mevb_retention_opts_init(NULL, sizeof o) == MEVB_ERR_INVALID_ARGUMENT);
}

int main(void) {
  test_keep_last_per_group_in_input_order();
  test_verification_states();
  test_daily_and_days_and_future();
  test_incomplete_objects_and_grace();
  test_bad_input();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("retention C API: all checks passed\n");
  return 0;
}
