"""Python bindings of libmevbackup, through ctypes (no compiled extension).

    import mevbackup
    with mevbackup.Repository("/app/backups") as repo:
        b = repo.backup_postgres(dbname="host=127.0.0.1 dbname=mev_protection")
        repo.restore_postgres("latest", dbname="dbname=mev_protection_copy")

The shared library is found through MEVBACKUP_LIBRARY (a path), then the build tree
next to these sources, then the system's library path. Failures raise
mevbackup.Error subclasses carrying the library's message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Type, TypeVar, Union

__all__ = [
    "Repository", "Backup", "Progress", "Report", "FileAction", "Error", "library_version", "__version__",
    "InvalidArgument", "OutOfMemory", "InternalError", "IOError", "NotFound", "AlreadyExists",
    "Cancelled", "ConnectionFailed", "AuthenticationFailed", "DumpFailed", "RestoreFailed",
    "Corrupt", "VersionMismatch", "NotEmpty", "NoSpace", "PermissionDenied", "Unsupported",
    "Locked",
    "RetentionPolicy", "RetentionItem", "Decision",
    "Source", "Sink", "Filter", "Storage", "ObjectInfo", "pipeline_run",
    "age_generate",
    "Plan", "PlanReport", "PlanStep", "BackupSet", "SetMember",
]

# ---- errors --------------------------------------------------------------------------


class Error(Exception):
    """A failure reported by libmevbackup: `code` (mevb_status), `message`, `retriable`."""

    code = -1
    # The whole report of the plan operation that failed (Plan.run, Plan.restore), if it made one.
    report: Optional["PlanReport"] = None

    def __init__(self, message: str, code: Optional[int] = None, retriable: bool = False):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retriable = retriable


def _error_class(name: str, code: int, doc: str) -> Type[Error]:
    return type(name, (Error,), {"code": code, "__doc__": doc})


InvalidArgument = _error_class("InvalidArgument", 1, "Bad input: an option, a name, a connection string.")
OutOfMemory = _error_class("OutOfMemory", 2, "The library ran out of memory.")
InternalError = _error_class("InternalError", 3, "A bug in the library.")
IOError = _error_class("IOError", 4, "Reading or writing failed.")  # noqa: A001 - mirrors MEVB_ERR_IO
NotFound = _error_class("NotFound", 5, "A backup, a file, a database or a program does not exist.")
AlreadyExists = _error_class("AlreadyExists", 6, "Something would have been overwritten.")
Cancelled = _error_class("Cancelled", 7, "The operation was cancelled.")
ConnectionFailed = _error_class("ConnectionFailed", 8, "A server could not be reached.")
AuthenticationFailed = _error_class("AuthenticationFailed", 9, "A server refused the credentials.")
DumpFailed = _error_class("DumpFailed", 10, "The dump program failed.")
RestoreFailed = _error_class("RestoreFailed", 11, "The restore program failed.")
Corrupt = _error_class("Corrupt", 12, "Stored data does not match its manifest.")
VersionMismatch = _error_class("VersionMismatch", 13, "Tool and server versions do not fit.")
NotEmpty = _error_class("NotEmpty", 14, "The restore target is not empty (use clean=True).")
NoSpace = _error_class("NoSpace", 15, "A disk is full.")
PermissionDenied = _error_class("PermissionDenied", 16, "Permission denied.")
Unsupported = _error_class("Unsupported", 17, "Not supported (yet).")
Locked = _error_class("Locked", 18, "The repository is locked by another run (a prune, or a backup during a prune).")

_ERRORS = {c.code: c for c in (
    InvalidArgument, OutOfMemory, InternalError, IOError, NotFound, AlreadyExists, Cancelled,
    ConnectionFailed, AuthenticationFailed, DumpFailed, RestoreFailed, Corrupt, VersionMismatch,
    NotEmpty, NoSpace, PermissionDenied, Unsupported, Locked)}

# ---- C declarations ----------------------------------------------------------------


class _Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char_p), ("retriable", ctypes.c_int)]


class _Progress(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("stage", ctypes.c_char_p), ("bytes_in", ctypes.c_uint64),
                ("bytes_out", ctypes.c_uint64), ("elapsed_seconds", ctypes.c_double), ("done", ctypes.c_int)]


_PROGRESS_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_Progress), ctypes.c_void_p)
_LOG_CB = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class _RepoOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("log", _LOG_CB), ("log_user", ctypes.c_void_p),
                # S3-compatible object storage
                ("storage_class", ctypes.c_char_p), ("endpoint_url", ctypes.c_char_p), ("region", ctypes.c_char_p),
                ("ca_bundle", ctypes.c_char_p), ("no_verify_tls", ctypes.c_int), ("path_style", ctypes.c_int),
                ("access_key_id", ctypes.c_char_p), ("secret_access_key", ctypes.c_char_p),
                ("session_token", ctypes.c_char_p), ("sse", ctypes.c_char_p), ("sse_kms_key_id", ctypes.c_char_p),
                ("part_size", ctypes.c_uint64), ("concurrency", ctypes.c_int), ("max_attempts", ctypes.c_int),
                ("unsigned_payload", ctypes.c_int),
                ("stall_timeout_seconds", ctypes.c_int64),
                # the repository lock; S3 retries
                ("lock_ttl_seconds", ctypes.c_int64), ("lock_refresh_seconds", ctypes.c_int64),
                ("lock_wait_seconds", ctypes.c_int64), ("no_lock", ctypes.c_int),
                ("s3_retry_base_ms", ctypes.c_int64),
                # encryption at rest (age)
                ("recipients", ctypes.POINTER(ctypes.c_char_p)), ("recipients_count", ctypes.c_size_t),
                ("recipients_file", ctypes.c_char_p),
                ("identity_files", ctypes.POINTER(ctypes.c_char_p)), ("identity_files_count", ctypes.c_size_t),
                ("passphrase_file", ctypes.c_char_p),
                # signed manifests (Ed25519)
                ("signing_key_file", ctypes.c_char_p),
                ("verify_key_files", ctypes.POINTER(ctypes.c_char_p)), ("verify_key_files_count", ctypes.c_size_t),
                ("max_rate", ctypes.c_uint64), ("profile", ctypes.c_char_p)]


class _PgBackupOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("conninfo", ctypes.c_char_p), ("pg_dump_path", ctypes.c_char_p),
                ("pg_dump_args", ctypes.POINTER(ctypes.c_char_p)), ("pg_dump_args_count", ctypes.c_size_t),
                ("name_prefix", ctypes.c_char_p), ("compression", ctypes.c_char_p), ("level", ctypes.c_int),
                ("exact_count_max_bytes", ctypes.c_uint64), ("progress", _PROGRESS_CB),
                ("progress_user", ctypes.c_void_p)]


class _PgRestoreOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("conninfo", ctypes.c_char_p), ("clean", ctypes.c_int),
                ("source_name", ctypes.c_char_p), ("pg_restore_path", ctypes.c_char_p),
                ("pg_restore_args", ctypes.POINTER(ctypes.c_char_p)), ("pg_restore_args_count", ctypes.c_size_t),
                ("progress", _PROGRESS_CB), ("progress_user", ctypes.c_void_p), ("jobs", ctypes.c_int),
                ("staging_dir", ctypes.c_char_p), ("allow_property_loss", ctypes.c_int), ("stage", ctypes.c_int)]


class _PruneOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("keep_last", ctypes.c_int), ("keep_days", ctypes.c_int),
                ("keep_daily", ctypes.c_int), ("keep_weekly", ctypes.c_int), ("keep_monthly", ctypes.c_int),
                ("keep_yearly", ctypes.c_int), ("incomplete_grace_seconds", ctypes.c_int64),
                ("kind", ctypes.c_char_p), ("source", ctypes.c_char_p), ("dry_run", ctypes.c_int),
                ("now", ctypes.c_char_p)]


class _VerifyOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("kind", ctypes.c_char_p), ("source", ctypes.c_char_p),
                ("restore_test_conninfo", ctypes.c_char_p), ("queries", ctypes.POINTER(ctypes.c_char_p)),
                ("queries_count", ctypes.c_size_t), ("no_record", ctypes.c_int), ("progress", _PROGRESS_CB),
                ("progress_user", ctypes.c_void_p)]


class _CheckOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("kind", ctypes.c_char_p), ("max_age_seconds", ctypes.c_int64),
                ("now", ctypes.c_char_p), ("prometheus_file", ctypes.c_char_p), ("warning_fraction", ctypes.c_double),
                ("warning_seconds", ctypes.c_int64), ("critical_seconds", ctypes.c_int64),
                ("future_skew_seconds", ctypes.c_int64)]


class _AdoptOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("dry_run", ctypes.c_int), ("pg_restore_path", ctypes.c_char_p)]


def _candidates() -> Iterable[str]:
    env = os.environ.get("MEVBACKUP_LIBRARY")
    if env:
        yield env
        return
    root = Path(__file__).resolve().parents[3]  # bindings/python/mevbackup -> source root
    for build in ("build", "build-meson", "builddir"):
        yield str(root / build / "libmevbackup.so")
    found = ctypes.util.find_library("mevbackup")
    yield found or "libmevbackup.so.0"


def _load() -> ctypes.CDLL:
    tried = []
    for path in _candidates():
        if "/" in path and not os.path.exists(path):
            tried.append(path)
            continue
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path} ({e})")
    raise ImportError("libmevbackup not found; set MEVBACKUP_LIBRARY. Tried: " + ", ".join(tried))


_lib = _load()
_p = ctypes.c_void_p


def _check(rc: int, func: Any, args: Any) -> int:
    if rc != 0:
        err = _lib.mevb_error_last().contents
        message = err.message.decode("utf-8", "replace") if err.message else ""
        cls = _ERRORS.get(rc, Error)
        raise cls(message or _lib.mevb_status_str(rc).decode(), rc, bool(err.retriable))
    return rc


def _declare(name: str, restype: Any, argtypes: Sequence[Any], check: bool = False) -> None:
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    if check:
        f.errcheck = _check


_declare("mevb_status_str", ctypes.c_char_p, [ctypes.c_int])
_declare("mevb_error_last", ctypes.POINTER(_Error), [])
_declare("mevb_version", ctypes.c_char_p, [])
_declare("mevb_version_number", ctypes.c_uint, [])
_declare("mevb_repo_open", ctypes.c_int, [ctypes.POINTER(_p), ctypes.c_char_p, ctypes.POINTER(_RepoOpts)], True)
_declare("mevb_repo_free", None, [_p])
_declare("mevb_repo_cancel", None, [_p])
for _name in ("id", "kind", "path", "sha256", "created_at", "compression", "source_name", "manifest_json",
              "signature"):
    _declare(f"mevb_backup_{_name}", ctypes.c_char_p, [_p])
_declare("mevb_backup_size", ctypes.c_uint64, [_p])
_declare("mevb_backup_encrypted", ctypes.c_int, [_p])
_declare("mevb_repo_rekey", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_p)],
         True)
_declare("mevb_parse_rate", ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint64)], True)
_declare("mevb_backup_free", None, [_p])
_declare("mevb_repo_list", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.POINTER(_p)], True)
_declare("mevb_backup_list_count", ctypes.c_size_t, [_p])
_declare("mevb_backup_list_get", _p, [_p, ctypes.c_size_t])
_declare("mevb_backup_list_free", None, [_p])
_declare("mevb_repo_find", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_p)],
         True)
_declare("mevb_protect_secrets_in_memory", ctypes.c_int, [], True)
_declare("mevb_pg_backup_opts_init", ctypes.c_int, [ctypes.POINTER(_PgBackupOpts), ctypes.c_size_t], True)
_declare("mevb_repo_backup_postgres", ctypes.c_int, [_p, ctypes.POINTER(_PgBackupOpts), ctypes.POINTER(_p)], True)
_declare("mevb_pg_restore_opts_init", ctypes.c_int, [ctypes.POINTER(_PgRestoreOpts), ctypes.c_size_t], True)
_declare("mevb_repo_restore_postgres", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.POINTER(_PgRestoreOpts)], True)

_declare("mevb_report_json", ctypes.c_char_p, [_p])
_declare("mevb_report_text", ctypes.c_char_p, [_p])
_declare("mevb_report_status", ctypes.c_int, [_p])
_declare("mevb_report_free", None, [_p])
_declare("mevb_prune_opts_init", ctypes.c_int, [ctypes.POINTER(_PruneOpts), ctypes.c_size_t], True)
_declare("mevb_repo_prune", ctypes.c_int, [_p, ctypes.POINTER(_PruneOpts), ctypes.POINTER(_p)], True)
_declare("mevb_verify_opts_init", ctypes.c_int, [ctypes.POINTER(_VerifyOpts), ctypes.c_size_t], True)
_declare("mevb_repo_verify", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.POINTER(_VerifyOpts), ctypes.POINTER(_p)],
         True)
_declare("mevb_check_opts_init", ctypes.c_int, [ctypes.POINTER(_CheckOpts), ctypes.c_size_t], True)
_declare("mevb_repo_check", ctypes.c_int, [_p, ctypes.POINTER(_CheckOpts), ctypes.POINTER(_p)], True)
_declare("mevb_adopt_opts_init", ctypes.c_int, [ctypes.POINTER(_AdoptOpts), ctypes.c_size_t], True)
_declare("mevb_repo_adopt", ctypes.c_int, [_p, ctypes.POINTER(_AdoptOpts), ctypes.POINTER(_p)], True)
# ---- configuration files (C declarations) ----------------------------------------------

_FILES_ENTRY_CB = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)


class _FilesBackupOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("base_dir", ctypes.c_char_p),
                ("paths", ctypes.POINTER(ctypes.c_char_p)), ("paths_count", ctypes.c_size_t),
                ("excludes", ctypes.POINTER(ctypes.c_char_p)), ("excludes_count", ctypes.c_size_t),
                ("include_secrets", ctypes.c_int), ("ignore_missing", ctypes.c_int),
                ("name_prefix", ctypes.c_char_p), ("compression", ctypes.c_char_p), ("level", ctypes.c_int),
                ("progress", _PROGRESS_CB), ("progress_user", ctypes.c_void_p)]


class _FilesRestoreOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("target", ctypes.c_char_p),
                ("only", ctypes.POINTER(ctypes.c_char_p)), ("only_count", ctypes.c_size_t),
                ("dry_run", ctypes.c_int), ("overwrite", ctypes.c_int), ("source_name", ctypes.c_char_p),
                ("on_entry", _FILES_ENTRY_CB), ("on_entry_user", ctypes.c_void_p),
                ("progress", _PROGRESS_CB), ("progress_user", ctypes.c_void_p),
                ("keep_special_modes", ctypes.c_int)]


_declare("mevb_files_backup_opts_init", ctypes.c_int, [ctypes.POINTER(_FilesBackupOpts), ctypes.c_size_t], True)
_declare("mevb_repo_backup_files", ctypes.c_int, [_p, ctypes.POINTER(_FilesBackupOpts), ctypes.POINTER(_p)], True)
_declare("mevb_files_restore_opts_init", ctypes.c_int, [ctypes.POINTER(_FilesRestoreOpts), ctypes.c_size_t], True)
_declare("mevb_repo_restore_files", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.POINTER(_FilesRestoreOpts)], True)

class _SyncOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("kind", ctypes.c_char_p), ("progress", _PROGRESS_CB),
                ("progress_user", ctypes.c_void_p)]


_declare("mevb_sync_opts_init", ctypes.c_int, [ctypes.POINTER(_SyncOpts), ctypes.c_size_t], True)
_declare("mevb_repo_sync", ctypes.c_int, [_p, _p, ctypes.POINTER(_SyncOpts), ctypes.POINTER(ctypes.c_size_t)], True)


class _LifecycleTransition(ctypes.Structure):
    _fields_ = [("days", ctypes.c_int), ("storage_class", ctypes.c_char_p)]


class _LifecycleOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("rule_id", ctypes.c_char_p),
                ("transitions", ctypes.POINTER(_LifecycleTransition)), ("transitions_count", ctypes.c_size_t),
                ("expire_days", ctypes.c_int), ("abort_incomplete_days", ctypes.c_int)]


_declare("mevb_lifecycle_opts_init", ctypes.c_int, [ctypes.POINTER(_LifecycleOpts), ctypes.c_size_t], True)
_declare("mevb_repo_put_bucket_lifecycle", ctypes.c_int, [_p, ctypes.POINTER(_LifecycleOpts)], True)
# Point-in-time recovery: the WAL archive.
_declare("mevb_wal_push", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)], True)
_declare("mevb_wal_fetch", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.c_char_p], True)

__version__: str = _lib.mevb_version().decode()


def library_version() -> str:
    """The version of the shared library actually loaded."""
    return str(_lib.mevb_version().decode())


def protect_secrets_in_memory() -> None:
    """Makes this process undumpable and disables its core files (mevb_protect_secrets_in_memory):
    process-wide, so the library leaves the choice to the program that hands it secrets."""
    _lib.mevb_protect_secrets_in_memory()


def _enc(s: Union[str, "os.PathLike[str]", None]) -> Optional[bytes]:
    """The one str/path -> bytes conversion: C sees a NUL as the end, so a string holding one
    would silently name something shorter (another path, another database)."""
    if s is None:
        return None
    b = os.fsencode(s)
    if b"\0" in b:
        raise ValueError(f"embedded NUL character in {s!r}")
    return b


def _env_int(name: str, given: Optional[int]) -> int:
    """`given`, else the integer in environment variable `name` (0 when unset): the
    bindings' defaults, which the library leaves to its callers."""
    if given is not None:
        return int(given)
    text = os.environ.get(name, "")
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"{name} must be a whole number, not {text!r}", InvalidArgument.code) from None


def _argv(args: Optional[Sequence[str]]) -> Tuple[Any, int, Any]:
    if args is None:
        return None, 0, None
    keep = [_enc(a) for a in args]
    arr = (ctypes.c_char_p * max(len(keep), 1))(*keep)
    return ctypes.cast(arr, ctypes.POINTER(ctypes.c_char_p)), len(keep), (arr, keep)

# ---- the Pythonic surface -------------------------------------------------------------


@dataclass(frozen=True)
class FileAction:
    """What a files restore did (or, in a dry run, would do) to one member."""

    name: str    # relative to the target
    action: str  # "create", "replace", "unchanged" or "conflict" (dry run only)


@dataclass(frozen=True)
class Progress:
    stage: str
    bytes_in: int
    bytes_out: int
    elapsed_seconds: float
    done: bool


@dataclass(frozen=True)
class Backup:
    """One backup in a repository, as its manifest describes it."""

    id: str
    kind: str
    path: str
    size: int
    sha256: str
    created_at: str
    compression: str
    source_name: str
    manifest: Dict[str, Any] = field(repr=False, compare=False)
    encrypted: bool = False
    # "good", "bad", "unsigned", or "unchecked" (the repository was opened without verify keys)
    signature: str = "unchecked"

    @classmethod
    def _from_handle(cls, h: Union[int, "_p", None]) -> "Backup":
        def s(f: str) -> str:
            return str(getattr(_lib, f"mevb_backup_{f}")(h).decode())

        return cls(id=s("id"), kind=s("kind"), path=s("path"), size=int(_lib.mevb_backup_size(h)),
                   sha256=s("sha256"), created_at=s("created_at"), compression=s("compression"),
                   source_name=s("source_name"), manifest=json.loads(s("manifest_json")),
                   encrypted=bool(_lib.mevb_backup_encrypted(h)), signature=s("signature"))


@dataclass(frozen=True)
class Report:
    """The outcome of prune, verify or check: `status` (deleted / failed / Nagios code),
    `text` (as the CLI prints it) and `data` (the JSON report, parsed)."""

    status: int
    text: str
    data: Dict[str, Any]


def _take_report(h: "_p") -> Report:
    try:
        return Report(_lib.mevb_report_status(h), _lib.mevb_report_text(h).decode(),
                      json.loads(_lib.mevb_report_json(h).decode()))
    finally:
        _lib.mevb_report_free(h)


ProgressFn = Callable[[Progress], Any]
LogFn = Callable[[int, str], Any]


class _Callbacks:
    """Keeps ctypes callbacks alive for a call and carries a Python exception across it."""

    def __init__(self, progress: Optional[ProgressFn]):
        self.error: Optional[BaseException] = None

        def on_progress(p: "ctypes._Pointer[_Progress]", _user: Optional[int]) -> int:
            if progress is None:
                return 0
            try:
                pr = p.contents
                progress(Progress(pr.stage.decode() if pr.stage else "", pr.bytes_in, pr.bytes_out,
                                  pr.elapsed_seconds, bool(pr.done)))
                return 0
            except BaseException as e:  # cancels the run; re-raised after it
                self.error = e
                return 1

        self.c_progress = _PROGRESS_CB(on_progress)

    def reraise(self) -> None:
        if self.error is not None:
            raise self.error


def _run(repo: "Repository", opts: ctypes.Structure, progress: Optional[ProgressFn],
         call: Callable[["_p"], Any]) -> None:
    """call(repo handle) with `opts.progress` calling `progress` (kept alive for the call);
    re-raises what the Python callback raised during it (it cancels the run)."""
    cb = _Callbacks(progress)
    opts.progress = cb.c_progress
    try:
        call(repo._handle())
    except Error:
        cb.reraise()
        raise


def _run_backup(repo: "Repository", fn: Callable[..., Any], opts: ctypes.Structure,
                progress: Optional[ProgressFn]) -> "Backup":
    """A backup call of the C API: fn(repo, &opts, &backup) -> Backup."""
    h = _p()
    _run(repo, opts, progress, lambda handle: fn(handle, ctypes.byref(opts), ctypes.byref(h)))
    try:
        return Backup._from_handle(h)
    finally:
        _lib.mevb_backup_free(h)


def _run_restore(repo: "Repository", fn: Callable[..., Any], ident: Optional[str], opts: ctypes.Structure,
                 progress: Optional[ProgressFn]) -> None:
    """A restore call of the C API: fn(repo, id, &opts)."""
    _run(repo, opts, progress, lambda handle: fn(handle, _enc(ident), ctypes.byref(opts)))


def parse_rate(text: str) -> int:
    """Bytes per second of a rate such as "20MiB/s", "500KiB/s", "1.5MB/s" or "1000000"."""
    out = ctypes.c_uint64()
    _lib.mevb_parse_rate(_enc(text), ctypes.byref(out))
    return int(out.value)


def _repo_opts(what: str, log: Optional[LogFn], stall_timeout_seconds: int = 0, *,
               lock_ttl_seconds: Optional[int] = None, lock_refresh_seconds: Optional[int] = None,
               lock_wait_seconds: Optional[int] = None, no_lock: Optional[bool] = None,
               s3_retry_base_ms: Optional[int] = None, recipients: Sequence[str] = (),
               recipients_file: Optional[Union[str, os.PathLike[str]]] = None,
               identity_files: Sequence[Union[str, os.PathLike[str]]] = (),
               passphrase_file: Optional[Union[str, os.PathLike[str]]] = None,
               signing_key_file: Optional[Union[str, os.PathLike[str]]] = None,
               verify_key_files: Sequence[Union[str, os.PathLike[str]]] = (),
               max_rate: Union[int, str, None] = None, **storage: Any) -> Tuple[_RepoOpts, Tuple[Any, ...]]:
    """mevb_repo_opts of Repository's arguments (described there), the MEVBACKUP_* defaults
    applied, and what the struct points to: the caller keeps that as long as the handle
    opened with it lives, since the handle calls the log callback. `what` names the
    caller in a TypeError."""

    def on_log(level: int, message: bytes, _user: Optional[int]) -> None:
        if log is not None:
            try:
                log(level, message.decode("utf-8", "replace"))
            except BaseException:  # logging must not break the operation
                pass

    c_log = _LOG_CB(on_log)
    opts = _RepoOpts(ctypes.sizeof(_RepoOpts), c_log, None)
    opts.stall_timeout_seconds = stall_timeout_seconds
    opts.lock_ttl_seconds = _env_int("MEVBACKUP_LOCK_TTL", lock_ttl_seconds)
    opts.lock_refresh_seconds = _env_int("MEVBACKUP_LOCK_REFRESH", lock_refresh_seconds)
    opts.lock_wait_seconds = _env_int("MEVBACKUP_LOCK_WAIT", lock_wait_seconds)
    if no_lock is None:
        no_lock = os.environ.get("MEVBACKUP_NO_LOCK", "") not in ("", "0")
    opts.no_lock = 1 if no_lock else 0
    opts.s3_retry_base_ms = _env_int("MEVBACKUP_S3_RETRY_BASE_MS", s3_retry_base_ms)
    for name, value in storage.items():
        if name in Repository._S3_STR:
            setattr(opts, name, _enc(None if value is None else str(value)))
        elif name in Repository._S3_INT:
            setattr(opts, name, int(value or 0))
        else:
            raise TypeError(f"{what} got an unexpected keyword argument {name!r}")
    for name, seq in (("recipients", recipients), ("identity_files", identity_files),
                      ("verify_key_files", verify_key_files)):
        if isinstance(seq, (str, bytes, os.PathLike)):
            raise TypeError(f"{name} is a sequence of strings, not one string")
    rcpt = [_enc(str(r)) for r in recipients]
    ids = [_enc(os.fspath(f)) for f in identity_files]
    rcpt_arr = (ctypes.c_char_p * max(len(rcpt), 1))(*rcpt)
    ids_arr = (ctypes.c_char_p * max(len(ids), 1))(*ids)
    opts.recipients = ctypes.cast(rcpt_arr, ctypes.POINTER(ctypes.c_char_p))
    opts.recipients_count = len(rcpt)
    opts.identity_files = ctypes.cast(ids_arr, ctypes.POINTER(ctypes.c_char_p))
    opts.identity_files_count = len(ids)
    opts.recipients_file = _enc(None if recipients_file is None else os.fspath(recipients_file))
    opts.passphrase_file = _enc(None if passphrase_file is None else os.fspath(passphrase_file))
    vks = [_enc(os.fspath(f)) for f in verify_key_files]
    vks_arr = (ctypes.c_char_p * max(len(vks), 1))(*vks)
    opts.signing_key_file = _enc(None if signing_key_file is None else os.fspath(signing_key_file))
    opts.verify_key_files = ctypes.cast(vks_arr, ctypes.POINTER(ctypes.c_char_p))
    opts.verify_key_files_count = len(vks)
    if max_rate is not None:
        opts.max_rate = parse_rate(max_rate) if isinstance(max_rate, str) else int(max_rate)
        if opts.max_rate <= 0:
            raise ValueError("max_rate must be above 0 bytes per second")
    return opts, (c_log, rcpt_arr, ids_arr, vks_arr)


class Repository:
    """A backup repository: a local directory or ``s3://bucket/prefix``.

    S3 settings are keyword arguments, each defaulting to the AWS_* environment variables:
    storage_class, endpoint_url, region, profile (of ~/.aws/credentials), ca_bundle, no_verify_tls,
    path_style, access_key_id,
    secret_access_key, session_token, sse, sse_kms_key_id, part_size (bytes), concurrency,
    max_attempts, unsigned_payload.

    The repository lock (docs/lock.md): lock_ttl_seconds, lock_refresh_seconds,
    lock_wait_seconds and no_lock default to MEVBACKUP_LOCK_TTL, MEVBACKUP_LOCK_REFRESH,
    MEVBACKUP_LOCK_WAIT (seconds) and MEVBACKUP_NO_LOCK; s3_retry_base_ms to
    MEVBACKUP_S3_RETRY_BASE_MS. The library itself reads none of these.

    Encryption at rest in the age format (docs/encryption.md): new backups are encrypted
    to ``recipients`` ("age1..." public keys) and those in ``recipients_file``; backups are
    read with the identities in ``identity_files`` (age-keygen files, mode 600). A
    ``passphrase_file`` (or "/dev/fd/N") does both with a passphrase.

    Signed manifests (docs/trust.md): every manifest written is signed with the Ed25519 key
    in ``signing_key_file`` (PEM, mode 600); with ``verify_key_files`` (PEM public keys)
    restores, verify and prune trust only manifests one of them signed.

    ``max_rate`` limits every upload and download: bytes per second, or "20MiB/s".
    """

    _S3_STR = ("storage_class", "endpoint_url", "region", "ca_bundle", "access_key_id", "secret_access_key",
               "session_token", "sse", "sse_kms_key_id", "profile")
    _S3_INT = ("no_verify_tls", "path_style", "part_size", "concurrency", "max_attempts", "unsigned_payload")

    def __init__(self, location: Union[str, os.PathLike[str]], log: Optional[LogFn] = None,
                 stall_timeout_seconds: int = 0, *, lock_ttl_seconds: Optional[int] = None,
                 lock_refresh_seconds: Optional[int] = None, lock_wait_seconds: Optional[int] = None,
                 no_lock: Optional[bool] = None, s3_retry_base_ms: Optional[int] = None,
                 recipients: Sequence[str] = (), recipients_file: Optional[Union[str, os.PathLike[str]]] = None,
                 identity_files: Sequence[Union[str, os.PathLike[str]]] = (),
                 passphrase_file: Optional[Union[str, os.PathLike[str]]] = None,
                 signing_key_file: Optional[Union[str, os.PathLike[str]]] = None,
                 verify_key_files: Sequence[Union[str, os.PathLike[str]]] = (),
                 max_rate: Union[int, str, None] = None, **storage: Any):
        self._h = _p()
        opts, self._keep = _repo_opts(
            "Repository()", log, stall_timeout_seconds, lock_ttl_seconds=lock_ttl_seconds,
            lock_refresh_seconds=lock_refresh_seconds, lock_wait_seconds=lock_wait_seconds, no_lock=no_lock,
            s3_retry_base_ms=s3_retry_base_ms, recipients=recipients, recipients_file=recipients_file,
            identity_files=identity_files, passphrase_file=passphrase_file, signing_key_file=signing_key_file,
            verify_key_files=verify_key_files, max_rate=max_rate, **storage)
        _lib.mevb_repo_open(ctypes.byref(self._h), _enc(location), ctypes.byref(opts))
        self.location = os.fspath(location)

    @classmethod
    def _wrap(cls, h: _p, location: str, keep: Tuple[Any, ...]) -> "Repository":
        """A Repository owning handle `h` that the library opened (Plan.repository); `keep`
        is what its log callback needs alive."""
        repo = cls.__new__(cls)
        repo._h, repo._keep, repo.location = h, keep, location
        return repo

    def close(self) -> None:
        if self._h:
            _lib.mevb_repo_free(self._h)
            self._h = _p()

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _handle(self) -> _p:
        if not self._h:
            raise InvalidArgument("repository is closed", 1)
        return self._h

    def sync_to(self, destination: "Repository", kind: Optional[str] = None) -> int:
        """Copies every complete backup this repository has and `destination` lacks
        (artifact, then manifest, each checked against its manifest); returns how many."""
        opts = _SyncOpts()
        _lib.mevb_sync_opts_init(ctypes.byref(opts), ctypes.sizeof(opts))
        opts.kind = _enc(kind)
        copied = ctypes.c_size_t(0)
        _lib.mevb_repo_sync(self._handle(), destination._handle(), ctypes.byref(opts), ctypes.byref(copied))
        return copied.value

    def put_bucket_lifecycle(self, transitions: Sequence[Tuple[int, str]] = (), expire_days: int = 0,
                             abort_incomplete_days: int = 7, rule_id: Optional[str] = None) -> None:
        """Installs one lifecycle rule over this S3 repository's prefix, e.g.
        transitions=[(30, "GLACIER"), (90, "DEEP_ARCHIVE")], expire_days=365."""
        opts = _LifecycleOpts()
        _lib.mevb_lifecycle_opts_init(ctypes.byref(opts), ctypes.sizeof(opts))
        arr = (_LifecycleTransition * max(len(transitions), 1))()
        for i, (days, cls) in enumerate(transitions):
            arr[i].days = int(days)
            arr[i].storage_class = _enc(cls)
        opts.rule_id = _enc(rule_id)
        opts.transitions = ctypes.cast(arr, ctypes.POINTER(_LifecycleTransition))
        opts.transitions_count = len(transitions)
        opts.expire_days = expire_days
        opts.abort_incomplete_days = abort_incomplete_days
        _lib.mevb_repo_put_bucket_lifecycle(self._handle(), ctypes.byref(opts))

    def put_artifact(self, source: "Source", *, kind: str, name_prefix: str, compression: str = "gzip",
                     level: int = -1, format: Optional[str] = None, extension: Optional[str] = None,
                     progress: Optional[ProgressFn] = None) -> Backup:
        """Stores the bytes of `source` as a backup of `kind` (a built-in one, or the user's own,
        e.g. "export", stored in a directory of that name) with its manifest; consumes the source."""
        opts = _ArtifactOpts()
        _lib.mevb_artifact_opts_init(ctypes.byref(opts), ctypes.sizeof(opts))
        keep = (_enc(kind), _enc(name_prefix), _enc(format), _enc(extension))
        opts.kind, opts.name_prefix, opts.format, opts.extension = keep
        opts.compression = _compression(compression)
        opts.level = level
        cb = _RunCallbacks(progress, None, None)
        h = _p()
        cb.call(lambda: _lib.mevb_repo_put_artifact(self._handle(), source._handle(), ctypes.byref(opts),
                                                    ctypes.byref(cb.opts), ctypes.byref(h)), [source])
        try:
            return Backup._from_handle(h)
        finally:
            _lib.mevb_backup_free(h)

    def rekey(self, backup: Union[str, Backup] = "latest", *, kind: str = "", source: str = "") -> Backup:
        """Re-encrypts an encrypted backup to this repository's recipients, opening it with its
        identity files: only the age headers are rewritten. Returns the rekeyed backup (a new
        id; the old one is removed once it is complete)."""
        ident = backup.id if isinstance(backup, Backup) else backup
        h = _p()
        _lib.mevb_repo_rekey(self._handle(), _enc(ident), _enc(kind or None), _enc(source or None), ctypes.byref(h))
        try:
            return Backup._from_handle(h)
        finally:
            _lib.mevb_backup_free(h)

    def get_artifact(self, backup: Union[str, Backup], sink: "Sink", *, kind: str = "",
                     progress: Optional[ProgressFn] = None) -> None:
        """Streams a backup's payload into `sink`, committed only if size and SHA-256 match
        its manifest; consumes the sink. `backup` is a Backup, an id or "latest" (of `kind`)."""
        ident = backup.id if isinstance(backup, Backup) else backup
        h = _p()
        _lib.mevb_repo_find(self._handle(), _enc(ident), _enc(kind), None, ctypes.byref(h))
        try:
            cb = _RunCallbacks(progress, None, None)
            cb.call(lambda: _lib.mevb_repo_get_artifact(self._handle(), h, sink._handle(), ctypes.byref(cb.opts)),
                    [sink])
        finally:
            _lib.mevb_backup_free(h)

    def cancel(self) -> None:
        """Stops the operation running on this repository (safe from another thread)."""
        if self._h:
            _lib.mevb_repo_cancel(self._h)

    def backup_sets(self, plan: Optional[str] = None) -> List["BackupSet"]:
        """The backup sets (of the plan named `plan`; None: of every plan), oldest first,
        each checked against its members."""
        h = _p()
        _lib.mevb_repo_list_sets(self._handle(), _enc(plan), ctypes.byref(h))
        return [BackupSet._from_json(j) for j in _take_report(h).data["sets"]]

    def list(self, kind: Optional[str] = None) -> List[Backup]:
        """Every backup (of `kind`), oldest first, read from the manifests."""
        lst = _p()
        _lib.mevb_repo_list(self._handle(), _enc(kind), ctypes.byref(lst))
        try:
            return [Backup._from_handle(_lib.mevb_backup_list_get(lst, i))
                    for i in range(_lib.mevb_backup_list_count(lst))]
        finally:
            _lib.mevb_backup_list_free(lst)

    def find(self, backup: str = "latest", kind: str = "postgres", source: Optional[str] = None) -> Backup:
        h = _p()
        _lib.mevb_repo_find(self._handle(), _enc(backup), _enc(kind), _enc(source), ctypes.byref(h))
        try:
            return Backup._from_handle(h)
        finally:
            _lib.mevb_backup_free(h)

    def backup_postgres(self, dbname: str, *, prefix: Optional[str] = None, compression: str = "gzip",
                        level: Optional[int] = None, pg_dump: Optional[str] = None,
                        pg_dump_args: Optional[Sequence[str]] = None, exact_count_max_bytes: int = 0,
                        progress: Optional[ProgressFn] = None) -> Backup:
        """Dumps the database `dbname` (a libpq conninfo or URI) into the repository."""
        o = _PgBackupOpts()
        _lib.mevb_pg_backup_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.conninfo = _enc(dbname)
        o.name_prefix = _enc(prefix)
        o.compression = _enc(compression)
        o.level = -1 if level is None else int(level)
        o.pg_dump_path = _enc(pg_dump)
        o.pg_dump_args, o.pg_dump_args_count, keep = _argv(pg_dump_args)
        o.exact_count_max_bytes = exact_count_max_bytes
        b = _run_backup(self, _lib.mevb_repo_backup_postgres, o, progress)
        del keep
        return b

    def restore_postgres(self, backup: Union[str, Backup] = "latest", *, dbname: str, clean: bool = False,
                         source: Optional[str] = None, pg_restore: Optional[str] = None,
                         pg_restore_args: Optional[Sequence[str]] = None, jobs: int = 0,
                         staging_dir: Optional[str] = None, progress: Optional[ProgressFn] = None,
                         allow_property_loss: bool = False, stage: bool = False) -> None:
        """Restores `backup` (an id, a Backup or "latest") into the database `dbname` names.

        `jobs` sessions load the data (0: one per core, at most 4), each reading the artifact in
        its own streamed pass; `stage` stages the dump in a file in `staging_dir` instead.

        The database gets the source's encoding, locale, settings and comment; when the target
        server cannot honour one, the restore fails unless `allow_property_loss` (then it warns)."""
        ident = backup.id if isinstance(backup, Backup) else backup
        o = _PgRestoreOpts()
        _lib.mevb_pg_restore_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.conninfo = _enc(dbname)
        o.clean = 1 if clean else 0
        o.source_name = _enc(source)
        o.pg_restore_path = _enc(pg_restore)
        o.pg_restore_args, o.pg_restore_args_count, keep = _argv(pg_restore_args)
        o.jobs = jobs
        o.staging_dir = _enc(staging_dir)
        o.allow_property_loss = 1 if allow_property_loss else 0
        o.stage = 1 if stage else 0
        _run_restore(self, _lib.mevb_repo_restore_postgres, ident, o, progress)
        del keep

    # -- retention, verification, monitoring

    def prune(self, *, keep_last: int = 1, keep_days: int = 0, keep_daily: int = 0, keep_weekly: int = 0,
              keep_monthly: int = 0, keep_yearly: int = 0, incomplete_grace_seconds: int = 86400,
              kind: Optional[str] = None, source: Optional[str] = None, dry_run: bool = False,
              now: Optional[str] = None) -> Report:
        """Applies a retention policy; `Report.data["decisions"]` says what was kept or deleted, and why."""
        o = _PruneOpts()
        _lib.mevb_prune_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.keep_last, o.keep_days, o.keep_daily = keep_last, keep_days, keep_daily
        o.keep_weekly, o.keep_monthly, o.keep_yearly = keep_weekly, keep_monthly, keep_yearly
        o.incomplete_grace_seconds = incomplete_grace_seconds
        o.kind, o.source, o.dry_run, o.now = _enc(kind), _enc(source), 1 if dry_run else 0, _enc(now)
        h = _p()
        _lib.mevb_repo_prune(self._handle(), ctypes.byref(o), ctypes.byref(h))
        return _take_report(h)

    def verify(self, backup: str = "latest", *, kind: Optional[str] = None, source: Optional[str] = None,
               restore_test: Optional[str] = None, queries: Optional[Sequence[str]] = None,
               record: bool = True) -> Report:
        """Re-reads backups (an id, "latest" or "all"); `Report.status` is how many failed."""
        o = _VerifyOpts()
        _lib.mevb_verify_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.kind, o.source, o.restore_test_conninfo = _enc(kind), _enc(source), _enc(restore_test)
        o.queries, o.queries_count, keep = _argv(queries)
        o.no_record = 0 if record else 1
        h = _p()
        _lib.mevb_repo_verify(self._handle(), _enc(backup), ctypes.byref(o), ctypes.byref(h))
        del keep
        return _take_report(h)

    def check(self, *, max_age_seconds: int = 25 * 3600, kind: Optional[str] = None, now: Optional[str] = None,
              prometheus_file: Optional[str] = None, warning_fraction: float = 0.8,
              warning_seconds: int = 0, critical_seconds: int = 0, future_skew_seconds: int = 300) -> Report:
        """Freshness of the newest backups; `Report.status` is 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
        WARNING beyond `warning_seconds` (0: max_age_seconds), CRITICAL beyond `critical_seconds`
        (0: twice max_age_seconds); `warning_fraction` is no longer used."""
        o = _CheckOpts()
        _lib.mevb_check_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.kind, o.max_age_seconds, o.now = _enc(kind), max_age_seconds, _enc(now)
        o.prometheus_file, o.warning_fraction = _enc(prometheus_file), warning_fraction
        o.warning_seconds, o.critical_seconds = warning_seconds, critical_seconds
        o.future_skew_seconds = future_skew_seconds
        h = _p()
        _lib.mevb_repo_check(self._handle(), ctypes.byref(o), ctypes.byref(h))
        return _take_report(h)

    def adopt(self, *, dry_run: bool = False, pg_restore_path: Optional[str] = None) -> Report:
        """Takes over the runbook's backups (database/*.dump.gz, redis/*.rdb.gz, config/config_*.tar.gz
        without a manifest): each sound one gets a manifest marked "adopted"; nothing is deleted.
        `Report.data["files"]` has one entry per object (adopted / damaged / foreign / leftover, and why);
        `Report.status` is how many were damaged."""
        o = _AdoptOpts()
        _lib.mevb_adopt_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.dry_run, o.pg_restore_path = 1 if dry_run else 0, _enc(pg_restore_path)
        h = _p()
        _lib.mevb_repo_adopt(self._handle(), ctypes.byref(o), ctypes.byref(h))
        return _take_report(h)

    # ---- configuration files ---------------------------------------------------------

    def backup_files(self, paths: Sequence[Union[str, os.PathLike[str]]], *,
                     base: Optional[Union[str, os.PathLike[str]]] = None,
                     exclude: Optional[Sequence[str]] = None, include_secrets: bool = False,
                     ignore_missing: bool = False, prefix: Optional[str] = None, compression: str = "gzip",
                     level: Optional[int] = None, progress: Optional[ProgressFn] = None) -> Backup:
        """Backs up files, directories and globs (relative to `base`, default the current
        directory) as config/<prefix>_YYYYMMDD_HHMMSS.tar.gz. Secret-looking names stay
        out unless include_secrets; the manifest lists excluded names, the member list
        (its own object beside the artifact, docs/files.md) every member."""
        o = _FilesBackupOpts()
        _lib.mevb_files_backup_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.base_dir = _enc(base)
        o.paths, o.paths_count, keep_p = _argv([os.fspath(p) for p in paths])
        o.excludes, o.excludes_count, keep_e = _argv(list(exclude) if exclude else None)
        o.include_secrets = 1 if include_secrets else 0
        o.ignore_missing = 1 if ignore_missing else 0
        o.name_prefix = _enc(prefix)
        o.compression = _enc(compression)
        o.level = -1 if level is None else int(level)
        b = _run_backup(self, _lib.mevb_repo_backup_files, o, progress)
        del keep_p, keep_e
        return b

    def restore_files(self, backup: Union[str, Backup] = "latest", *, target: Union[str, os.PathLike[str]],
                      only: Optional[Sequence[str]] = None, dry_run: bool = False, overwrite: bool = False,
                      source: Optional[str] = None, progress: Optional[ProgressFn] = None,
                      keep_special_modes: bool = False) -> List[FileAction]:
        """Restores a files backup into `target` safely (staged, checked, moved into place
        only when complete). Existing different files raise AlreadyExists unless
        overwrite. Setuid/setgid and world-write bits are dropped unless
        keep_special_modes. Returns what was (dry_run: would be) done to each member."""
        ident = backup.id if isinstance(backup, Backup) else backup
        o = _FilesRestoreOpts()
        _lib.mevb_files_restore_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.target = _enc(target)
        o.only, o.only_count, keep = _argv(list(only) if only else None)
        o.dry_run = 1 if dry_run else 0
        o.overwrite = 1 if overwrite else 0
        o.keep_special_modes = 1 if keep_special_modes else 0
        o.source_name = _enc(source)
        actions: List[FileAction] = []

        def on_entry(name: bytes, action: bytes, _user: Optional[int]) -> None:
            actions.append(FileAction(os.fsdecode(name), action.decode()))

        c_entry = _FILES_ENTRY_CB(on_entry)
        o.on_entry = c_entry
        _run_restore(self, _lib.mevb_repo_restore_files, ident, o, progress)
        del keep, c_entry
        return actions

    # ---- Redis (C declarations after the class) ----------------------------------------

    def backup_redis(self, url: str, *, password: Optional[str] = None, mode: str = "auto",
                     prefix: Optional[str] = None, compression: str = "gzip", level: Optional[int] = None,
                     timeout: int = 0, progress: Optional[ProgressFn] = None,
                     allow_modules: bool = False) -> Backup:
        """Backs up the Redis server at `url` (redis://[user@]host:port) as an RDB.

        `mode` is "auto", "bgsave" or "replication". The password is `password`, else the
        URL's, else the environment variable MEVBACKUP_REDIS_PASSWORD (read here, passed to
        the library as its default_password). An RDB holding module data is refused unless
        `allow_modules`."""
        o = _RedisBackupOpts()
        _lib.mevb_redis_backup_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.url = _enc(url)
        o.password = _enc(password)
        o.mode = _enc(mode)
        o.name_prefix = _enc(prefix)
        o.compression = _enc(compression)
        o.level = -1 if level is None else int(level)
        o.timeout_seconds = int(timeout)
        o.allow_modules = 1 if allow_modules else 0
        o.default_password = _enc(os.environ.get("MEVBACKUP_REDIS_PASSWORD"))
        return _run_backup(self, _lib.mevb_repo_backup_redis, o, progress)

    def restore_redis(self, backup: Union[str, Backup] = "latest", *, data_dir: Optional[str] = None,
                      redis_url: Optional[str] = None, rdb_name: Optional[str] = None,
                      before: Optional[Sequence[str]] = None, after: Optional[Sequence[str]] = None,
                      target_rdb_version: int = 0, source: Optional[str] = None, password: Optional[str] = None,
                      replace: bool = False, flush: bool = False, progress: Optional[ProgressFn] = None) -> None:
        """Restores `backup` (an id, a Backup or "latest"), either offline or live.

        Offline (`data_dir`): atomically into a stopped server's directory; `before` and
        `after` are argv lists run (without a shell) around the moment the RDB is renamed
        into place, e.g. to stop and start the server. Live (`redis_url`): key by key with
        RESTORE into a running server, refused when it holds keys unless `replace` or
        `flush`. Raises NotEmpty, VersionMismatch, Corrupt (the target untouched), ..."""
        ident = backup.id if isinstance(backup, Backup) else backup
        o = _RedisRestoreOpts()
        _lib.mevb_redis_restore_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.data_dir = _enc(str(data_dir) if data_dir is not None else None)
        o.redis_url = _enc(redis_url)
        o.rdb_name = _enc(rdb_name)
        o.before, o.before_count, keep_b = _argv(before)
        o.after, o.after_count, keep_a = _argv(after)
        o.target_rdb_version = int(target_rdb_version)
        o.source_name = _enc(source)
        o.password = _enc(password)
        o.replace = 1 if replace else 0
        o.flush = 1 if flush else 0
        if redis_url is not None:  # as for backup_redis: the URL's password wins
            o.default_password = _enc(os.environ.get("MEVBACKUP_REDIS_PASSWORD"))
        _run_restore(self, _lib.mevb_repo_restore_redis, ident, o, progress)
        del keep_b, keep_a

    # ---- point-in-time recovery: the WAL archive ------------------------------------

    def wal_push(self, path: Union[str, os.PathLike[str]]) -> bool:
        """archive_command: stores the WAL file at `path` under wal/<timeline>/.
        Returns True when stored, False when the same content was already archived;
        raises AlreadyExists when different content is archived under that name."""
        already = ctypes.c_int(0)
        _lib.mevb_wal_push(self._handle(), _enc(path), ctypes.byref(already))
        return already.value == 0

    def wal_fetch(self, name: str, dest: Union[str, os.PathLike[str]]) -> bool:
        """restore_command: writes archived WAL file `name` to `dest` atomically.
        Returns False (writing nothing) when the archive does not hold it."""
        try:
            _lib.mevb_wal_fetch(self._handle(), _enc(name), _enc(dest))
        except NotFound:
            return False
        return True

    # ---- point-in-time recovery: base backups and restore to a point (C declarations after the class)

    def backup_basebackup(self, dbname: str, *, prefix: Optional[str] = None,
                          compression: str = "gzip", level: Optional[int] = None, spread_checkpoint: bool = False,
                          max_rate_kbps: int = 0, allow_no_archiving: bool = False,
                          progress: Optional[ProgressFn] = None) -> "Backup":
        """Streams a base backup of the server `dbname` (a libpq conninfo; the role needs
        REPLICATION) over the replication protocol into basebackup/<id>/."""
        o = _BaseBackupOpts()
        _lib.mevb_basebackup_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.conninfo = _enc(dbname)
        o.name_prefix = _enc(prefix)
        o.compression = _enc(compression)
        o.level = -1 if level is None else int(level)
        o.spread_checkpoint = 1 if spread_checkpoint else 0
        o.max_rate_kbps = int(max_rate_kbps)
        o.allow_no_archiving = 1 if allow_no_archiving else 0
        return _run_backup(self, _lib.mevb_repo_backup_basebackup, o, progress)

    def restore_pitr(self, data_dir: Union[str, os.PathLike[str]], *, repo_url: Optional[str] = None,
                     target_time: Optional[str] = None, target_lsn: Optional[str] = None,
                     target_name: Optional[str] = None, backup: Optional[str] = None,
                     mevbackup_path: Optional[str] = None, restore_command: Optional[str] = None,
                     owner: Optional[str] = None, settings: Optional[Dict[str, Any]] = None,
                     tablespace_map: Optional[Dict[str, Any]] = None, wal_fetch_args: Optional[Sequence[str]] = None,
                     start: bool = False, timeout_seconds: int = 0, log_file: Optional[str] = None,
                     progress: Optional[ProgressFn] = None) -> "Report":
        """Restores to a point: unpacks the newest base backup that ended before the target
        into the empty `data_dir` and writes recovery.signal and the recovery settings
        (restore_command runs `mevbackup_path wal-fetch --repo repo_url`). With start=True
        the server is started as the directory's owner and watched until recovery ends.
        `Report.data` names the backup used; `Report.text` says how to start the server."""
        o = _PitrRestoreOpts()
        _lib.mevb_pitr_restore_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.data_dir = _enc(data_dir)
        o.repo_url = _enc(repo_url if repo_url is not None else self.location)
        o.target_time, o.target_lsn, o.target_name = _enc(target_time), _enc(target_lsn), _enc(target_name)
        o.backup_id = _enc(backup)
        o.mevbackup_path = _enc(mevbackup_path)
        o.restore_command = _enc(restore_command)
        o.owner = _enc(owner)
        o.settings, o.settings_count, keep1 = _argv([f"{k}={v}" for k, v in (settings or {}).items()] or None)
        o.tablespace_map, o.tablespace_map_count, keep2 = _argv(
            [f"{k}={v}" for k, v in (tablespace_map or {}).items()] or None)
        o.wal_fetch_args, o.wal_fetch_args_count, keep3 = _argv(wal_fetch_args)
        o.start = 1 if start else 0
        o.timeout_seconds = int(timeout_seconds)
        o.log_file = _enc(log_file)
        h = _p()
        _run(self, o, progress, lambda handle: _lib.mevb_repo_restore_pitr(handle, ctypes.byref(o), ctypes.byref(h)))
        del keep1, keep2, keep3
        return _take_report(h)


# ---- Redis ------------------------------------------------------------------------------


class _RedisBackupOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("url", ctypes.c_char_p), ("password", ctypes.c_char_p),
                ("mode", ctypes.c_char_p), ("name_prefix", ctypes.c_char_p), ("compression", ctypes.c_char_p),
                ("level", ctypes.c_int), ("timeout_seconds", ctypes.c_int), ("progress", _PROGRESS_CB),
                ("progress_user", ctypes.c_void_p), ("allow_modules", ctypes.c_int),
                ("default_password", ctypes.c_char_p)]


class _RedisRestoreOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("data_dir", ctypes.c_char_p), ("rdb_name", ctypes.c_char_p),
                ("before", ctypes.POINTER(ctypes.c_char_p)), ("before_count", ctypes.c_size_t),
                ("after", ctypes.POINTER(ctypes.c_char_p)), ("after_count", ctypes.c_size_t),
                ("target_rdb_version", ctypes.c_int), ("source_name", ctypes.c_char_p),
                ("redis_url", ctypes.c_char_p), ("password", ctypes.c_char_p), ("replace", ctypes.c_int),
                ("flush", ctypes.c_int), ("progress", _PROGRESS_CB), ("progress_user", ctypes.c_void_p),
                ("default_password", ctypes.c_char_p)]


_declare("mevb_redis_backup_opts_init", ctypes.c_int, [ctypes.POINTER(_RedisBackupOpts), ctypes.c_size_t], True)
_declare("mevb_repo_backup_redis", ctypes.c_int, [_p, ctypes.POINTER(_RedisBackupOpts), ctypes.POINTER(_p)], True)
_declare("mevb_redis_restore_opts_init", ctypes.c_int, [ctypes.POINTER(_RedisRestoreOpts), ctypes.c_size_t], True)
_declare("mevb_repo_restore_redis", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.POINTER(_RedisRestoreOpts)], True)


# ---- point-in-time recovery: base backups and restore to a point ---------------


class _BaseBackupOpts(ctypes.Structure):
    _c_name_ = "mevb_basebackup_opts"  # the C struct (tests/python/test_struct_drift.py)
    _fields_ = [("struct_size", ctypes.c_uint32), ("conninfo", ctypes.c_char_p), ("name_prefix", ctypes.c_char_p),
                ("compression", ctypes.c_char_p), ("level", ctypes.c_int), ("spread_checkpoint", ctypes.c_int),
                ("max_rate_kbps", ctypes.c_uint32), ("allow_no_archiving", ctypes.c_int),
                ("progress", _PROGRESS_CB), ("progress_user", ctypes.c_void_p)]


class _PitrRestoreOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("data_dir", ctypes.c_char_p), ("target_time", ctypes.c_char_p),
                ("target_lsn", ctypes.c_char_p), ("target_name", ctypes.c_char_p), ("backup_id", ctypes.c_char_p),
                ("repo_url", ctypes.c_char_p), ("mevbackup_path", ctypes.c_char_p),
                ("restore_command", ctypes.c_char_p), ("owner", ctypes.c_char_p),
                ("settings", ctypes.POINTER(ctypes.c_char_p)), ("settings_count", ctypes.c_size_t),
                ("tablespace_map", ctypes.POINTER(ctypes.c_char_p)), ("tablespace_map_count", ctypes.c_size_t),
                ("start", ctypes.c_int), ("timeout_seconds", ctypes.c_int), ("log_file", ctypes.c_char_p),
                ("progress", _PROGRESS_CB), ("progress_user", ctypes.c_void_p),
                ("wal_fetch_args", ctypes.POINTER(ctypes.c_char_p)), ("wal_fetch_args_count", ctypes.c_size_t)]


_declare("mevb_basebackup_opts_init", ctypes.c_int, [ctypes.POINTER(_BaseBackupOpts), ctypes.c_size_t], True)
_declare("mevb_repo_backup_basebackup", ctypes.c_int, [_p, ctypes.POINTER(_BaseBackupOpts), ctypes.POINTER(_p)],
         True)
_declare("mevb_pitr_restore_opts_init", ctypes.c_int, [ctypes.POINTER(_PitrRestoreOpts), ctypes.c_size_t], True)
_declare("mevb_repo_restore_pitr", ctypes.c_int, [_p, ctypes.POINTER(_PitrRestoreOpts), ctypes.POINTER(_p)], True)


# ---- Retention policy ------------------------------------------------------------------


class _RetentionOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("keep_last", ctypes.c_int), ("keep_days", ctypes.c_int),
                ("keep_daily", ctypes.c_int), ("keep_weekly", ctypes.c_int), ("keep_monthly", ctypes.c_int),
                ("keep_yearly", ctypes.c_int), ("incomplete_grace_seconds", ctypes.c_int64),
                ("future_allowance_seconds", ctypes.c_int64)]


class _RetentionItem(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("id", ctypes.c_char_p), ("kind", ctypes.c_char_p),
                ("source", ctypes.c_char_p), ("created", ctypes.c_char_p), ("created_epoch", ctypes.c_int64),
                ("finished", ctypes.c_char_p), ("finished_epoch", ctypes.c_int64), ("verified", ctypes.c_int),
                ("incomplete", ctypes.c_int)]


class _RetentionDecision(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("id", ctypes.c_char_p), ("keep", ctypes.c_int),
                ("incomplete", ctypes.c_int), ("reason", ctypes.c_char_p)]


_declare("mevb_retention_opts_init", ctypes.c_int, [ctypes.POINTER(_RetentionOpts), ctypes.c_size_t], True)
_declare("mevb_retention_apply", ctypes.c_int,
         [ctypes.POINTER(_RetentionOpts), ctypes.POINTER(_RetentionItem), ctypes.c_size_t, ctypes.c_char_p,
          ctypes.c_int64, ctypes.POINTER(_p)], True)
_declare("mevb_retention_result_count", ctypes.c_size_t, [_p])
_declare("mevb_retention_result_get", ctypes.POINTER(_RetentionDecision), [_p, ctypes.c_size_t])
_declare("mevb_retention_result_free", None, [_p])

# mevb_verified, by the names RetentionItem.verified takes.
_VERIFIED = {"never": 0, "ok": 1, "failed": 2, "ever-ok": 3}

Time = Union[str, int, datetime.datetime]


def _time(t: Optional[Time]) -> Tuple[Optional[bytes], int]:
    """A time as the C API takes it: (RFC 3339 text, None) or (None, seconds since the epoch).
    A datetime goes as its ISO text, so one without a time zone is refused by the library."""
    if t is None:
        return None, 0
    if isinstance(t, datetime.datetime):
        return t.isoformat().encode(), 0
    if isinstance(t, bool) or not isinstance(t, (str, int)):
        raise TypeError(f"a time is an RFC 3339 str, seconds since the epoch (int) or a datetime, not {t!r}")
    if isinstance(t, int):
        return None, t
    return _enc(t), 0


@dataclass(frozen=True)
class RetentionItem:
    """One backup the policy decides on (or, with incomplete=True, an object without a
    manifest, `created` being when it was stored). `created` is the manifest's started_at,
    `finished` its finished_at (None: unknown); `verified` is "never", "ok", "failed" (the
    latest verification failed, none succeeded) or "ever-ok" (the latest failed, an earlier
    one succeeded)."""

    id: str
    created: Time
    kind: str = ""
    source: str = ""
    verified: str = "never"
    finished: Optional[Time] = None
    incomplete: bool = False


@dataclass(frozen=True)
class Decision:
    """What the policy decided for one item, and why."""

    id: str
    keep: bool
    reason: str
    incomplete: bool = False


@dataclass(frozen=True)
class RetentionPolicy:
    """The retention policy mevbackup prune applies, as a pure function (mevb_retention_apply):
    rules per kind and source, a backup kept when any rule keeps it; see docs/c-api.md for
    the invariants (the newest backups are never all deleted)."""

    keep_last: int = 1
    keep_days: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    incomplete_grace_seconds: int = 24 * 3600
    future_allowance_seconds: int = 15 * 60

    def apply(self, items: Sequence[RetentionItem], now: Time) -> List[Decision]:
        """One Decision per item, in the items' order. Raises InvalidArgument naming a bad
        rule, a bad time or a bad item."""
        opts = _RetentionOpts(ctypes.sizeof(_RetentionOpts), self.keep_last, self.keep_days, self.keep_daily,
                              self.keep_weekly, self.keep_monthly, self.keep_yearly,
                              self.incomplete_grace_seconds, self.future_allowance_seconds)
        arr = (_RetentionItem * max(len(items), 1))()
        for i, it in enumerate(items):
            if it.verified not in _VERIFIED:
                raise ValueError(f"item {i} ({it.id!r}): verified {it.verified!r} is not one of "
                                 + ", ".join(_VERIFIED))
            created, created_epoch = _time(it.created)
            finished, finished_epoch = _time(it.finished)
            arr[i] = _RetentionItem(ctypes.sizeof(_RetentionItem), _enc(it.id), _enc(it.kind), _enc(it.source),
                                    created, created_epoch, finished, finished_epoch, _VERIFIED[it.verified],
                                    1 if it.incomplete else 0)
        now_text, now_epoch = _time(now)
        h = _p()
        _lib.mevb_retention_apply(ctypes.byref(opts), arr, len(items), now_text, now_epoch, ctypes.byref(h))
        try:
            out: List[Decision] = []
            for i in range(_lib.mevb_retention_result_count(h)):
                d = _lib.mevb_retention_result_get(h, i).contents
                out.append(Decision(d.id.decode(), bool(d.keep), d.reason.decode(), bool(d.incomplete)))
            return out
        finally:
            _lib.mevb_retention_result_free(h)
# ---- the stream layer: sources, filters, sinks, a run, storage --------------------

_READ_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                            ctypes.POINTER(ctypes.c_size_t))
_CLOSE_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_WRITE_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_COMMIT_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_ABORT_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_CANCEL_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class _RunOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("progress", _PROGRESS_CB), ("progress_user", ctypes.c_void_p),
                ("log", _LOG_CB), ("log_user", ctypes.c_void_p), ("cancel", _CANCEL_CB),
                ("cancel_user", ctypes.c_void_p), ("stage", ctypes.c_char_p), ("chunk_size", ctypes.c_size_t)]


class _ObjectInfo(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("size", ctypes.c_uint64), ("mtime", ctypes.c_int64)]


class _ArtifactOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("kind", ctypes.c_char_p), ("name_prefix", ctypes.c_char_p),
                ("compression", ctypes.c_int), ("level", ctypes.c_int), ("format", ctypes.c_char_p),
                ("extension", ctypes.c_char_p)]


class _PgSourceOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("conninfo", ctypes.c_char_p), ("pg_dump_path", ctypes.c_char_p),
                ("pg_dump_args", ctypes.POINTER(ctypes.c_char_p)), ("pg_dump_args_count", ctypes.c_size_t)]


class _BaseBackupSourceOpts(ctypes.Structure):
    _c_name_ = "mevb_basebackup_source_opts"
    _fields_ = [("struct_size", ctypes.c_uint32), ("conninfo", ctypes.c_char_p), ("fast_checkpoint", ctypes.c_int),
                ("max_rate_kbps", ctypes.c_uint32), ("include_wal", ctypes.c_int)]


class _PgSinkOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("conninfo", ctypes.c_char_p), ("dbname", ctypes.c_char_p),
                ("clean", ctypes.c_int), ("pg_restore_path", ctypes.c_char_p),
                ("pg_restore_args", ctypes.POINTER(ctypes.c_char_p)), ("pg_restore_args_count", ctypes.c_size_t),
                ("jobs", ctypes.c_int), ("staging_dir", ctypes.c_char_p)]


class _FilesSourceOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("base_dir", ctypes.c_char_p),
                ("paths", ctypes.POINTER(ctypes.c_char_p)), ("paths_count", ctypes.c_size_t),
                ("excludes", ctypes.POINTER(ctypes.c_char_p)), ("excludes_count", ctypes.c_size_t),
                ("include_secrets", ctypes.c_int), ("ignore_missing", ctypes.c_int)]


class _ExtractSinkOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("target", ctypes.c_char_p),
                ("only", ctypes.POINTER(ctypes.c_char_p)), ("only_count", ctypes.c_size_t),
                ("overwrite", ctypes.c_int), ("keep_special_modes", ctypes.c_int)]


class _RedisSourceOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("url", ctypes.c_char_p), ("password", ctypes.c_char_p),
                ("default_password", ctypes.c_char_p), ("mode", ctypes.c_char_p), ("timeout_seconds", ctypes.c_int)]


class _RedisOfflineSinkOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("data_dir", ctypes.c_char_p), ("rdb_name", ctypes.c_char_p),
                ("before", ctypes.POINTER(ctypes.c_char_p)), ("before_count", ctypes.c_size_t),
                ("after", ctypes.POINTER(ctypes.c_char_p)), ("after_count", ctypes.c_size_t),
                ("target_rdb_version", ctypes.c_int)]


class _RedisLiveSinkOpts(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("url", ctypes.c_char_p), ("password", ctypes.c_char_p),
                ("default_password", ctypes.c_char_p), ("replace", ctypes.c_int)]


_declare("mevb_source_new_callbacks", ctypes.c_int, [ctypes.POINTER(_p), _READ_CB, _CLOSE_CB, _p], True)
_declare("mevb_source_new_fd", ctypes.c_int, [ctypes.POINTER(_p), ctypes.c_int, ctypes.c_int], True)
_declare("mevb_source_new_path", ctypes.c_int, [ctypes.POINTER(_p), ctypes.c_char_p], True)
_declare("mevb_source_free", None, [_p])
_declare("mevb_sink_new_callbacks", ctypes.c_int, [ctypes.POINTER(_p), _WRITE_CB, _COMMIT_CB, _ABORT_CB, _p], True)
_declare("mevb_sink_new_path", ctypes.c_int, [ctypes.POINTER(_p), ctypes.c_char_p, ctypes.c_int], True)
_declare("mevb_sink_free", None, [_p])
_declare("mevb_filter_new_compressor", ctypes.c_int, [ctypes.POINTER(_p), ctypes.c_int, ctypes.c_int], True)
_declare("mevb_filter_new_throttle", ctypes.c_int, [ctypes.POINTER(_p), ctypes.c_uint64], True)
_declare("mevb_filter_new_decompressor", ctypes.c_int, [ctypes.POINTER(_p), ctypes.c_int], True)
_declare("mevb_filter_new_observer", ctypes.c_int, [ctypes.POINTER(_p)], True)
_declare("mevb_filter_observed_bytes", ctypes.c_uint64, [_p])
_declare("mevb_filter_observed_sha256", ctypes.c_char_p, [_p])
_declare("mevb_filter_free", None, [_p])
_declare("mevb_filter_new_age_encrypt", ctypes.c_int,
         [ctypes.POINTER(_p), ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t], True)
_declare("mevb_filter_new_age_decrypt", ctypes.c_int, [ctypes.POINTER(_p), ctypes.c_char_p], True)
_declare("mevb_filter_new_age_decrypt_file", ctypes.c_int, [ctypes.POINTER(_p), ctypes.c_char_p], True)
_declare("mevb_age_generate", ctypes.c_int,
         [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t], True)
_declare("mevb_run_opts_init", ctypes.c_int, [ctypes.POINTER(_RunOpts), ctypes.c_size_t], True)
_declare("mevb_pipeline_run", ctypes.c_int, [_p, ctypes.POINTER(_p), ctypes.c_size_t, _p, ctypes.POINTER(_RunOpts)],
         True)
_declare("mevb_storage_open", ctypes.c_int, [ctypes.POINTER(_p), ctypes.c_char_p, ctypes.POINTER(_RepoOpts)], True)
_declare("mevb_storage_free", None, [_p])
_declare("mevb_storage_put", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.POINTER(_p)], True)
_declare("mevb_storage_get", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.POINTER(_p)], True)
_declare("mevb_storage_stat", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.POINTER(_ObjectInfo)], True)
_declare("mevb_storage_remove", ctypes.c_int, [_p, ctypes.c_char_p], True)
_declare("mevb_storage_list", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.POINTER(_p)], True)
_declare("mevb_object_list_count", ctypes.c_size_t, [_p])
_declare("mevb_object_list_key", ctypes.c_char_p, [_p, ctypes.c_size_t])
_declare("mevb_object_list_size", ctypes.c_uint64, [_p, ctypes.c_size_t])
_declare("mevb_object_list_mtime", ctypes.c_int64, [_p, ctypes.c_size_t])
_declare("mevb_object_list_free", None, [_p])
_declare("mevb_artifact_opts_init", ctypes.c_int, [ctypes.POINTER(_ArtifactOpts), ctypes.c_size_t], True)
_declare("mevb_repo_put_artifact", ctypes.c_int,
         [_p, _p, ctypes.POINTER(_ArtifactOpts), ctypes.POINTER(_RunOpts), ctypes.POINTER(_p)], True)
_declare("mevb_repo_get_artifact", ctypes.c_int, [_p, _p, _p, ctypes.POINTER(_RunOpts)], True)

_declare("mevb_pg_source_opts_init", ctypes.c_int, [ctypes.POINTER(_PgSourceOpts), ctypes.c_size_t], True)
_declare("mevb_source_new_pg_dump", ctypes.c_int, [ctypes.POINTER(_p), ctypes.POINTER(_PgSourceOpts)], True)
_declare("mevb_basebackup_source_opts_init", ctypes.c_int,
         [ctypes.POINTER(_BaseBackupSourceOpts), ctypes.c_size_t], True)
_declare("mevb_source_new_basebackup", ctypes.c_int, [ctypes.POINTER(_p), ctypes.POINTER(_BaseBackupSourceOpts)],
         True)
_declare("mevb_pg_sink_opts_init", ctypes.c_int, [ctypes.POINTER(_PgSinkOpts), ctypes.c_size_t], True)
_declare("mevb_sink_new_pg_restore", ctypes.c_int, [ctypes.POINTER(_p), ctypes.POINTER(_PgSinkOpts)], True)
_declare("mevb_files_source_opts_init", ctypes.c_int, [ctypes.POINTER(_FilesSourceOpts), ctypes.c_size_t], True)
_declare("mevb_source_new_files_tar", ctypes.c_int, [ctypes.POINTER(_p), ctypes.POINTER(_FilesSourceOpts)], True)
_declare("mevb_extract_sink_opts_init", ctypes.c_int, [ctypes.POINTER(_ExtractSinkOpts), ctypes.c_size_t], True)
_declare("mevb_sink_new_extract", ctypes.c_int, [ctypes.POINTER(_p), ctypes.POINTER(_ExtractSinkOpts)], True)
_declare("mevb_redis_source_opts_init", ctypes.c_int, [ctypes.POINTER(_RedisSourceOpts), ctypes.c_size_t], True)
_declare("mevb_source_new_redis_rdb", ctypes.c_int, [ctypes.POINTER(_p), ctypes.POINTER(_RedisSourceOpts)], True)
_declare("mevb_redis_offline_sink_opts_init", ctypes.c_int,
         [ctypes.POINTER(_RedisOfflineSinkOpts), ctypes.c_size_t], True)
_declare("mevb_sink_new_redis_offline", ctypes.c_int, [ctypes.POINTER(_p), ctypes.POINTER(_RedisOfflineSinkOpts)],
         True)

_declare("mevb_redis_live_sink_opts_init", ctypes.c_int, [ctypes.POINTER(_RedisLiveSinkOpts), ctypes.c_size_t],
         True)
_declare("mevb_sink_new_redis_live", ctypes.c_int, [ctypes.POINTER(_p), ctypes.POINTER(_RedisLiveSinkOpts)], True)

_COMPRESSIONS = {"none": 0, "gzip": 1, "zstd": 2}


def _compression(name: str) -> int:
    try:
        return _COMPRESSIONS[name]
    except KeyError:
        raise InvalidArgument(f"unknown compression {name!r} (expected gzip, zstd or none)", 1) from None


_H = TypeVar("_H", bound="_Handle")


class _Handle:
    """An owned handle of the stream layer: freed by close() (or the context manager)."""

    _free: Callable[[Any], None]

    def __init__(self) -> None:
        self._h = _p()
        self._error: Optional[BaseException] = None  # raised by a Python callback during a run

    def close(self) -> None:
        if self._h:
            type(self)._free(self._h)
            self._h = _p()

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _handle(self) -> _p:
        if not self._h:
            raise InvalidArgument(f"this {type(self).__name__} is closed", 1)
        return self._h


class Source(_Handle):
    """Produces bytes for a run: from an iterable of bytes, a file descriptor, a path, or
    Storage.get(). A run consumes it."""

    _free = staticmethod(_lib.mevb_source_free)

    def __init__(self) -> None:
        super().__init__()
        self._keep: Tuple[Any, ...] = ()

    @classmethod
    def from_iterable(cls, chunks: Iterable[bytes]) -> "Source":
        """The bytes of `chunks`, in order (any iterable of bytes-like objects, e.g. a generator)."""
        src = cls()
        it = iter(chunks)
        pending = bytearray()

        def on_read(_user: Optional[int], buf: Optional[int], cap: int,
                    got: "ctypes._Pointer[ctypes.c_size_t]") -> int:
            try:
                while not pending:
                    chunk = next(it, None)
                    if chunk is None:
                        got[0] = 0
                        return 0
                    pending.extend(chunk)
                n = min(cap, len(pending))
                if buf is None:
                    raise ValueError("the library gave a NULL buffer")
                ctypes.memmove(buf, bytes(pending[:n]), n)
                del pending[:n]
                got[0] = n
                return 0
            except BaseException as e:  # fails the run; re-raised after it
                src._error = e
                return IOError.code

        src._keep = (_READ_CB(on_read), _CLOSE_CB(0))
        _lib.mevb_source_new_callbacks(ctypes.byref(src._h), src._keep[0], src._keep[1], None)
        return src

    @classmethod
    def from_fd(cls, fd: int, close_fd: bool = False) -> "Source":
        src = cls()
        _lib.mevb_source_new_fd(ctypes.byref(src._h), fd, int(close_fd))
        return src

    @classmethod
    def from_path(cls, path: Union[str, os.PathLike[str]]) -> "Source":
        src = cls()
        _lib.mevb_source_new_path(ctypes.byref(src._h), _enc(path))
        return src


    @classmethod
    def pg_dump(cls, conninfo: str, *, pg_dump: Optional[str] = None,
                pg_dump_args: Optional[Sequence[str]] = None) -> "Source":
        """pg_dump -Fc (uncompressed) of one snapshot of the database `conninfo` names; the
        run fails with DumpFailed when pg_dump does."""
        o = _PgSourceOpts()
        _lib.mevb_pg_source_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.conninfo = _enc(conninfo)
        o.pg_dump_path = _enc(pg_dump)
        o.pg_dump_args, o.pg_dump_args_count, keep = _argv(pg_dump_args)
        src = cls()
        _lib.mevb_source_new_pg_dump(ctypes.byref(src._h), ctypes.byref(o))
        del keep
        return src

    @classmethod
    def basebackup(cls, conninfo: str, *, fast_checkpoint: bool = True, max_rate_kbps: int = 0,
                   include_wal: bool = True) -> "Source":
        """A base backup over the replication protocol (PostgreSQL 15+) as one tar of the
        data directory, as `pg_basebackup -D - -Ft -X fetch` writes it: backup_manifest last
        and, with `include_wal`, the backup's WAL in pg_wal/. Starts the backup now; raises
        Unsupported for a server with tablespaces beyond the main one."""
        o = _BaseBackupSourceOpts()
        _lib.mevb_basebackup_source_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.conninfo = _enc(conninfo)
        o.fast_checkpoint = 1 if fast_checkpoint else 0
        o.max_rate_kbps = int(max_rate_kbps)
        o.include_wal = 1 if include_wal else 0
        src = cls()
        _lib.mevb_source_new_basebackup(ctypes.byref(src._h), ctypes.byref(o))
        return src

    @classmethod
    def files_tar(cls, paths: Sequence[Union[str, os.PathLike[str]]], *,
                  base_dir: Optional[Union[str, os.PathLike[str]]] = None, exclude: Optional[Sequence[str]] = None,
                  include_secrets: bool = False, ignore_missing: bool = False) -> "Source":
        """The files, directories and globs `paths` (relative to `base_dir`) as a pax tar,
        with the built-in secret excludes unless `include_secrets`."""
        o = _FilesSourceOpts()
        _lib.mevb_files_source_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.base_dir = _enc(base_dir)
        o.paths, o.paths_count, keep_p = _argv([os.fspath(p) for p in paths])
        o.excludes, o.excludes_count, keep_e = _argv(list(exclude) if exclude else None)
        o.include_secrets = 1 if include_secrets else 0
        o.ignore_missing = 1 if ignore_missing else 0
        src = cls()
        _lib.mevb_source_new_files_tar(ctypes.byref(src._h), ctypes.byref(o))
        del keep_p, keep_e
        return src

    @classmethod
    def redis_rdb(cls, url: str, *, password: Optional[str] = None, mode: str = "auto",
                  timeout_seconds: int = 0) -> "Source":
        """The RDB of the Redis server at `url` (by BGSAVE or replication, as `mode` says).
        The password: `password`, else the URL's, else MEVBACKUP_REDIS_PASSWORD."""
        o = _RedisSourceOpts()
        _lib.mevb_redis_source_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.url = _enc(url)
        o.password = _enc(password)
        o.default_password = _enc(os.environ.get("MEVBACKUP_REDIS_PASSWORD"))
        o.mode = _enc(mode)
        o.timeout_seconds = int(timeout_seconds)
        src = cls()
        _lib.mevb_source_new_redis_rdb(ctypes.byref(src._h), ctypes.byref(o))
        return src


class Sink(_Handle):
    """Consumes bytes of a run and publishes them on commit: to a callback, a file object,
    a path (atomically), or Storage.put(). A run consumes it."""

    _free = staticmethod(_lib.mevb_sink_free)

    def __init__(self) -> None:
        super().__init__()
        self._keep: Tuple[Any, ...] = ()

    @classmethod
    def to_callback(cls, write: Callable[[bytes], Any], commit: Optional[Callable[[], Any]] = None,
                    abort: Optional[Callable[[], Any]] = None) -> "Sink":
        """write(chunk) for every chunk; commit() once after the last when the run succeeded;
        abort() when it failed. An exception in write or commit fails the run."""
        sink = cls()

        def on_write(_user: Optional[int], data: Optional[int], size: int) -> int:
            try:
                write(ctypes.string_at(data, size) if size and data is not None else b"")
                return 0
            except BaseException as e:
                sink._error = e
                return IOError.code

        def on_commit(_user: Optional[int]) -> int:
            try:
                if commit is not None:
                    commit()
                return 0
            except BaseException as e:
                sink._error = e
                return IOError.code

        def on_abort(_user: Optional[int]) -> None:
            if abort is not None:
                try:
                    abort()
                except BaseException as e:
                    sink._error = sink._error or e

        sink._keep = (_WRITE_CB(on_write), _COMMIT_CB(on_commit), _ABORT_CB(on_abort))
        _lib.mevb_sink_new_callbacks(ctypes.byref(sink._h), *sink._keep, None)
        return sink

    @classmethod
    def to_file(cls, fileobj: Any) -> "Sink":
        """Writes into a binary file object (its write method); flushes it on commit."""
        flush = getattr(fileobj, "flush", None)
        return cls.to_callback(fileobj.write, flush)

    @classmethod
    def to_path(cls, path: Union[str, os.PathLike[str]], replace: bool = False) -> "Sink":
        """A file that appears only on commit; an existing one is replaced only if `replace`."""
        sink = cls()
        _lib.mevb_sink_new_path(ctypes.byref(sink._h), _enc(path), int(replace))
        return sink


    @classmethod
    def pg_restore(cls, conninfo: str, *, dbname: Optional[str] = None, clean: bool = False,
                   pg_restore: Optional[str] = None, pg_restore_args: Optional[Sequence[str]] = None,
                   jobs: int = 1, staging_dir: Optional[str] = None) -> "Sink":
        """pg_restore of a custom-format dump into a staging database (created now; raises
        NotEmpty for a non-empty target unless `clean`), swapped into the place of the
        target (`dbname`, else the one `conninfo` names) on commit; dropped otherwise."""
        o = _PgSinkOpts()
        _lib.mevb_pg_sink_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.conninfo = _enc(conninfo)
        o.dbname = _enc(dbname)
        o.clean = 1 if clean else 0
        o.pg_restore_path = _enc(pg_restore)
        o.pg_restore_args, o.pg_restore_args_count, keep = _argv(pg_restore_args)
        o.jobs = int(jobs)
        o.staging_dir = _enc(staging_dir)
        sink = cls()
        _lib.mevb_sink_new_pg_restore(ctypes.byref(sink._h), ctypes.byref(o))
        del keep
        return sink

    @classmethod
    def extract(cls, target: Union[str, os.PathLike[str]], *, only: Optional[Sequence[str]] = None,
                overwrite: bool = False, keep_special_modes: bool = False) -> "Sink":
        """A safe extract of a tar stream into `target`: every member checked (RestoreFailed
        naming an unsafe one), moved in only on commit; the target unchanged otherwise."""
        o = _ExtractSinkOpts()
        _lib.mevb_extract_sink_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.target = _enc(target)
        o.only, o.only_count, keep = _argv(list(only) if only else None)
        o.overwrite = 1 if overwrite else 0
        o.keep_special_modes = 1 if keep_special_modes else 0
        sink = cls()
        _lib.mevb_sink_new_extract(ctypes.byref(sink._h), ctypes.byref(o))
        del keep
        return sink

    @classmethod
    def redis_offline(cls, data_dir: Union[str, os.PathLike[str]], *, rdb_name: Optional[str] = None,
                      before: Optional[Sequence[str]] = None, after: Optional[Sequence[str]] = None,
                      target_rdb_version: int = 0) -> "Sink":
        """An RDB stream written atomically into a stopped server's `data_dir` on commit
        (checked as an RDB first); `before`/`after` argv lists run around the rename."""
        o = _RedisOfflineSinkOpts()
        _lib.mevb_redis_offline_sink_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.data_dir = _enc(data_dir)
        o.rdb_name = _enc(rdb_name)
        o.before, o.before_count, keep_b = _argv(before)
        o.after, o.after_count, keep_a = _argv(after)
        o.target_rdb_version = int(target_rdb_version)
        sink = cls()
        _lib.mevb_sink_new_redis_offline(ctypes.byref(sink._h), ctypes.byref(o))
        del keep_b, keep_a
        return sink


    @classmethod
    def redis_live(cls, url: str, *, password: Optional[str] = None, replace: bool = False) -> "Sink":
        """Every key of an RDB stream into the running server at `url` (RESTORE), refused
        (NotEmpty) when it holds keys unless `replace`. Not atomic. The password: `password`,
        else the URL's, else MEVBACKUP_REDIS_PASSWORD."""
        o = _RedisLiveSinkOpts()
        _lib.mevb_redis_live_sink_opts_init(ctypes.byref(o), ctypes.sizeof(o))
        o.url = _enc(url)
        o.password = _enc(password)
        o.default_password = _enc(os.environ.get("MEVBACKUP_REDIS_PASSWORD"))
        o.replace = 1 if replace else 0
        sink = cls()
        _lib.mevb_sink_new_redis_live(ctypes.byref(sink._h), ctypes.byref(o))
        return sink


class Filter(_Handle):
    """A stage between source and sink: a compressor, a decompressor, or an observer
    (counts the bytes and hashes them: `bytes` and `sha256` after the run)."""

    _free = staticmethod(_lib.mevb_filter_free)

    @classmethod
    def compressor(cls, compression: str = "zstd", level: int = -1) -> "Filter":
        f = cls()
        _lib.mevb_filter_new_compressor(ctypes.byref(f._h), _compression(compression), level)
        return f

    @classmethod
    def decompressor(cls, compression: str = "zstd") -> "Filter":
        f = cls()
        _lib.mevb_filter_new_decompressor(ctypes.byref(f._h), _compression(compression))
        return f

    @classmethod
    def throttle(cls, rate: Union[int, str]) -> "Filter":
        """Passes bytes through at most `rate` (bytes per second, or "20MiB/s") on average."""
        f = cls()
        _lib.mevb_filter_new_throttle(ctypes.byref(f._h), parse_rate(rate) if isinstance(rate, str) else int(rate))
        return f

    @classmethod
    def observer(cls) -> "Filter":
        f = cls()
        _lib.mevb_filter_new_observer(ctypes.byref(f._h))
        return f

    @classmethod
    def age_encrypt(cls, recipients: Sequence[str]) -> "Filter":
        """Encrypts in the age format to X25519 recipients ("age1..."); `age -d` decrypts."""
        if isinstance(recipients, str):
            recipients = [recipients]
        arr, n, _keep = _argv(list(recipients))
        f = cls()
        _lib.mevb_filter_new_age_encrypt(ctypes.byref(f._h), arr, n)
        return f

    @classmethod
    def age_decrypt(cls, identity_text: Optional[str] = None,
                    identity_file: Union[str, "os.PathLike[str]", None] = None) -> "Filter":
        """Decrypts age (binary or armored) with the identities of an age-keygen file: its
        text, or its path (refused when group or others may read it)."""
        if (identity_text is None) == (identity_file is None):
            raise ValueError("give exactly one of identity_text and identity_file")
        f = cls()
        if identity_text is not None:
            _lib.mevb_filter_new_age_decrypt(ctypes.byref(f._h), _enc(identity_text))
        else:
            _lib.mevb_filter_new_age_decrypt_file(ctypes.byref(f._h), _enc(identity_file))
        return f

    @property
    def bytes(self) -> int:
        return int(_lib.mevb_filter_observed_bytes(self._handle()))

    @property
    def sha256(self) -> str:
        s = _lib.mevb_filter_observed_sha256(self._handle())
        return str(s.decode()) if s else ""


class _RunCallbacks:
    """mevb_run_opts for one call, its callbacks kept alive, their exceptions carried."""

    def __init__(self, progress: Optional[ProgressFn], cancel: Optional[Callable[[], bool]],
                 stage: Optional[str], log: Optional[LogFn] = None):
        self.error: Optional[BaseException] = None

        def on_progress(p: "ctypes._Pointer[_Progress]", _user: Optional[int]) -> int:
            if progress is None:
                return 0
            try:
                pr = p.contents
                progress(Progress(pr.stage.decode() if pr.stage else "", pr.bytes_in, pr.bytes_out,
                                  pr.elapsed_seconds, bool(pr.done)))
                return 0
            except BaseException as e:
                self.error = e
                return 1

        def on_cancel(_user: Optional[int]) -> int:
            try:
                return 1 if cancel is not None and cancel() else 0
            except BaseException as e:
                self.error = e
                return 1

        def on_log(level: int, message: bytes, _user: Optional[int]) -> None:
            if log is not None:
                try:
                    log(level, message.decode("utf-8", "replace"))
                except BaseException:
                    pass

        self.opts = _RunOpts()
        _lib.mevb_run_opts_init(ctypes.byref(self.opts), ctypes.sizeof(self.opts))
        self._keep = (_PROGRESS_CB(on_progress), _CANCEL_CB(on_cancel), _LOG_CB(on_log), _enc(stage))
        if progress is not None:
            self.opts.progress = self._keep[0]
        if cancel is not None:
            self.opts.cancel = self._keep[1]
        if log is not None:
            self.opts.log = self._keep[2]
        self.opts.stage = self._keep[3]

    def call(self, fn: Callable[[], Any], parts: Sequence[_Handle]) -> None:
        """fn() -> re-raises what a Python callback raised (it failed or cancelled the run)."""
        try:
            fn()
        except Error:
            for e in [self.error] + [p._error for p in parts]:
                if e is not None:
                    raise e
            raise


def age_generate() -> Tuple[str, str]:
    """A fresh age X25519 identity: (secret "AGE-SECRET-KEY-1...", recipient "age1...")."""
    secret = ctypes.create_string_buffer(80)
    recipient = ctypes.create_string_buffer(80)
    _lib.mevb_age_generate(secret, len(secret), recipient, len(recipient))
    try:
        return secret.value.decode(), recipient.value.decode()
    finally:
        ctypes.memset(secret, 0, len(secret))


def pipeline_run(source: Source, filters: Sequence[Filter], sink: Sink, *, progress: Optional[ProgressFn] = None,
                 cancel: Optional[Callable[[], bool]] = None, stage: Optional[str] = None,
                 log: Optional[LogFn] = None) -> None:
    """Runs source -> filters -> sink (mevb_pipeline_run). The sink is committed only if every
    stage succeeded. `cancel()` returning true cancels; an exception raised by a callback
    fails the run and is re-raised after it."""
    arr = (_p * max(len(filters), 1))(*[f._handle() for f in filters])
    cb = _RunCallbacks(progress, cancel, stage, log)
    cb.call(lambda: _lib.mevb_pipeline_run(source._handle(), arr, len(filters), sink._handle(),
                                           ctypes.byref(cb.opts)), [source, sink])


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: int  # seconds since the epoch


class Storage(_Handle):
    """Where artifacts live: a local directory or ``s3://bucket/prefix`` (the Uploader).
    S3 settings are keyword arguments as for Repository."""

    _free = staticmethod(_lib.mevb_storage_free)

    def __init__(self, url: Union[str, os.PathLike[str]], **storage: Any):
        super().__init__()
        opts = _RepoOpts(ctypes.sizeof(_RepoOpts))
        for name, value in storage.items():
            if name in Repository._S3_STR:
                setattr(opts, name, _enc(None if value is None else str(value)))
            elif name in Repository._S3_INT:
                setattr(opts, name, int(value or 0))
            else:
                raise TypeError(f"Storage() got an unexpected keyword argument {name!r}")
        _lib.mevb_storage_open(ctypes.byref(self._h), _enc(url), ctypes.byref(opts))

    def put(self, key: str) -> Sink:
        """A sink publishing `key` on commit (never over an existing key: AlreadyExists)."""
        sink = Sink()
        _lib.mevb_storage_put(self._handle(), _enc(key), ctypes.byref(sink._h))
        return sink

    def get(self, key: str) -> Source:
        src = Source()
        _lib.mevb_storage_get(self._handle(), _enc(key), ctypes.byref(src._h))
        return src

    def stat(self, key: str) -> ObjectInfo:
        info = _ObjectInfo(ctypes.sizeof(_ObjectInfo))
        _lib.mevb_storage_stat(self._handle(), _enc(key), ctypes.byref(info))
        return ObjectInfo(key, int(info.size), int(info.mtime))

    def list(self, prefix: str = "") -> List[ObjectInfo]:
        lst = _p()
        _lib.mevb_storage_list(self._handle(), _enc(prefix), ctypes.byref(lst))
        try:
            return [ObjectInfo(_lib.mevb_object_list_key(lst, i).decode(), int(_lib.mevb_object_list_size(lst, i)),
                               int(_lib.mevb_object_list_mtime(lst, i)))
                    for i in range(_lib.mevb_object_list_count(lst))]
        finally:
            _lib.mevb_object_list_free(lst)

    def remove(self, key: str) -> None:
        _lib.mevb_storage_remove(self._handle(), _enc(key))


# ---- a whole-service plan: run, restore, backup sets ------------------------------------


class _PlanRunOpts(ctypes.Structure):
    # "from" is a Python keyword: set it with setattr(opts, "from", ...).
    _fields_ = [("struct_size", ctypes.c_uint32), ("progress", _PROGRESS_CB), ("progress_user", ctypes.c_void_p),
                ("set", ctypes.c_char_p), ("dry_run", ctypes.c_int), ("from", ctypes.c_char_p),
                ("report_dir", ctypes.c_char_p), ("target_time", ctypes.c_char_p),
                ("mevbackup_path", ctypes.c_char_p)]


class _PlanStep(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("name", ctypes.c_char_p), ("status", ctypes.c_char_p),
                ("message", ctypes.c_char_p), ("started_at", ctypes.c_char_p), ("seconds", ctypes.c_double)]


_declare("mevb_plan_load", ctypes.c_int, [ctypes.POINTER(_p), ctypes.c_char_p, ctypes.POINTER(_RepoOpts)], True)
_declare("mevb_plan_free", None, [_p])
_declare("mevb_plan_cancel", None, [_p])
_declare("mevb_plan_name", ctypes.c_char_p, [_p])
_declare("mevb_plan_run_opts_init", ctypes.c_int, [ctypes.POINTER(_PlanRunOpts), ctypes.c_size_t], True)
_declare("mevb_plan_run", ctypes.c_int, [_p, ctypes.POINTER(_PlanRunOpts), ctypes.POINTER(_p)], True)
_declare("mevb_plan_restore", ctypes.c_int, [_p, ctypes.POINTER(_PlanRunOpts), ctypes.POINTER(_p)], True)
_declare("mevb_plan_drill", ctypes.c_int, [_p, ctypes.POINTER(_PlanRunOpts), ctypes.POINTER(_p)], True)
_declare("mevb_plan_open_repo", ctypes.c_int, [_p, ctypes.c_size_t, ctypes.POINTER(_p)], True)
_declare("mevb_repo_list_sets", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.POINTER(_p)], True)
_declare("mevb_report_step_count", ctypes.c_size_t, [_p])
_declare("mevb_report_step", ctypes.c_int, [_p, ctypes.c_size_t, ctypes.POINTER(_PlanStep)], True)


def _text(b: Optional[bytes]) -> str:
    """A string the library hands out (NULL as ""); a hook's stderr need not be UTF-8."""
    return b.decode("utf-8", "replace") if b else ""


@dataclass(frozen=True)
class PlanStep:
    """One step of a plan's report: a hook ("hook before_backup[1]"), a source's backup or
    restore ("postgres.main"), the set ("set"), a copy ("copy[1] sync") or "retention"."""

    name: str
    status: str      # "ok", "failed", "skipped" (not run: an earlier step failed), "planned" (dry run)
    message: str
    started_at: str  # RFC 3339 UTC
    seconds: float
    # What the step did, as the JSON report has it: a member's id, path and sha256, a hook's exit, ...
    detail: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class PlanReport:
    """The report of Plan.run or Plan.restore. A returned one has ok True and code 0; the
    report of a failure is the `report` of the exception raised, with ok False and code
    the first failure's (the exception's code)."""

    operation: str   # "run" or "restore"
    plan: str
    set_id: str      # the set written (run) or restored; "" when none
    ok: bool
    code: int        # 0, or the mevb_status of the first failure
    message: str     # one line: what was done, or what failed and what state it left
    seconds: float
    steps: Tuple[PlanStep, ...]
    data: Dict[str, Any] = field(repr=False, compare=False)  # the JSON report, parsed


def _take_plan_report(h: "_p", code: int) -> PlanReport:
    try:
        data = json.loads(_lib.mevb_report_json(h).decode())
        details = [s.get("detail", {}) for s in data.get("steps", [])]
        steps = []
        for i in range(_lib.mevb_report_step_count(h)):
            s = _PlanStep(ctypes.sizeof(_PlanStep))
            _lib.mevb_report_step(h, i, ctypes.byref(s))
            steps.append(PlanStep(_text(s.name), _text(s.status), _text(s.message), _text(s.started_at),
                                  float(s.seconds), details[i] if i < len(details) else {}))
        return PlanReport(operation=str(data.get("operation", "")), plan=str(data.get("plan", "")),
                          set_id=str(data.get("set", "")), ok=_lib.mevb_report_status(h) == 0, code=code,
                          message=_text(_lib.mevb_report_text(h)), seconds=float(data.get("seconds", 0)),
                          steps=tuple(steps), data=data)
    finally:
        _lib.mevb_report_free(h)


@dataclass(frozen=True)
class SetMember:
    """One backup of a set: which source of the plan it is ("postgres.main") and the backup."""

    source: str
    kind: str
    id: str
    path: str
    sha256: str
    source_name: str


@dataclass(frozen=True)
class BackupSet:
    """A backup set: what one run of a plan wrote, a manifest over its members. `complete`
    when every member is there and matches its manifest; `problem` says what is wrong
    otherwise."""

    id: str
    plan: str
    started_at: str
    finished_at: str
    complete: bool
    problem: str
    members: Tuple[SetMember, ...]
    data: Dict[str, Any] = field(repr=False, compare=False)  # as listed, objectives included

    @classmethod
    def _from_json(cls, j: Dict[str, Any]) -> "BackupSet":
        members = tuple(SetMember(str(m["source"]), str(m["kind"]), str(m["id"]), str(m["path"]), str(m["sha256"]),
                                  str(m.get("source_name", ""))) for m in j.get("members", []))
        return cls(id=str(j["id"]), plan=str(j["plan"]), started_at=str(j["started_at"]),
                   finished_at=str(j["finished_at"]), complete=bool(j["complete"]), problem=str(j.get("problem", "")),
                   members=members, data=j)


class Plan:
    """A whole service in one plan file (TOML): its sources, repository and copies,
    objectives, retention and hooks.

        with mevbackup.Plan("/etc/mevbackup/plan.toml") as plan:
            report = plan.run()
            print(report.set_id, [(s.name, s.seconds) for s in report.steps])

    The file is read and checked now: InvalidArgument names the file, line and key of a
    mistake; NotFound when it is missing. The keyword arguments are Repository's (log,
    stall_timeout_seconds, the lock, S3 credentials and retries, max_rate, ...): each
    repository of the plan is opened with them besides the plan's own storage options and keys.

    One rule for the plan's operations: they return their PlanReport when every step
    succeeded, and otherwise raise the Error subclass of the first failure's code
    (ConnectionFailed, DumpFailed, Cancelled, ...) whose `report` is the whole PlanReport
    (ok False, the failed step's status "failed" with its message), or None when the
    library failed before it began one (a repository that does not open).

    cancel() is the one method safe from another thread.
    """

    def __init__(self, path: Union[str, os.PathLike[str]], log: Optional[LogFn] = None,
                 stall_timeout_seconds: int = 0, **options: Any):
        self._h = _p()
        opts, self._keep = _repo_opts("Plan()", log, stall_timeout_seconds, **options)
        _lib.mevb_plan_load(ctypes.byref(self._h), _enc(path), ctypes.byref(opts))
        self.path = os.fspath(path)

    def close(self) -> None:
        if self._h:
            _lib.mevb_plan_free(self._h)
            self._h = _p()

    def __enter__(self) -> "Plan":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _handle(self) -> _p:
        if not self._h:
            raise InvalidArgument("plan is closed", 1)
        return self._h

    @property
    def name(self) -> str:
        """[plan] name, else the file's stem: what its sets are named after."""
        return _text(_lib.mevb_plan_name(self._handle()))

    def _report(self, fn: Callable[..., Any], opts: ctypes.Structure, progress: Optional[ProgressFn]) -> PlanReport:
        """fn(plan, &opts, &report) with opts.progress calling `progress`: the report, or the
        Error of the first failure carrying it. An exception raised by `progress` cancels the
        operation and is raised after it (the Error with the report as its __context__)."""
        cb = _Callbacks(progress)
        opts.progress = cb.c_progress
        h = _p()
        try:
            fn(self._handle(), ctypes.byref(opts), ctypes.byref(h))
        except Error as e:
            if h:
                e.report = _take_plan_report(h, e.code)
            cb.reraise()
            raise
        return _take_plan_report(h, 0)

    def run(self, progress: Optional[ProgressFn] = None) -> PlanReport:
        """Backs up every source, writes the backup set (only when all succeeded), runs the
        hooks around them, then syncs the copies and applies the plan's retention per set.
        `progress` is called during each member's backup."""
        opts = _PlanRunOpts()
        _lib.mevb_plan_run_opts_init(ctypes.byref(opts), ctypes.sizeof(opts))
        return self._report(_lib.mevb_plan_run, opts, progress)

    def restore(self, set: Union[str, BackupSet] = "latest", *, dry_run: bool = False,
                from_: Union[str, os.PathLike[str], None] = None, target_time: Optional[str] = None,
                mevbackup_path: Optional[str] = None, progress: Optional[ProgressFn] = None) -> PlanReport:
        """Restores a backup set (an id, a BackupSet, or "latest": the newest complete one) in
        order: before_restore hooks, PostgreSQL, Redis, files, after_restore hooks. The set is
        checked before anything is touched. `dry_run`: check it and report each step as
        "planned", changing nothing. `from_`: read from this location (a copy's) instead.
        `target_time`: PostgreSQL to that moment through each [pitr] source's base backup and
        WAL (restore_command runs `mevbackup_path wal-fetch`, default "mevbackup" on PATH), the
        other members from the newest set that finished at or before it."""
        opts = _PlanRunOpts()
        _lib.mevb_plan_run_opts_init(ctypes.byref(opts), ctypes.sizeof(opts))
        opts.set = _enc(set.id if isinstance(set, BackupSet) else set)
        opts.dry_run = 1 if dry_run else 0
        setattr(opts, "from", _enc(from_))
        opts.target_time = _enc(target_time)
        opts.mevbackup_path = _enc(mevbackup_path)
        return self._report(_lib.mevb_plan_restore, opts, progress)

    def drill(self, set: Union[str, BackupSet] = "latest", *, report_dir: Union[str, os.PathLike[str], None] = None,
              from_: Union[str, os.PathLike[str], None] = None,
              progress: Optional[ProgressFn] = None) -> PlanReport:
        """A disaster-recovery drill: the set (default the newest complete one) restored into
        the plan's [drill] scratch targets and checked there, each step timed; every scratch
        target removed afterwards (and those a killed drill left, first). Returns the report
        when every check passed, the drill took no longer than the RTO and the set is no older
        than the RPO; else raises with it as Error.report. report.data holds rto_seconds,
        rpo_seconds, set_age_seconds, rto_ok, rpo_ok, checks_ok and, with `report_dir` (where
        the JSON, summary, HTML page and Prometheus textfile go), report_files."""
        opts = _PlanRunOpts()
        _lib.mevb_plan_run_opts_init(ctypes.byref(opts), ctypes.sizeof(opts))
        opts.set = _enc(set.id if isinstance(set, BackupSet) else set)
        opts.report_dir = _enc(report_dir)
        setattr(opts, "from", _enc(from_))
        return self._report(_lib.mevb_plan_drill, opts, progress)

    def cancel(self) -> None:
        """Stops the operation running on this plan (a hook running is killed); safe from
        another thread. Each operation starts uncancelled: a cancel() before it is lost."""
        if self._h:
            _lib.mevb_plan_cancel(self._h)

    def repository(self, index: int = 0) -> Repository:
        """A repository of the plan, opened with its storage options and keys: 0 is
        [repository], 1..N the [[copy]] tables in order (NotFound past the last). Yours to
        close; it outlives the plan. Its `location` is "" (the C API does not say it)."""
        if index < 0:
            raise NotFound(f"plan {self.name} has no repository {index}", NotFound.code)
        h = _p()
        _lib.mevb_plan_open_repo(self._handle(), index, ctypes.byref(h))
        return Repository._wrap(h, "", self._keep)

    def sets(self, index: int = 0) -> List[BackupSet]:
        """This plan's backup sets in repository `index` (as for repository()), oldest first,
        each checked against its members."""
        with self.repository(index) as repo:
            return repo.backup_sets(self.name)
