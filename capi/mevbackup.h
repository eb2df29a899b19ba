/*
 * libmevbackup: backup, restore and disaster recovery of a service's state.
 * The stable C API. C99; every exported symbol starts with mevb_.
 *
 * Conventions
 *  - Functions return an int status (mevb_status); 0 is MEVB_OK. On failure the
 *    calling thread's last error (mevb_error_last) holds the code and a message.
 *  - Handles are opaque, created by mevb_<noun>_new/open(&out, ...) and freed by
 *    mevb_<noun>_free (NULL is fine). Input strings are copied before a call returns.
 *    A returned const char* lives until its handle is freed; pointers given to a
 *    callback live only during the callback.
 *  - Options structs start with struct_size; initialise them with the *_INIT macro or
 *    the *_opts_init function. New fields are only ever appended.
 *  - A handle is used by one thread at a time, except mevb_repo_cancel, which is
 *    safe from any thread.
 */
#ifndef MEVBACKUP_H
#define MEVBACKUP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MEVB_BUILDING_LIBRARY) && defined(__GNUC__)
#define MEVB_API __attribute__((visibility("default")))
#else
#define MEVB_API
#endif

#define MEVB_VERSION_MAJOR 0
#define MEVB_VERSION_MINOR 1
#define MEVB_VERSION_PATCH 0
#define MEVB_VERSION_NUMBER (MEVB_VERSION_MAJOR * 10000 + MEVB_VERSION_MINOR * 100 + MEVB_VERSION_PATCH)

/* Status codes. Values are pinned and never reused; new ones are appended. */
typedef enum mevb_status {
  MEVB_OK = 0,
  MEVB_ERR_INVALID_ARGUMENT = 1,
  MEVB_ERR_NOMEM = 2,
  MEVB_ERR_INTERNAL = 3,
  MEVB_ERR_IO = 4,
  MEVB_ERR_NOT_FOUND = 5,
  MEVB_ERR_EXISTS = 6,
  MEVB_ERR_CANCELLED = 7,
  MEVB_ERR_CONNECTION = 8,
  MEVB_ERR_AUTH = 9,
  MEVB_ERR_DUMP_FAILED = 10,
  MEVB_ERR_RESTORE_FAILED = 11,
  MEVB_ERR_CORRUPT = 12,
  MEVB_ERR_VERSION_MISMATCH = 13,
  MEVB_ERR_NOT_EMPTY = 14,
  MEVB_ERR_NO_SPACE = 15,
  MEVB_ERR_PERMISSION = 16,
  MEVB_ERR_UNSUPPORTED = 17
} mevb_status;

/* A static, human-readable name of a status ("not found"). */
MEVB_API const char *mevb_status_str(int status);

typedef struct mevb_error {
  int code;            /* a mevb_status */
  const char *message; /* names what failed; never contains a secret */
  int retriable;       /* non-zero when trying again later may succeed */
} mevb_error;

/* The calling thread's last error; valid until the next mevb_ call on this thread.
 * After a successful call it reports MEVB_OK with an empty message. Never NULL. */
MEVB_API const mevb_error *mevb_error_last(void);

/* "0.1.0" and 100 (major*10000 + minor*100 + patch) of the library actually loaded. */
MEVB_API const char *mevb_version(void);
MEVB_API unsigned mevb_version_number(void);

/* ---- callbacks ---------------------------------------------------------------- */

typedef struct mevb_progress {
  uint32_t struct_size;
  const char *stage;  /* "backup", "restore" */
  uint64_t bytes_in;  /* read from the source so far */
  uint64_t bytes_out; /* written to the destination so far */
  double elapsed_seconds;
  int done;           /* non-zero on the final report */
} mevb_progress;

/* Return non-zero to cancel the operation (it then fails with MEVB_ERR_CANCELLED). */
typedef int (*mevb_progress_cb)(const mevb_progress *progress, void *user);

typedef enum mevb_log_level { MEVB_LOG_DEBUG = 0, MEVB_LOG_INFO = 1, MEVB_LOG_WARNING = 2, MEVB_LOG_ERROR = 3 } mevb_log_level;
typedef void (*mevb_log_cb)(int level, const char *message, void *user);

/* ---- repository ------------------------------------------------------------------ */

typedef struct mevb_repo mevb_repo;

typedef struct mevb_repo_opts {
  uint32_t struct_size;
  mevb_log_cb log; /* optional; called on the thread running the operation */
  void *log_user;
  /* S3-compatible object storage (location "s3://bucket/prefix"); ignored by local
   * repositories. NULL or 0 means the default: the AWS_* environment variables
   * (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION or
   * AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, AWS_MAX_ATTEMPTS), then AWS's defaults. */
  const char *storage_class;     /* STANDARD, STANDARD_IA, GLACIER, DEEP_ARCHIVE, ... */
  const char *endpoint_url;      /* "https://host[:port]"; IP and localhost endpoints use path-style */
  const char *region;
  const char *ca_bundle;         /* PEM file of trusted CAs */
  int no_verify_tls;             /* non-zero: no TLS certificate verification (logs a warning) */
  int path_style;                /* non-zero: path-style addressing for any endpoint */
  const char *access_key_id;
  const char *secret_access_key; /* copied; never logged */
  const char *session_token;
  const char *sse;               /* server-side encryption: "AES256" or "aws:kms" */
  const char *sse_kms_key_id;
  uint64_t part_size;            /* first multipart part size in bytes (>= 5 MiB); 0: 8 MiB */
  int concurrency;               /* parts uploaded at once; 0: 4 */
  int max_attempts;              /* per request; 0: AWS_MAX_ATTEMPTS or 3 */
  int unsigned_payload;          /* non-zero: UNSIGNED-PAYLOAD instead of SHA-256 bodies (https only) */
} mevb_repo_opts;
#define MEVB_REPO_OPTS_INIT \
  {sizeof(mevb_repo_opts), NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, 0}
MEVB_API int mevb_repo_opts_init(mevb_repo_opts *opts, size_t size);

/* Opens a repository: a local directory path (created on first backup) or
 * "s3://bucket/prefix" (S3-compatible object storage). opts may be NULL. */
MEVB_API int mevb_repo_open(mevb_repo **out, const char *location, const mevb_repo_opts *opts);
MEVB_API void mevb_repo_free(mevb_repo *repo);
/* Asks the operation running on `repo` to stop; safe from any thread and from callbacks. */
MEVB_API void mevb_repo_cancel(mevb_repo *repo);

/* ---- backups (manifests) ---------------------------------------------------------- */

typedef struct mevb_backup mevb_backup;

MEVB_API const char *mevb_backup_id(const mevb_backup *b);
MEVB_API const char *mevb_backup_kind(const mevb_backup *b);        /* "postgres" */
MEVB_API const char *mevb_backup_path(const mevb_backup *b);        /* relative to the repository */
MEVB_API const char *mevb_backup_sha256(const mevb_backup *b);      /* of the stored bytes */
MEVB_API const char *mevb_backup_created_at(const mevb_backup *b);  /* RFC 3339 UTC */
MEVB_API const char *mevb_backup_compression(const mevb_backup *b); /* "gzip" | "none" */
MEVB_API const char *mevb_backup_source_name(const mevb_backup *b); /* e.g. the database */
MEVB_API uint64_t mevb_backup_size(const mevb_backup *b);           /* stored bytes */
MEVB_API const char *mevb_backup_manifest_json(const mevb_backup *b);
MEVB_API void mevb_backup_free(mevb_backup *b);

typedef struct mevb_backup_list mevb_backup_list;
/* Every backup in the repository (kind NULL or "" for all kinds), oldest first. */
MEVB_API int mevb_repo_list(mevb_repo *repo, const char *kind, mevb_backup_list **out);
MEVB_API size_t mevb_backup_list_count(const mevb_backup_list *list);
/* Borrowed: lives as long as the list. NULL when index is out of range. */
MEVB_API const mevb_backup *mevb_backup_list_get(const mevb_backup_list *list, size_t index);
MEVB_API void mevb_backup_list_free(mevb_backup_list *list);

/* Finds a backup by id or "latest" (of `kind`; source_name may be NULL). */
MEVB_API int mevb_repo_find(mevb_repo *repo, const char *id_or_latest, const char *kind, const char *source_name,
                            mevb_backup **out);

/* ---- PostgreSQL -------------------------------------------------------------------- */

typedef struct mevb_pg_backup_opts {
  uint32_t struct_size;
  const char *conninfo;           /* libpq conninfo or URI (required) */
  const char *pg_dump_path;       /* NULL: newest installed pg_dump able to dump the server */
  const char *const *pg_dump_args;/* NULL: "--no-owner --no-acl"; else replaces them */
  size_t pg_dump_args_count;
  const char *name_prefix;        /* NULL: the database name */
  const char *compression;        /* NULL: "gzip"; or "none" */
  int level;                      /* compression level; -1: default */
  uint64_t exact_count_max_bytes; /* 0: 64 MiB */
  mevb_progress_cb progress;
  void *progress_user;
} mevb_pg_backup_opts;
#define MEVB_PG_BACKUP_OPTS_INIT {sizeof(mevb_pg_backup_opts), NULL, NULL, NULL, 0, NULL, NULL, -1, 0, NULL, NULL}
MEVB_API int mevb_pg_backup_opts_init(mevb_pg_backup_opts *opts, size_t size);

/* Backs up a database; on success *out (if out is not NULL) describes the new backup. */
MEVB_API int mevb_repo_backup_postgres(mevb_repo *repo, const mevb_pg_backup_opts *opts, mevb_backup **out);

typedef struct mevb_pg_restore_opts {
  uint32_t struct_size;
  const char *conninfo;             /* names the target database (required) */
  int clean;                        /* non-zero: replace a non-empty target */
  const char *source_name;          /* with "latest": which database's latest backup */
  const char *pg_restore_path;      /* NULL: newest installed pg_restore */
  const char *const *pg_restore_args; /* NULL: "--no-owner --no-acl" */
  size_t pg_restore_args_count;
  mevb_progress_cb progress;
  void *progress_user;
} mevb_pg_restore_opts;
#define MEVB_PG_RESTORE_OPTS_INIT {sizeof(mevb_pg_restore_opts), NULL, 0, NULL, NULL, NULL, 0, NULL, NULL}
MEVB_API int mevb_pg_restore_opts_init(mevb_pg_restore_opts *opts, size_t size);

/* Restores backup `id_or_latest` into the database opts->conninfo names. */
MEVB_API int mevb_repo_restore_postgres(mevb_repo *repo, const char *id_or_latest, const mevb_pg_restore_opts *opts);

/* ---- sync between repositories ----------------------------------------------------- */

typedef struct mevb_sync_opts {
  uint32_t struct_size;
  const char *kind; /* NULL or "": every kind */
  mevb_progress_cb progress;
  void *progress_user;
} mevb_sync_opts;
#define MEVB_SYNC_OPTS_INIT {sizeof(mevb_sync_opts), NULL, NULL, NULL}
MEVB_API int mevb_sync_opts_init(mevb_sync_opts *opts, size_t size);
/* Copies every complete backup of `from` that `to` lacks (artifact, then manifest), each
 * checked against its manifest's size and SHA-256 before it is published
 * (MEVB_ERR_CORRUPT otherwise). `to`'s options (storage class, encryption) apply.
 * *copied (may be NULL) receives the number of backups copied. mevb_repo_cancel(from)
 * stops it. Log messages go to `from`'s log callback. */
MEVB_API int mevb_repo_sync(mevb_repo *from, mevb_repo *to, const mevb_sync_opts *opts, size_t *copied);

/* ---- S3 bucket lifecycle ---------------------------------------------------------- */

typedef struct mevb_lifecycle_transition {
  int days;                  /* after creation; increasing from one transition to the next */
  const char *storage_class; /* GLACIER, DEEP_ARCHIVE, STANDARD_IA, ... */
} mevb_lifecycle_transition;

typedef struct mevb_lifecycle_opts {
  uint32_t struct_size;
  const char *rule_id; /* NULL: "mevbackup <prefix>"; a rule with this id is replaced */
  const mevb_lifecycle_transition *transitions;
  size_t transitions_count;
  int expire_days;           /* 0: never */
  int abort_incomplete_days; /* incomplete multipart uploads aborted after; 0: no such rule */
} mevb_lifecycle_opts;
#define MEVB_LIFECYCLE_OPTS_INIT {sizeof(mevb_lifecycle_opts), NULL, NULL, 0, 0, 7}
MEVB_API int mevb_lifecycle_opts_init(mevb_lifecycle_opts *opts, size_t size);
/* Installs one lifecycle rule over the repository's prefix in its S3 bucket, keeping the
 * bucket's other rules. MEVB_ERR_UNSUPPORTED for a local repository or a server without
 * lifecycle support. */
MEVB_API int mevb_repo_put_bucket_lifecycle(mevb_repo *repo, const mevb_lifecycle_opts *opts);

#ifdef __cplusplus
}
#endif

#endif /* MEVBACKUP_H */
