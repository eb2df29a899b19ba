"""The library reads no policy from the environment: in src/ only the documented default
providers (libpq's PG*, the AWS credential chain, PATH, TMPDIR) are read, and the
MEVBACKUP_* variables reach it as options from the CLI and the Python bindings."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Dict, List, Set

import mevbackup

ROOT = Path(__file__).resolve().parents[2]

# file -> the variables it may read (capi/mevbackup.h, "Environment").
ALLOWED: Dict[str, Set[str]] = {
    "src/postgres/pg_conn.cpp": {"PGHOSTADDR", "PGHOST", "PGSSLMODE", "PGCONNECT_TIMEOUT", "PGDATABASE"},
    "src/storage/s3/s3_client.cpp": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                                     "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL",
                                     "AWS_MAX_ATTEMPTS", "AWS_CA_BUNDLE"},
    "src/storage/s3/s3_profile.cpp": {"AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "HOME"},
    "src/io/subprocess.cpp": {"PATH"},
    "src/io/file_stream.cpp": {"TMPDIR"},  # make_staging_file (pg_restore --jobs)
}
# Files with one helper that calls getenv(name) for the names above (env(), env_or_null()).
WRAPPERS: Dict[str, int] = {"src/postgres/pg_conn.cpp": 1, "src/storage/s3/s3_client.cpp": 1,
                            "src/storage/s3/s3_profile.cpp": 1}
# The one file that reads `environ` whole: to build a child's environment from allowed patterns.
ENVIRON_READERS = {"src/io/subprocess.cpp"}


def environment_reads(files: Dict[str, str]) -> List[str]:
    """Every read of the environment in `files` ({path: text}) that the lists above do
    not allow, one message each."""
    problems: List[str] = []
    for path, text in sorted(files.items()):
        code = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
        code = re.sub(r"//[^\n]*", " ", code)
        calls = re.findall(r"\bgetenv\s*\(\s*([^)]*)\)", code)
        names = set(re.findall(r"\b\w*env\w*\s*\(\s*\"([A-Z][A-Z0-9_]*)\"", code))
        if not calls and not names:
            if re.search(r"\benviron\b", code) and path not in ENVIRON_READERS:
                problems.append(f"{path} reads environ")
            continue
        allowed = ALLOWED.get(path)
        if allowed is None:
            problems.append(f"{path} reads the environment ({', '.join(sorted(names)) or 'getenv'}): "
                            "not a documented default provider")
            continue
        for name in sorted(names - allowed):
            problems.append(f"{path} reads {name}")
        indirect = [c for c in calls if not c.strip().startswith('"')]
        if len(indirect) > WRAPPERS.get(path, 0):
            problems.append(f"{path} calls getenv with a name that is not a literal: {indirect}")
        if re.search(r"\benviron\b", code) and path not in ENVIRON_READERS:
            problems.append(f"{path} reads environ")
    return problems


def sources() -> Dict[str, str]:
    out = {}
    for p in sorted((ROOT / "src").rglob("*")):
        if p.suffix in (".cpp", ".hpp", ".h", ".c"):
            out[str(p.relative_to(ROOT))] = p.read_text(errors="replace")
    return out


def test_src_reads_only_the_documented_providers():
    files = sources()
    assert "src/lock/repository_lock.cpp" in files and "src/redis/redis_conn.cpp" in files
    problems = environment_reads(files)
    assert not problems, "the library reads the environment beyond its documented providers:\n  " + \
        "\n  ".join(problems)
    text = "\n".join(files.values())
    assert "MEVBACKUP_" not in "".join(re.findall(r"getenv\s*\([^)]*\)", text))


def test_the_scan_finds_each_kind_of_read():
    assert environment_reads({"src/lock/x.cpp": 'auto v = std::getenv("MEVBACKUP_LOCK_TTL");'}) == [
        "src/lock/x.cpp reads the environment (MEVBACKUP_LOCK_TTL): not a documented default provider"]
    assert environment_reads({"src/storage/s3/s3_client.cpp": 'if (auto v = env("MEVBACKUP_S3_RETRY_BASE_MS")) {}'}) \
        == ["src/storage/s3/s3_client.cpp reads MEVBACKUP_S3_RETRY_BASE_MS"]
    assert environment_reads({"src/io/subprocess.cpp": "const char* n = pick(); std::getenv(n);"}) == [
        "src/io/subprocess.cpp calls getenv with a name that is not a literal: ['n']"]
    assert environment_reads({"src/redis/r.cpp": "for (char** e = environ; *e; ++e) {}"}) == [
        "src/redis/r.cpp reads environ"]
    assert environment_reads({"src/postgres/pg_conn.cpp": '// getenv("MEVBACKUP_X") in a comment\n'
                                                          'env_or_null("PGHOST");'}) == []


def _backup_files(tmp_path: Path, repo: mevbackup.Repository) -> None:
    (tmp_path / "etc").mkdir(exist_ok=True)
    (tmp_path / "etc" / "app.conf").write_text("x = 1\n")
    repo.backup_files(["app.conf"], base=tmp_path / "etc")


def test_the_library_ignores_the_lock_variables_the_bindings_read(tmp_path, monkeypatch):
    monkeypatch.setenv("MEVBACKUP_NO_LOCK", "1")
    # Given explicitly, the option wins: the library itself does not look at the variable.
    with mevbackup.Repository(tmp_path / "locked", no_lock=False) as repo:
        _backup_files(tmp_path, repo)
    assert (tmp_path / "locked" / "locks").is_dir()
    # Left to the bindings' default, the variable applies.
    with mevbackup.Repository(tmp_path / "unlocked") as repo:
        _backup_files(tmp_path, repo)
    assert not (tmp_path / "unlocked" / "locks").exists()
    monkeypatch.setenv("MEVBACKUP_LOCK_TTL", "soon")
    try:
        mevbackup.Repository(tmp_path / "r")
    except mevbackup.InvalidArgument as e:
        assert "MEVBACKUP_LOCK_TTL must be a whole number, not 'soon'" in str(e)
    else:
        raise AssertionError("a bad MEVBACKUP_LOCK_TTL was accepted")


def test_the_cli_reads_lock_durations_with_units_and_names_a_bad_one(tools, tmp_path):
    (tmp_path / "x").write_text("x")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEVBACKUP_")}

    def backup(**lock):
        e = dict(env, **{f"MEVBACKUP_LOCK_{k.upper()}": v for k, v in lock.items()})
        return subprocess.run([tools["cli"], "backup", "files", "--repo", str(tmp_path / "repo"), "--base",
                               str(tmp_path), "x"], env=e, capture_output=True, text=True, timeout=120)

    r = backup(ttl="5m", refresh="30s", wait="1m")
    assert r.returncode == 0, r.stderr
    r = backup(wait="later")
    assert r.returncode == 1
    assert 'MEVBACKUP_LOCK_WAIT: invalid duration "later"' in r.stderr, r.stderr
    r = backup(refresh="0")  # a refresh of 0 would never refresh
    assert r.returncode == 1 and "MEVBACKUP_LOCK_REFRESH" in r.stderr, r.stderr
    r = backup(ttl="100000w")
    assert r.returncode == 1 and 'MEVBACKUP_LOCK_TTL: "100000w" is over 10 years' in r.stderr, r.stderr
