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
 *
 * Environment
 *  The library takes its policy (lock timing, the Redis password, retries, timeouts)
 *  through options only; it reads no MEVBACKUP_* variable (the mevbackup CLI and the
 *  Python bindings read those and pass options). It reads only these documented
 *  default providers, each for what an option leaves unset:
 *  - libpq's PG* variables (PGHOST, PGHOSTADDR, PGDATABASE, PGSSLMODE, PGCONNECT_TIMEOUT,
 *    PGPASSWORD, ...), through libpq and for the pg_dump / pg_restore it runs;
 *  - the AWS credential chain's variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 *    AWS_SESSION_TOKEN, AWS_REGION, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3,
 *    AWS_ENDPOINT_URL, AWS_CA_BUNDLE, AWS_MAX_ATTEMPTS) and its shared files
 *    (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE, HOME for ~/.aws/), for
 *    S3 repositories;
 *  - PATH, to find the programs it runs (pg_dump, pg_restore, redis-server, ...), and
 *    TMPDIR, where mevb_pg_restore_opts.staging_dir is NULL.
 *  Child processes get a built environment, never this process's whole one: PATH, HOME,
 *  LANG, LC_*, TZ and TMPDIR, plus PG* for the PostgreSQL tools (and MEVBACKUP_* and AWS_*
 *  for the server a PITR restore starts, whose restore_command runs the CLI).
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
  MEVB_ERR_UNSUPPORTED = 17,
  MEVB_ERR_LOCKED = 18 /* the repository is locked by another run (docs/lock.md) */
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

/* Makes the calling process undumpable (prctl PR_SET_DUMPABLE 0: other processes of the
 * same user cannot ptrace it or read its memory and environment) and sets RLIMIT_CORE to 0
 * (no core file, inherited by children), so passwords and keys held in memory stay there.
 * Process-wide and lasting, so the library never does it on its own: a program that hands
 * it secrets calls it at start (the mevbackup CLI does); an embedding service decides.
 * MEVB_ERR_IO if the kernel refuses. */
MEVB_API int mevb_protect_secrets_in_memory(void);

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
  int64_t stall_timeout_seconds; /* > 0: an operation whose data stops moving this long fails (MEVB_ERR_IO) */
  /* The repository lock (docs/lock.md). The library reads no environment for it; the CLI
   * and the Python bindings fill these from MEVBACKUP_LOCK_TTL, MEVBACKUP_LOCK_REFRESH,
   * MEVBACKUP_LOCK_WAIT and MEVBACKUP_NO_LOCK. */
  int64_t lock_ttl_seconds;      /* a lock not refreshed this long is abandoned; 0: 1800 */
  int64_t lock_refresh_seconds;  /* how often a held lock is refreshed; 0: lock_ttl_seconds / 6 (at least 1) */
  int64_t lock_wait_seconds;     /* how long to wait for a conflicting lock; 0: fail at once (MEVB_ERR_LOCKED) */
  int no_lock;                   /* non-zero: take no lock (a repository nothing else uses) */
  int64_t s3_retry_base_ms;      /* S3 retry backoff base, 1..60000 ms; 0: 1000 */
  /* Encryption at rest in the age format (docs/encryption.md). Every artifact this
   * repository handle stores (every kind, WAL too) is compressed, then encrypted to the
   * recipients; artifacts it reads are decrypted with the identities. Only public keys
   * are needed to back up. The files are read once, by mevb_repo_open. */
  const char *const *recipients;      /* "age1..." public keys */
  size_t recipients_count;
  const char *recipients_file;        /* one "age1..." per line, '#' comments (as age -R) */
  const char *const *identity_files;  /* age-keygen files; refused when group/others may read them */
  size_t identity_files_count;
  const char *passphrase_file;        /* a file or /dev/fd/N whose first line is a passphrase
                                       * (scrypt): encrypts (as the only recipient) and decrypts */
  /* Signed manifests (Ed25519; docs/trust.md). Every manifest this handle writes is signed
   * with the signing key (a PEM PKCS#8 file, refused when group/others may read it); with
   * verify keys (PEM public keys) every manifest read is checked, and restores, verify,
   * PITR and prune refuse (prune: leave alone, uncounted) those not signed by one. */
  const char *signing_key_file;
  const char *const *verify_key_files;
  size_t verify_key_files_count;
  /* Bandwidth limit of every upload and download of this handle (stored bytes, all kinds,
   * WAL too), bytes per second; 0: none. mevb_parse_rate reads "20MiB/s". */
  uint64_t max_rate;
  /* The AWS shared files' profile (~/.aws/credentials, ~/.aws/config; docs/s3.md): NULL is
   * AWS_PROFILE, else "default". Named here, its keys replace the environment's. */
  const char *profile;
} mevb_repo_opts;
#define MEVB_REPO_OPTS_INIT \
  {sizeof(mevb_repo_opts), NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, 0, 0, 0, 0, 0, \
   0, 0, NULL, 0, NULL, NULL, 0, NULL, NULL, NULL, 0, 0, NULL}
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
/* "20MiB/s", "500KiB/s", "1.5MB/s" or a number of bytes per second into *bytes_per_second;
 * MEVB_ERR_INVALID_ARGUMENT naming the text for 0, "fast" and the like. */
MEVB_API int mevb_parse_rate(const char *text, uint64_t *bytes_per_second);
/* Non-zero when the artifact is encrypted (age). */
MEVB_API int mevb_backup_encrypted(const mevb_backup *b);
/* What the repository found of the manifest's signature: "good", "bad", "unsigned", or
 * "unchecked" when the handle has no verify key. */
MEVB_API const char *mevb_backup_signature(const mevb_backup *b);
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
  int jobs;                         /* sessions loading the data: 0 (default) one per core, at most 4
                                       (one for an artifact over 1 GiB in S3); 1: one pg_restore reading
                                       the stream; N: N sessions, each streaming the artifact into a
                                       pg_restore of its share of the tables (no copy of the dump) */
  const char *staging_dir;          /* where the table of contents (and, with stage, the dump) is kept
                                       while restoring; NULL: $TMPDIR or /tmp */
  int allow_property_loss;          /* non-zero: warn, not fail, when the target server cannot give the
                                       database the source's encoding, locale, settings or comment */
  int stage;                        /* non-zero: stage the decompressed dump in a temporary file for
                                       pg_restore --jobs instead (the artifact is read once) */
} mevb_pg_restore_opts;
#define MEVB_PG_RESTORE_OPTS_INIT {sizeof(mevb_pg_restore_opts), NULL, 0, NULL, NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0}
MEVB_API int mevb_pg_restore_opts_init(mevb_pg_restore_opts *opts, size_t size);

/* Restores backup `id_or_latest` into the database opts->conninfo names. */
MEVB_API int mevb_repo_restore_postgres(mevb_repo *repo, const char *id_or_latest, const mevb_pg_restore_opts *opts);

/* ---- reports: the outcome of prune, verify and check ------------------------------- */

typedef struct mevb_report mevb_report;
/* The whole outcome as JSON (see docs/c-api.md for each operation's fields). */
MEVB_API const char *mevb_report_json(const mevb_report *r);
/* Human-readable lines, as the CLI prints them. */
MEVB_API const char *mevb_report_text(const mevb_report *r);
/* prune: backups deleted; verify: backups that failed; check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. */
MEVB_API int mevb_report_status(const mevb_report *r);
MEVB_API void mevb_report_free(mevb_report *r);

/* ---- retention --------------------------------------------------------------------- */

typedef struct mevb_prune_opts {
  uint32_t struct_size;
  int keep_last;    /* >= 1 (default 1): the newest backups of each kind and source always kept */
  int keep_days;    /* 0: no age rule */
  int keep_daily;
  int keep_weekly;
  int keep_monthly;
  int keep_yearly;
  int64_t incomplete_grace_seconds; /* objects without a manifest younger than this stay (default 86400) */
  const char *kind;   /* NULL: every kind */
  const char *source; /* NULL: every source */
  int dry_run;
  const char *now;    /* RFC 3339; NULL: the current time */
} mevb_prune_opts;
#define MEVB_PRUNE_OPTS_INIT {sizeof(mevb_prune_opts), 1, 0, 0, 0, 0, 0, 86400, NULL, NULL, 0, NULL}
MEVB_API int mevb_prune_opts_init(mevb_prune_opts *opts, size_t size);
/* Applies the retention policy; the report lists every decision with its reason. */
MEVB_API int mevb_repo_prune(mevb_repo *repo, const mevb_prune_opts *opts, mevb_report **out);

/* ---- verification -------------------------------------------------------------------- */

typedef struct mevb_verify_opts {
  uint32_t struct_size;
  const char *kind;                  /* NULL: every kind */
  const char *source;                /* with "latest": which source */
  const char *restore_test_conninfo; /* postgres: restore into a scratch database on this server */
  const char *const *queries;        /* postgres: SQL checks run in the scratch database */
  size_t queries_count;
  int no_record;                     /* non-zero: do not store the outcome beside the backup */
  mevb_progress_cb progress;
  void *progress_user;
} mevb_verify_opts;
#define MEVB_VERIFY_OPTS_INIT {sizeof(mevb_verify_opts), NULL, NULL, NULL, NULL, 0, 0, NULL, NULL}
MEVB_API int mevb_verify_opts_init(mevb_verify_opts *opts, size_t size);
/* Verifies `which` (an id, "latest" or "all"). A backup failing verification is not an
 * error of the call: see mevb_report_status (the number that failed). */
MEVB_API int mevb_repo_verify(mevb_repo *repo, const char *which, const mevb_verify_opts *opts, mevb_report **out);

/* Re-encrypts backup `id_or_latest` (of `kind` and `source_name` when not NULL) to the
 * handle's recipients, opening it with the handle's identities (mevb_repo_opts): only the
 * age headers are rewritten, the payload is copied as it is. The rekeyed backup gets a
 * new id and is complete before the old one is removed; *out (if not NULL) describes it.
 * MEVB_ERR_UNSUPPORTED for base backups; MEVB_ERR_INVALID_ARGUMENT for a plaintext backup
 * or a handle without identities or recipients; MEVB_ERR_AUTH when no identity opens it. */
MEVB_API int mevb_repo_rekey(mevb_repo *repo, const char *id_or_latest, const char *kind, const char *source_name,
                             mevb_backup **out);

/* ---- monitoring ------------------------------------------------------------------------ */

typedef struct mevb_check_opts {
  uint32_t struct_size;
  const char *kind;             /* NULL: every kind found */
  int64_t max_age_seconds;      /* the RPO; default 25 h */
  const char *now;              /* RFC 3339; NULL: the current time */
  const char *prometheus_file;  /* if set: a node_exporter textfile, written atomically */
  double warning_fraction;      /* no longer used (validated only): see warning_seconds */
  int64_t warning_seconds;      /* WARNING when the newest backup is older; 0: max_age_seconds */
  int64_t critical_seconds;     /* CRITICAL when older; 0: 2 x max_age_seconds */
  int64_t future_skew_seconds;  /* a backup finished after now + this is WARNING (default 300) */
} mevb_check_opts;
#define MEVB_CHECK_OPTS_INIT {sizeof(mevb_check_opts), NULL, 90000, NULL, NULL, 0.8, 0, 0, 300}
MEVB_API int mevb_check_opts_init(mevb_check_opts *opts, size_t size);
/* Freshness of the newest backup of each kind and source. An unreadable repository is
 * not an error of the call: the report's status is 3 (UNKNOWN); a repository that does
 * not exist is 2 (CRITICAL). The text ends in Nagios perfdata ("| age=...s;W;C size=...B"). */
MEVB_API int mevb_repo_check(mevb_repo *repo, const mevb_check_opts *opts, mevb_report **out);

/* ---- adopting backups made by the runbook's scripts ------------------------------------ */

typedef struct mevb_adopt_opts {
  uint32_t struct_size;
  int dry_run;                 /* non-zero: check and report, write no manifest */
  const char *pg_restore_path; /* NULL: the newest pg_restore installed */
} mevb_adopt_opts;
#define MEVB_ADOPT_OPTS_INIT {sizeof(mevb_adopt_opts), 0, NULL}
MEVB_API int mevb_adopt_opts_init(mevb_adopt_opts *opts, size_t size);
/* Gives every sound database/ *.dump.gz, redis/ *.rdb.gz and config/config_*.tar.gz without
 * a manifest one marked "adopted"; deletes and overwrites nothing. The report's JSON:
 * {"adopted": n, "damaged": n, "foreign": n, "files": [{"key", "outcome" ("adopted",
 * "damaged", "foreign" or "leftover"), "kind", "id", "reason"}]}; its status: the number
 * of damaged files. */
MEVB_API int mevb_repo_adopt(mevb_repo *repo, const mevb_adopt_opts *opts, mevb_report **out);

/* ---- configuration files ----------------------------------------------------------- */

/* Backs up files, directories (recursively) and globs relative to base_dir as
 * config/<prefix>_YYYYMMDD_HHMMSS.tar.gz (pax tar). Names matching the built-in secret
 * patterns (.env, .env.*, *.pem, *.key, id_rsa*, *.p12, secrets/, ...) or `excludes`
 * are left out and listed (names only) in the manifest and the log. */
typedef struct mevb_files_backup_opts {
  uint32_t struct_size;
  const char *base_dir;           /* NULL: the current directory */
  const char *const *paths;       /* required: what to back up, relative to base_dir */
  size_t paths_count;
  const char *const *excludes;    /* more glob patterns to leave out ("dir/" = a directory) */
  size_t excludes_count;
  int include_secrets;            /* non-zero: drop the built-in secret patterns */
  int ignore_missing;             /* non-zero: a named path that does not exist is skipped */
  const char *name_prefix;        /* NULL: "config" */
  const char *compression;        /* NULL: "gzip"; or "none" */
  int level;                      /* compression level; -1: default */
  mevb_progress_cb progress;
  void *progress_user;
} mevb_files_backup_opts;
#define MEVB_FILES_BACKUP_OPTS_INIT {sizeof(mevb_files_backup_opts), NULL, NULL, 0, NULL, 0, 0, 0, NULL, NULL, -1, NULL, NULL}
MEVB_API int mevb_files_backup_opts_init(mevb_files_backup_opts *opts, size_t size);
MEVB_API int mevb_repo_backup_files(mevb_repo *repo, const mevb_files_backup_opts *opts, mevb_backup **out);

/* Called once per restored member: name relative to the target and what was (or, in a
 * dry run, would be) done: "create", "replace", "unchanged" or "conflict". */
typedef void (*mevb_files_entry_cb)(const char *name, const char *action, void *user);

/* Restores into `target` through a staging directory beside it: every member is
 * checked (no absolute names, no "..", no link leading outside, nothing written
 * through a link), and members are moved in only after the whole archive extracted and
 * its checksum matched. Existing files with other content or mode make the restore
 * fail with MEVB_ERR_EXISTS, changing nothing, unless `overwrite`. Sparse members are
 * refused; a member whose size, mode or owner differs from the manifest is
 * MEVB_ERR_CORRUPT. */
typedef struct mevb_files_restore_opts {
  uint32_t struct_size;
  const char *target;             /* required: directory to restore into */
  const char *const *only;        /* NULL: everything; else only members matching a glob */
  size_t only_count;
  int dry_run;                    /* non-zero: check and report, write nothing */
  int overwrite;                  /* non-zero: replace existing different files */
  const char *source_name;        /* with "latest": which prefix's latest backup */
  mevb_files_entry_cb on_entry;   /* optional */
  void *on_entry_user;
  mevb_progress_cb progress;
  void *progress_user;
  int keep_special_modes;         /* non-zero: keep setuid/setgid and world-write bits (dropped by default) */
} mevb_files_restore_opts;
#define MEVB_FILES_RESTORE_OPTS_INIT {sizeof(mevb_files_restore_opts), NULL, NULL, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, 0}
MEVB_API int mevb_files_restore_opts_init(mevb_files_restore_opts *opts, size_t size);
MEVB_API int mevb_repo_restore_files(mevb_repo *repo, const char *id_or_latest, const mevb_files_restore_opts *opts);
/* ---- Redis ------------------------------------------------------------------------- */
/* The password comes from opts->password, else the URL (redis://user:password@host:port),
 * else opts->default_password; it never appears in messages. The library reads no
 * environment for it: the CLI and the Python bindings pass MEVBACKUP_REDIS_PASSWORD as
 * default_password. Plain TCP only (no TLS). */

typedef struct mevb_redis_backup_opts {
  uint32_t struct_size;
  const char *url;                /* redis://[user[:password]@]host[:port] (required) */
  const char *password;           /* NULL: from the URL or default_password */
  const char *mode;               /* NULL or "auto", "bgsave", "replication" */
  const char *name_prefix;        /* NULL: "redis" */
  const char *compression;        /* NULL: "gzip"; or "none" */
  int level;                      /* compression level; -1: default */
  int timeout_seconds;            /* 0: 3600; how long the server may take to save */
  mevb_progress_cb progress;
  void *progress_user;
  int allow_modules;              /* non-zero: keep an RDB holding module data (refused by default) */
  const char *default_password;   /* used when neither password nor the URL gives one */
} mevb_redis_backup_opts;
#define MEVB_REDIS_BACKUP_OPTS_INIT {sizeof(mevb_redis_backup_opts), NULL, NULL, NULL, NULL, NULL, -1, 0, NULL, NULL, 0, NULL}
MEVB_API int mevb_redis_backup_opts_init(mevb_redis_backup_opts *opts, size_t size);

/* Backs up a Redis server (an RDB of every database); *out (if not NULL) describes it. */
MEVB_API int mevb_repo_backup_redis(mevb_repo *repo, const mevb_redis_backup_opts *opts, mevb_backup **out);

typedef struct mevb_redis_restore_opts {
  uint32_t struct_size;
  const char *data_dir;           /* offline restore: the stopped server's data directory */
  const char *rdb_name;           /* NULL: "dump.rdb" */
  const char *const *before;      /* argv of a command run (no shell) before the RDB moves in; NULL: none */
  size_t before_count;
  const char *const *after;       /* argv of a command run after it moved in; NULL: none */
  size_t after_count;
  int target_rdb_version;         /* newest RDB version the target loads; 0: ask the local redis-server */
  const char *source_name;        /* with "latest": which prefix's latest backup */
  const char *redis_url;          /* live restore into a running server instead of data_dir */
  const char *password;           /* for redis_url; NULL: the URL's or default_password */
  int replace;                    /* live: non-empty target allowed, same-name keys replaced */
  int flush;                      /* live: non-empty target emptied (FLUSHALL) after verification */
  mevb_progress_cb progress;
  void *progress_user;
  const char *default_password;   /* for redis_url: used when neither password nor the URL gives one */
} mevb_redis_restore_opts;
#define MEVB_REDIS_RESTORE_OPTS_INIT \
  {sizeof(mevb_redis_restore_opts), NULL, NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL, 0, 0, NULL, NULL, NULL}
MEVB_API int mevb_redis_restore_opts_init(mevb_redis_restore_opts *opts, size_t size);

/* Restores backup `id_or_latest` into opts->data_dir (a stopped server's directory, atomically)
 * or opts->redis_url (a running server, key by key with RESTORE); exactly one must be given. */
MEVB_API int mevb_repo_restore_redis(mevb_repo *repo, const char *id_or_latest, const mevb_redis_restore_opts *opts);
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

/* ---- point-in-time recovery: WAL archive ----------------------------------------- */

/* The body of PostgreSQL's archive_command: stores the WAL file at `path` (segment,
 * TLI.history, .backup or .partial) as <repo>/wal/<timeline>/<name>.gz plus its SHA-256.
 * Idempotent: if the same content is already archived it succeeds and sets
 * *already_archived (may be NULL) to 1; different content fails with MEVB_ERR_EXISTS. */
MEVB_API int mevb_wal_push(mevb_repo *repo, const char *path, int *already_archived);
/* The body of restore_command: writes archived WAL file `name` to `dest` atomically,
 * checking its checksum. Fails with MEVB_ERR_NOT_FOUND when the archive lacks it. */
MEVB_API int mevb_wal_fetch(mevb_repo *repo, const char *name, const char *dest);

/* ---- point-in-time recovery: base backups and restore to a point ------------------ */

typedef struct mevb_basebackup_opts {
  uint32_t struct_size;
  const char *conninfo;     /* libpq conninfo or URI (required); the role needs REPLICATION */
  const char *name_prefix;  /* NULL: "basebackup" (ids like basebackup_YYYYMMDD_HHMMSS) */
  const char *compression;  /* NULL: "gzip"; "zstd" or "none" */
  int level;                /* compression level; -1: default */
  int spread_checkpoint;    /* non-zero: CHECKPOINT 'spread' instead of 'fast' */
  uint32_t max_rate_kbps;   /* 0: unlimited; else 32..1048576 (server-side MAX_RATE) */
  int allow_no_archiving;   /* non-zero: accept a server whose archive_mode is off */
  mevb_progress_cb progress;
  void *progress_user;
} mevb_basebackup_opts;
#define MEVB_BASEBACKUP_OPTS_INIT {sizeof(mevb_basebackup_opts), NULL, NULL, NULL, -1, 0, 0, 0, NULL, NULL}
MEVB_API int mevb_basebackup_opts_init(mevb_basebackup_opts *opts, size_t size);

/* Streams a base backup over the replication protocol (PostgreSQL 15+) into
 * <repo>/basebackup/<id>/ (base.tar.gz, <tablespace oid>.tar.gz, backup_manifest.gz; the
 * set's manifest last). On failure nothing complete-looking remains. */
MEVB_API int mevb_repo_backup_basebackup(mevb_repo *repo, const mevb_basebackup_opts *opts, mevb_backup **out);

typedef struct mevb_pitr_restore_opts {
  uint32_t struct_size;
  const char *data_dir;        /* absent or empty directory (required) */
  const char *target_time;     /* at most one target; all NULL: the end of the archived WAL */
  const char *target_lsn;
  const char *target_name;
  const char *backup_id;       /* NULL: the newest base backup that ended before the target */
  const char *repo_url;        /* the repository, as restore_command will name it */
  const char *mevbackup_path;  /* the CLI restore_command runs; NULL: "mevbackup" */
  const char *restore_command; /* NULL: "<mevbackup_path> wal-fetch --repo <repo_url> %f %p" */
  const char *owner;           /* user owning the files; NULL: owner of data_dir or its parent */
  const char *const *settings; /* "name=value" lines for postgresql.auto.conf */
  size_t settings_count;
  const char *const *tablespace_map; /* "OID=DIR" or "OID=original"; required for every tablespace */
  size_t tablespace_map_count;
  int start;                   /* non-zero: pg_ctl start as the owner and wait for recovery */
  int timeout_seconds;         /* with start; 0: 3600 */
  const char *log_file;        /* with start; NULL: <data_dir>/pitr_recovery.log */
  mevb_progress_cb progress;
  void *progress_user;
  const char *const *wal_fetch_args; /* extra wal-fetch options (never credentials) */
  size_t wal_fetch_args_count;
} mevb_pitr_restore_opts;
#define MEVB_PITR_RESTORE_OPTS_INIT \
  {sizeof(mevb_pitr_restore_opts), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, 0, 0, 0, NULL, NULL, NULL, NULL, 0}
MEVB_API int mevb_pitr_restore_opts_init(mevb_pitr_restore_opts *opts, size_t size);

/* Restores to a point: unpacks the base backup into data_dir, writes recovery.signal and
 * the recovery settings; *out (may be NULL) reports the backup used and how to start
 * the server. MEVB_ERR_NOT_EMPTY for a non-empty data_dir, MEVB_ERR_NOT_FOUND when no
 * base backup precedes the target, MEVB_ERR_RESTORE_FAILED when a started recovery
 * fails (the message names the missing WAL segment when it can tell).
 * mevb_report_status(*out): 1 when the server was started and recovery finished, else 0. */
MEVB_API int mevb_repo_restore_pitr(mevb_repo *repo, const mevb_pitr_restore_opts *opts, mevb_report **out);

/* ---- Retention policy ------------------------------------------------------------- */
/* The policy mevb_repo_prune applies, as a pure function: the caller's items, rules and
 * "now" in, one decision (keep or delete) and its reason per item out. No repository, no
 * clock, no environment. Rules apply per (kind, source) group; a backup is kept when any
 * rule keeps it, and whatever the rules: the keep_last newest usable backups, the newest
 * verified-good one and the newest one that ever verified good are kept; a backup
 * finished after now + future_allowance_seconds is kept and counts for no rule; a failed
 * one is deleted only when its group keeps a usable one; an incomplete object (an
 * artifact without a manifest) is deleted once older than incomplete_grace_seconds. */

typedef struct mevb_retention_opts {
  uint32_t struct_size;
  int keep_last;                    /* >= 1 (default 1) */
  int keep_days;                    /* 0: no age rule */
  int keep_daily;
  int keep_weekly;                  /* ISO weeks */
  int keep_monthly;
  int keep_yearly;
  int64_t incomplete_grace_seconds; /* default 86400 */
  int64_t future_allowance_seconds; /* default 900 */
} mevb_retention_opts;
#define MEVB_RETENTION_OPTS_INIT {sizeof(mevb_retention_opts), 1, 0, 0, 0, 0, 0, 86400, 900}
MEVB_API int mevb_retention_opts_init(mevb_retention_opts *opts, size_t size);

/* What verification says of a backup (its record beside the artifact). */
typedef enum mevb_verified {
  MEVB_VERIFIED_NEVER = 0,   /* never verified */
  MEVB_VERIFIED_OK = 1,      /* the latest verification succeeded */
  MEVB_VERIFIED_FAILED = 2,  /* the latest failed, and none before it succeeded */
  MEVB_VERIFIED_EVER_OK = 3  /* the latest failed, an earlier one succeeded */
} mevb_verified;

/* One backup (or, with `incomplete`, one object without a manifest). Times are RFC 3339
 * with a zone ("2026-11-27T04:27:23Z"), or, when the string is NULL, seconds since the
 * epoch (1970..2200). */
typedef struct mevb_retention_item {
  uint32_t struct_size;    /* sizeof(mevb_retention_item); the same in every item of an array */
  const char *id;          /* required */
  const char *kind;        /* NULL: "" */
  const char *source;      /* NULL: "" */
  const char *created;     /* when the backup started (a manifest's started_at); NULL: created_epoch */
  int64_t created_epoch;
  const char *finished;    /* when it ended; NULL: finished_epoch, where 0 is unknown (created is used) */
  int64_t finished_epoch;
  int verified;            /* a mevb_verified */
  int incomplete;          /* non-zero: no manifest; created is when it was stored, the rest is ignored */
} mevb_retention_item;
#define MEVB_RETENTION_ITEM_INIT {sizeof(mevb_retention_item), NULL, NULL, NULL, NULL, 0, NULL, 0, 0, 0}

/* One decision; lives as long as its result. */
typedef struct mevb_retention_decision {
  uint32_t struct_size;
  const char *id;     /* the item's id */
  int keep;           /* non-zero: keep; 0: delete */
  int incomplete;     /* the item's incomplete flag */
  const char *reason; /* why ("one of the last 3; daily 2026-11-27", "matches no keep rule", ...) */
} mevb_retention_decision;

typedef struct mevb_retention_result mevb_retention_result;

/* Applies `opts` (NULL: the defaults) to items[0..count) at time `now` (RFC 3339; NULL:
 * now_epoch). *out gets one decision per item, in the items' order. items may be NULL when
 * count is 0. MEVB_ERR_INVALID_ARGUMENT for a bad rule (naming it), a bad time or a missing
 * id (naming the item by index and id), or a struct_size this library cannot read. */
MEVB_API int mevb_retention_apply(const mevb_retention_opts *opts, const mevb_retention_item *items, size_t count,
                                  const char *now, int64_t now_epoch, mevb_retention_result **out);
MEVB_API size_t mevb_retention_result_count(const mevb_retention_result *result);
/* Borrowed: lives as long as the result. NULL when index is out of range. */
MEVB_API const mevb_retention_decision *mevb_retention_result_get(const mevb_retention_result *result,
                                                                   size_t index);
MEVB_API void mevb_retention_result_free(mevb_retention_result *result);
/* ---- stream layer: sources, filters, sinks and a run ------------------------------ *
 * Bytes flow source -> filter -> ... -> sink in mevb_pipeline_run. Every handle is the
 * caller's: created by a mevb_*_new_* function, freed by its mevb_*_free. A run consumes
 * its source, filters and sink: they cannot take part in a second run (MEVB_ERR_INVALID_ARGUMENT)
 * but stay to be freed, and an observer filter's results are read after the run. */

typedef struct mevb_source mevb_source;
typedef struct mevb_filter mevb_filter;
typedef struct mevb_sink mevb_sink;

/* Fills up to `cap` bytes of `buf`, sets *got to how many; *got = 0 ends the stream.
 * Returns 0, or a mevb_status (non-zero) to fail the run. Runs on a thread of the run. */
typedef int (*mevb_read_cb)(void *user, void *buf, size_t cap, size_t *got);
/* Called once, when the source is freed. */
typedef void (*mevb_close_cb)(void *user);
/* A source from the caller's callbacks (as libcurl's CURLOPT_READFUNCTION); close may be NULL. */
MEVB_API int mevb_source_new_callbacks(mevb_source **out, mevb_read_cb read, mevb_close_cb close, void *user);
/* A source reading a file descriptor until end of file; close_fd non-zero: closed when freed. */
MEVB_API int mevb_source_new_fd(mevb_source **out, int fd, int close_fd);
/* A source reading a file (opened now: MEVB_ERR_NOT_FOUND when it does not exist). */
MEVB_API int mevb_source_new_path(mevb_source **out, const char *path);
MEVB_API void mevb_source_free(mevb_source *source);

/* Sink callbacks (as libgit2's git_writestream); each returns 0 or a mevb_status.
 * write gets every byte of the stream in order; commit is called once after the last
 * byte when everything before succeeded; abort (may be NULL) when the run failed, was
 * cancelled, or the sink is freed without having been committed. */
typedef int (*mevb_write_cb)(void *user, const void *data, size_t size);
typedef int (*mevb_commit_cb)(void *user);
typedef void (*mevb_abort_cb)(void *user);
MEVB_API int mevb_sink_new_callbacks(mevb_sink **out, mevb_write_cb write, mevb_commit_cb commit, mevb_abort_cb abort,
                                     void *user);
/* A sink writing a file that appears under `path` only on commit (a temporary file in
 * the same directory, fsync, rename, fsync of the directory). An existing file is never
 * replaced unless `replace` is non-zero (the commit fails with MEVB_ERR_EXISTS). */
MEVB_API int mevb_sink_new_path(mevb_sink **out, const char *path, int replace);
MEVB_API void mevb_sink_free(mevb_sink *sink);

typedef enum mevb_compression { MEVB_COMPRESSION_NONE = 0, MEVB_COMPRESSION_GZIP = 1, MEVB_COMPRESSION_ZSTD = 2 } mevb_compression;
/* level -1: the codec's default (gzip 1..12, default 1; zstd 1..19, default 3).
 * NONE gives a filter that passes bytes through unchanged. */
MEVB_API int mevb_filter_new_compressor(mevb_filter **out, int compression, int level);
/* Checks the codec's magic on the first bytes and every checksum (MEVB_ERR_CORRUPT). */
MEVB_API int mevb_filter_new_decompressor(mevb_filter **out, int compression);
/* A filter passing bytes through at most `bytes_per_second` on average (a token bucket;
 * it sleeps, never spins). Label "throttle (N bytes/s)". */
MEVB_API int mevb_filter_new_throttle(mevb_filter **out, uint64_t bytes_per_second);
/* Passes bytes unchanged, counting them and computing their SHA-256. */
MEVB_API int mevb_filter_new_observer(mevb_filter **out);
/* An observer's results: bytes seen, and the lowercase hex SHA-256 ("" until a run that
 * took it ended successfully). 0 / NULL for other filters and NULL. */
MEVB_API uint64_t mevb_filter_observed_bytes(const mevb_filter *filter);
MEVB_API const char *mevb_filter_observed_sha256(const mevb_filter *filter);
MEVB_API void mevb_filter_free(mevb_filter *filter);

/* age (age-encryption.org/v1): files that the stock `age -d` decrypts, and age files
 * (binary or ASCII-armored) that `age` wrote. docs/encryption.md.
 * Encrypts to n >= 1 X25519 recipients ("age1..."); a bad one is MEVB_ERR_INVALID_ARGUMENT
 * naming its position ("recipient 2: ... has a bad checksum"). Label "age encryptor (2 recipients)". */
MEVB_API int mevb_filter_new_age_encrypt(mevb_filter **out, const char *const *recipients, size_t n);
/* Decrypts with the identities in `identities_text`, the CONTENT of an identity file as
 * age-keygen writes it ('#' comments, blank lines, one AGE-SECRET-KEY-1... per line), read
 * during the call only (the keys taken from it are wiped when the filter is freed or the
 * file's header was read). A damaged, truncated or forged file fails
 * with MEVB_ERR_CORRUPT, a file no identity opens with MEVB_ERR_AUTH ("no identity
 * matches"); a chunk's plaintext leaves only after its tag verified. Label "age decryptor". */
MEVB_API int mevb_filter_new_age_decrypt(mevb_filter **out, const char *identities_text);
/* As mevb_filter_new_age_decrypt, the identities read from the file at `path`, which is
 * refused (MEVB_ERR_PERMISSION, naming the file and its mode) when group or others may read
 * or write it, as ssh refuses a private key. */
MEVB_API int mevb_filter_new_age_decrypt_file(mevb_filter **out, const char *path);
/* Key files (docs/encryption.md): a new age identity written to `identity_path` in
 * age-keygen's format (mode 0600), its "age1..." recipient copied into `recipient`
 * (MEVB_AGE_RECIPIENT_SIZE); and a new Ed25519 signing key (PEM PKCS#8, mode 0600) with
 * its verify key (PEM SubjectPublicKeyInfo, mode 0644), its key id (16 hex digits) copied
 * into `key_id` (MEVB_KEY_ID_SIZE). An existing file is never replaced (MEVB_ERR_EXISTS);
 * no secret passes through the caller's memory. */
#define MEVB_KEY_ID_SIZE 17
MEVB_API int mevb_key_generate_identity(const char *identity_path, char *recipient, size_t recipient_size);
MEVB_API int mevb_key_generate_signing(const char *signing_key_path, const char *verify_key_path, char *key_id,
                                       size_t key_id_size);
/* Buffer sizes (with the NUL) for mevb_age_generate. */
#define MEVB_AGE_SECRET_SIZE 75
#define MEVB_AGE_RECIPIENT_SIZE 63
/* A fresh X25519 identity: "AGE-SECRET-KEY-1..." into `secret` and its "age1..." recipient
 * into `recipient`, both NUL-terminated; too small a buffer is MEVB_ERR_INVALID_ARGUMENT. */
MEVB_API int mevb_age_generate(char *secret, size_t secret_size, char *recipient, size_t recipient_size);

/* Asked now and then during a run (at least every 50 ms while it waits for data and after
 * each chunk); non-zero cancels it (MEVB_ERR_CANCELLED). */
typedef int (*mevb_cancel_cb)(void *user);

typedef struct mevb_run_opts {
  uint32_t struct_size;
  mevb_progress_cb progress; /* optional; about every 200 ms and at the end; non-zero cancels */
  void *progress_user;
  mevb_log_cb log;           /* optional: the run's outcome */
  void *log_user;
  mevb_cancel_cb cancel;     /* optional */
  void *cancel_user;
  const char *stage;         /* names the run in progress reports and errors; NULL: "pipeline" */
  size_t chunk_size;         /* bytes per buffer between stages; 0: 256 KiB */
} mevb_run_opts;
#define MEVB_RUN_OPTS_INIT {sizeof(mevb_run_opts), NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0}
MEVB_API int mevb_run_opts_init(mevb_run_opts *opts, size_t size);

/* Runs source -> filters[0] -> ... -> filters[n-1] -> sink (filters may be NULL when n is 0;
 * opts may be NULL). The sink is committed only when every stage succeeded; otherwise it
 * is aborted and the status and message name the failing stage ("source (callbacks)",
 * "filter 1 (zstd decompressor)", "sink (file /x)"). */
MEVB_API int mevb_pipeline_run(mevb_source *source, mevb_filter *const *filters, size_t n, mevb_sink *sink,
                               const mevb_run_opts *opts);

/* ---- service endpoints: the backups' and restores' own sources and sinks ---------- *
 * The sources and sinks the canned backups and restores are built of, to run in a
 * pipeline of one's own. Each checks its service when created (connects, validates) and
 * fails there; the stage's label names the service ("source (pg_dump mydb)"), never a
 * password. A sink commits the whole restore (a database swapped into place, files moved
 * in) only when the run succeeded; aborted or freed uncommitted, it leaves its target as
 * it was. */

typedef struct mevb_pg_source_opts {
  uint32_t struct_size;
  const char *conninfo;            /* libpq conninfo or URI (required); PG* variables apply */
  const char *pg_dump_path;        /* NULL: newest installed pg_dump able to dump the server */
  const char *const *pg_dump_args; /* NULL: "--no-owner --no-acl"; else replaces them */
  size_t pg_dump_args_count;
} mevb_pg_source_opts;
#define MEVB_PG_SOURCE_OPTS_INIT {sizeof(mevb_pg_source_opts), NULL, NULL, NULL, 0}
MEVB_API int mevb_pg_source_opts_init(mevb_pg_source_opts *opts, size_t size);
/* pg_dump -Fc of one REPEATABLE READ snapshot of the database (a custom-format dump,
 * uncompressed). The stream fails (MEVB_ERR_DUMP_FAILED, with pg_dump's message) when
 * pg_dump does; it ends only after pg_dump exited 0. */
MEVB_API int mevb_source_new_pg_dump(mevb_source **out, const mevb_pg_source_opts *opts);

typedef struct mevb_basebackup_source_opts {
  uint32_t struct_size;
  const char *conninfo;            /* libpq conninfo or URI (required); the role needs REPLICATION */
  int fast_checkpoint;             /* non-zero (default): CHECKPOINT 'fast'; 0: 'spread' */
  uint32_t max_rate_kbps;          /* 0: unlimited; else the server's MAX_RATE, 32..1048576 */
  int include_wal;                 /* non-zero (default): the backup's WAL in pg_wal/ of the tar */
} mevb_basebackup_source_opts;
#define MEVB_BASEBACKUP_SOURCE_OPTS_INIT {sizeof(mevb_basebackup_source_opts), NULL, 1, 0, 1}
MEVB_API int mevb_basebackup_source_opts_init(mevb_basebackup_source_opts *opts, size_t size);
/* A base backup over the replication protocol (PostgreSQL 15+, no pg_basebackup) as one
 * uncompressed tar of the data directory, as `pg_basebackup -D - -Ft -X fetch` writes it:
 * the server's backup_manifest is its last member (pg_verifybackup checks the extracted
 * directory) and, with include_wal, the WAL from start to end is in pg_wal/, so the
 * extracted directory starts a consistent server on its own. Connects and starts the
 * backup now (after its checkpoint); MEVB_ERR_UNSUPPORTED for an older server, one with
 * tablespaces beyond the main one (mevb_repo_backup_basebackup stores those), or, without
 * include_wal, one whose archive_mode is off. The stream fails with MEVB_ERR_DUMP_FAILED
 * when the server ends the backup with an error; it ends only after the server confirmed
 * the backup's end. Label "source (base backup of host:port)". */
MEVB_API int mevb_source_new_basebackup(mevb_source **out, const mevb_basebackup_source_opts *opts);

typedef struct mevb_pg_sink_opts {
  uint32_t struct_size;
  const char *conninfo;               /* names the target database (required) */
  const char *dbname;                 /* NULL: the database conninfo names; else this one */
  int clean;                          /* non-zero: replace a non-empty target */
  const char *pg_restore_path;        /* NULL: newest installed pg_restore */
  const char *const *pg_restore_args; /* NULL: "--no-owner --no-acl" */
  size_t pg_restore_args_count;
  int jobs;                           /* > 1: pg_restore --jobs, staging the dump in a temporary file */
  const char *staging_dir;            /* where that file goes; NULL: $TMPDIR or /tmp */
} mevb_pg_sink_opts;
#define MEVB_PG_SINK_OPTS_INIT {sizeof(mevb_pg_sink_opts), NULL, NULL, 0, NULL, NULL, 0, 1, NULL}
MEVB_API int mevb_pg_sink_opts_init(mevb_pg_sink_opts *opts, size_t size);
/* pg_restore of a custom-format dump into a new staging database, created now (the target
 * must be empty or absent unless clean: MEVB_ERR_NOT_EMPTY). On commit the staging
 * database replaces the target; on abort, or freed uncommitted, it is dropped and the
 * target is as it was. The database gets the server's default encoding and locale. */
MEVB_API int mevb_sink_new_pg_restore(mevb_sink **out, const mevb_pg_sink_opts *opts);

typedef struct mevb_files_source_opts {
  uint32_t struct_size;
  const char *base_dir;           /* NULL: the current directory */
  const char *const *paths;       /* required: files, directories, globs relative to base_dir */
  size_t paths_count;
  const char *const *excludes;    /* more glob patterns to leave out ("dir/" = a directory) */
  size_t excludes_count;
  int include_secrets;            /* non-zero: drop the built-in secret patterns */
  int ignore_missing;             /* non-zero: a named path that does not exist is skipped */
} mevb_files_source_opts;
#define MEVB_FILES_SOURCE_OPTS_INIT {sizeof(mevb_files_source_opts), NULL, NULL, 0, NULL, 0, 0, 0}
MEVB_API int mevb_files_source_opts_init(mevb_files_source_opts *opts, size_t size);
/* The files as a pax tar (uncompressed), as mevb_repo_backup_files stores them; the paths
 * are collected now (MEVB_ERR_NOT_FOUND naming a missing one). */
MEVB_API int mevb_source_new_files_tar(mevb_source **out, const mevb_files_source_opts *opts);

typedef struct mevb_extract_sink_opts {
  uint32_t struct_size;
  const char *target;             /* required: directory to extract into (its parent must exist) */
  const char *const *only;        /* NULL: everything; else only members matching a glob */
  size_t only_count;
  int overwrite;                  /* non-zero: replace existing different files */
  int keep_special_modes;         /* non-zero: keep setuid/setgid and world-write bits */
} mevb_extract_sink_opts;
#define MEVB_EXTRACT_SINK_OPTS_INIT {sizeof(mevb_extract_sink_opts), NULL, NULL, 0, 0, 0}
MEVB_API int mevb_extract_sink_opts_init(mevb_extract_sink_opts *opts, size_t size);
/* A safe extract of a tar stream into `target`, as mevb_repo_restore_files does it: members
 * are checked and extracted into a staging directory beside the target as they arrive (an
 * absolute name, "..", a link leading outside or a special file fails the run with
 * MEVB_ERR_RESTORE_FAILED naming the member); only on commit are they moved in (existing
 * different files: MEVB_ERR_EXISTS unless overwrite). Aborted, nothing in target changed. */
MEVB_API int mevb_sink_new_extract(mevb_sink **out, const mevb_extract_sink_opts *opts);

typedef struct mevb_redis_source_opts {
  uint32_t struct_size;
  const char *url;                /* redis://[user[:password]@]host[:port] (required) */
  const char *password;           /* NULL: from the URL or default_password */
  const char *default_password;   /* used when neither password nor the URL gives one */
  const char *mode;               /* NULL or "auto", "bgsave", "replication" */
  int timeout_seconds;            /* 0: 3600; how long the server may take to save */
} mevb_redis_source_opts;
#define MEVB_REDIS_SOURCE_OPTS_INIT {sizeof(mevb_redis_source_opts), NULL, NULL, NULL, NULL, 0}
MEVB_API int mevb_redis_source_opts_init(mevb_redis_source_opts *opts, size_t size);
/* The server's RDB (every database) by BGSAVE or replication; connects and starts the
 * snapshot now. The bytes are passed on as the server sends them. */
MEVB_API int mevb_source_new_redis_rdb(mevb_source **out, const mevb_redis_source_opts *opts);

typedef struct mevb_redis_offline_sink_opts {
  uint32_t struct_size;
  const char *data_dir;           /* required: the stopped server's data directory */
  const char *rdb_name;           /* NULL: "dump.rdb" */
  const char *const *before;      /* argv of a command run (no shell) before the RDB moves in; NULL: none */
  size_t before_count;
  const char *const *after;       /* argv of a command run after it moved in; NULL: none */
  size_t after_count;
  int target_rdb_version;         /* newest RDB version the target loads; 0: ask the local redis-server */
} mevb_redis_offline_sink_opts;
#define MEVB_REDIS_OFFLINE_SINK_OPTS_INIT {sizeof(mevb_redis_offline_sink_opts), NULL, NULL, NULL, 0, NULL, 0, 0}
MEVB_API int mevb_redis_offline_sink_opts_init(mevb_redis_offline_sink_opts *opts, size_t size);
/* An RDB written into <data_dir>/<rdb_name> atomically on commit: the stream must parse as
 * an RDB (CRC-64 included: MEVB_ERR_CORRUPT) of a version the target loads
 * (MEVB_ERR_VERSION_MISMATCH); until the rename the data directory is as it was. */
MEVB_API int mevb_sink_new_redis_offline(mevb_sink **out, const mevb_redis_offline_sink_opts *opts);

typedef struct mevb_redis_live_sink_opts {
  uint32_t struct_size;
  const char *url;                /* redis://[user[:password]@]host[:port] of the running target (required) */
  const char *password;           /* NULL: from the URL or default_password */
  const char *default_password;   /* used when neither password nor the URL gives one */
  int replace;                    /* non-zero: a non-empty target allowed, same-name keys replaced */
} mevb_redis_live_sink_opts;
#define MEVB_REDIS_LIVE_SINK_OPTS_INIT {sizeof(mevb_redis_live_sink_opts), NULL, NULL, NULL, 0}
MEVB_API int mevb_redis_live_sink_opts_init(mevb_redis_live_sink_opts *opts, size_t size);
/* Every key of an RDB stream into a running server as it arrives (RESTORE ... ABSTTL;
 * keys already expired are skipped). Connects now; a target holding keys is
 * MEVB_ERR_NOT_EMPTY unless replace. Not atomic: a run failing midway leaves the keys
 * restored so far (the message says how many). */
MEVB_API int mevb_sink_new_redis_live(mevb_sink **out, const mevb_redis_live_sink_opts *opts);

/* ---- storage: where artifacts live (the Uploader) --------------------------------- *
 * Keys are relative, '/'-separated, without empty, "." or ".." components. A storage
 * may be freed before the sinks and sources it gave: they keep what they need. */

typedef struct mevb_storage mevb_storage;
/* Opens a local directory (a path or file://path) or "s3://bucket[/prefix]". Only the
 * storage fields of opts are used (log, S3 endpoint, credentials, ...); opts may be NULL. */
MEVB_API int mevb_storage_open(mevb_storage **out, const char *url, const mevb_repo_opts *opts);
MEVB_API void mevb_storage_free(mevb_storage *storage);
/* A sink publishing `key` atomically on commit; the commit fails with MEVB_ERR_EXISTS
 * when the key exists (nothing is overwritten). */
MEVB_API int mevb_storage_put(mevb_storage *storage, const char *key, mevb_sink **out);
/* A source reading object `key` (MEVB_ERR_NOT_FOUND when missing). */
MEVB_API int mevb_storage_get(mevb_storage *storage, const char *key, mevb_source **out);

typedef struct mevb_object_info {
  uint32_t struct_size;
  uint64_t size;  /* bytes */
  int64_t mtime;  /* seconds since the epoch: when the object was stored */
} mevb_object_info;
#define MEVB_OBJECT_INFO_INIT {sizeof(mevb_object_info), 0, 0}
/* Fills *info (its struct_size set by the caller); MEVB_ERR_NOT_FOUND when `key` is missing. */
MEVB_API int mevb_storage_stat(mevb_storage *storage, const char *key, mevb_object_info *info);
/* Removing a missing key is not an error. */
MEVB_API int mevb_storage_remove(mevb_storage *storage, const char *key);

typedef struct mevb_object_list mevb_object_list;
/* Every complete object whose key starts with `prefix` (NULL or "": all), sorted by key. */
MEVB_API int mevb_storage_list(mevb_storage *storage, const char *prefix, mevb_object_list **out);
MEVB_API size_t mevb_object_list_count(const mevb_object_list *list);
/* NULL / 0 when index is out of range; the key lives as long as the list. */
MEVB_API const char *mevb_object_list_key(const mevb_object_list *list, size_t index);
MEVB_API uint64_t mevb_object_list_size(const mevb_object_list *list, size_t index);
MEVB_API int64_t mevb_object_list_mtime(const mevb_object_list *list, size_t index);
MEVB_API void mevb_object_list_free(mevb_object_list *list);

/* ---- artifacts of any kind: any source in, any sink out --------------------------- */

typedef struct mevb_artifact_opts {
  uint32_t struct_size;
  const char *kind;        /* required: a built-in kind or the user's own ("export"):
                              [a-z][a-z0-9_-]*, stored in the directory of that name */
  const char *name_prefix; /* required: ids are <name_prefix>_YYYYMMDD_HHMMSS; the source name */
  int compression;         /* a mevb_compression; default GZIP */
  int level;               /* -1: the codec's default */
  const char *format;      /* recorded in the manifest; NULL: "raw" */
  const char *extension;   /* before the compression suffix, e.g. ".json"; NULL: "" */
} mevb_artifact_opts;
#define MEVB_ARTIFACT_OPTS_INIT {sizeof(mevb_artifact_opts), NULL, NULL, MEVB_COMPRESSION_GZIP, -1, NULL, NULL}
MEVB_API int mevb_artifact_opts_init(mevb_artifact_opts *opts, size_t size);

/* Stores the bytes of `source` as a new backup the way the built-in backups are stored
 * (compressed, SHA-256 of stored and payload bytes, published atomically, its manifest
 * last), consuming the source. *out (may be NULL) describes it. Listed, verified, pruned
 * and synced like any backup. run may be NULL; mevb_repo_cancel cancels it too. */
MEVB_API int mevb_repo_put_artifact(mevb_repo *repo, mevb_source *source, const mevb_artifact_opts *opts,
                                    const mevb_run_opts *run, mevb_backup **out);
/* Streams the payload (decompressed) of `backup` into `sink`, consuming it; the sink is
 * committed only when the stored bytes' size and SHA-256 match the manifest
 * (MEVB_ERR_CORRUPT otherwise, and the sink is aborted). */
MEVB_API int mevb_repo_get_artifact(mevb_repo *repo, const mevb_backup *backup, mevb_sink *sink,
                                    const mevb_run_opts *run);

/* ---- a whole-service plan: backup sets, full restore (docs/plan.md) ----------------- */

typedef struct mevb_plan mevb_plan;

/* Reads and checks a plan file (TOML). MEVB_ERR_INVALID_ARGUMENT names the file, line,
 * column and key of an unknown key, a wrong type, a missing key or a secret written into
 * the plan; MEVB_ERR_NOT_FOUND when the file is missing. opts (may be NULL) are what every
 * repository of the plan is opened with besides the plan's own storage options and keys:
 * the log, stall timeout, lock timing, S3 credentials and retries, max_rate. The plan's
 * key files are read by each operation, not here. */
MEVB_API int mevb_plan_load(mevb_plan **out, const char *path, const mevb_repo_opts *opts);
MEVB_API void mevb_plan_free(mevb_plan *plan);
/* Asks the operation running on `plan` to stop (a hook running is killed); any thread. */
MEVB_API void mevb_plan_cancel(mevb_plan *plan);
MEVB_API const char *mevb_plan_name(const mevb_plan *plan); /* [plan] name, else the file's stem */

typedef struct mevb_plan_run_opts {
  uint32_t struct_size;
  mevb_progress_cb progress; /* optional: each member's backup or restore */
  void *progress_user;
  const char *set;           /* restore: a set id, or NULL / "latest": the newest complete set */
  int dry_run;               /* restore: check the set and list the steps, change nothing */
  const char *from;          /* restore, drill: read from this location (a copy's) instead of the repository */
  const char *report_dir;    /* drill: write the report files there (NULL: none) */
  const char *target_time;   /* restore: PostgreSQL to this moment through each [pitr] source's base
                              * backup and WAL ("2026-11-27 07:50:00+00"), the other members from the
                              * newest set that finished at or before it; NULL: no point in time */
  const char *mevbackup_path; /* restore: the program restore_command runs (wal-fetch); NULL: "mevbackup" */
} mevb_plan_run_opts;
#define MEVB_PLAN_RUN_OPTS_INIT {sizeof(mevb_plan_run_opts), NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL}
MEVB_API int mevb_plan_run_opts_init(mevb_plan_run_opts *opts, size_t size);

/* One step of a plan's report: a hook, a source's backup or restore, a copy, retention. */
typedef struct mevb_plan_step {
  uint32_t struct_size;
  const char *name;       /* "hook before_restore[1]", "postgres.main", "set", "copy[1] sync", "retention" */
  const char *status;     /* "ok", "failed", "skipped", "planned" (dry run) */
  const char *message;
  const char *started_at; /* RFC 3339 UTC */
  double seconds;
} mevb_plan_step;
#define MEVB_PLAN_STEP_INIT {sizeof(mevb_plan_step), NULL, NULL, NULL, NULL, 0}

/* Backs up every source of the plan and writes a backup set (a manifest naming each
 * member, written last), then syncs the copies and applies the plan's retention per set.
 * Returns the first failure's status (a failed member: no set is written, the others'
 * backups stay); *out (may be NULL) gets the report also then: mevb_report_json (fields:
 * operation, plan, set, ok, status, message, seconds, steps), mevb_report_text (the
 * one-line outcome), mevb_report_status (0 ok, 1 failed) and the steps. */
MEVB_API int mevb_plan_run(mevb_plan *plan, const mevb_plan_run_opts *opts, mevb_report **out);
/* Restores a backup set in order: before_restore hooks, PostgreSQL (replacing the
 * database), Redis (live, flushed first), files (into their base, replacing those that
 * differ), after_restore hooks. The set and its members are checked before anything is
 * touched; the first failing step stops it, and the report's message says which sources
 * were restored and which not. */
MEVB_API int mevb_plan_restore(mevb_plan *plan, const mevb_plan_run_opts *opts, mevb_report **out);
/* A disaster-recovery drill: the backup set (opts->set, default the newest complete one)
 * restored into the plan's [drill] scratch targets (a database on the drill server, a
 * throwaway redis-server on a free loopback port, a scratch directory) and checked there:
 * table rows against the manifest and verify_queries, Redis key counts per database and
 * a sample of types, TTLs and values against the RDB, every file's SHA-256. Scratch
 * targets are removed at the end, and those a killed drill left are removed first.
 * MEVB_OK only when every check passed, the drill took no longer than the plan's RTO and
 * the set is no older than its RPO. The report (also on failure) adds to the JSON
 * rto_seconds, rpo_seconds, set_started_at, set_age_seconds, rto_ok, rpo_ok, checks_ok
 * and, with opts->report_dir, report_files {json, summary, prometheus, html}: that
 * directory gets drill-<time>.json, latest.json, summary.txt, report.html and
 * mevbackup_drill.prom (node_exporter's textfile collector). */
MEVB_API int mevb_plan_drill(mevb_plan *plan, const mevb_plan_run_opts *opts, mevb_report **out);
/* Opens a repository of the plan as a mevb_repo (free it with mevb_repo_free): 0 is
 * [repository], 1..N the [[copy]] tables in order, each with its own storage options
 * and keys and the mevb_repo_opts the plan was loaded with. MEVB_ERR_NOT_FOUND past the
 * last copy. */
MEVB_API int mevb_plan_open_repo(mevb_plan *plan, size_t index, mevb_repo **out);
/* The backup sets in `repo` (of the plan named `plan_name`; NULL: every plan), oldest
 * first, each checked against its members, as a report: JSON {"sets": [{"id", "plan",
 * "started_at", "finished_at", "complete", "problem", "members": [{"source", "kind", "id",
 * "path", "sha256", "source_name"}]}]}, text one line per set, status the number of
 * incomplete sets. */
MEVB_API int mevb_repo_list_sets(mevb_repo *repo, const char *plan_name, mevb_report **out);

/* The steps of a plan's report (0 for other reports); step fields live as long as `r`. */
MEVB_API size_t mevb_report_step_count(const mevb_report *r);
MEVB_API int mevb_report_step(const mevb_report *r, size_t index, mevb_plan_step *out);

#ifdef __cplusplus
}
#endif

#endif /* MEVBACKUP_H */
