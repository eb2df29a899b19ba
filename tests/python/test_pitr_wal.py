"""WAL archive primitives: mevbackup wal-push (archive_command) / wal-fetch (restore_command)."""
import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
import time

import pytest

import mevbackup
from pgserver import PgServer

SEG = "000000010000000000000003"


def run(cli, *args, env=None):
    return subprocess.run([cli, *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


def test_wal_push_fetch_cli(tools, tmp_path):
    cli = tools["cli"]
    repo = tmp_path / "repo"
    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()
    seg = pg_wal / SEG
    data = os.urandom(64 * 1024) + bytes(512 * 1024)
    seg.write_bytes(data)

    r = run(cli, "wal-push", "--repo", repo, seg)
    assert r.returncode == 0, r.stderr
    stored = repo / "wal" / "00000001" / (SEG + ".gz")
    assert gzip.decompress(stored.read_bytes()) == data  # readable by stock gzip
    assert (repo / "wal" / "00000001" / (SEG + ".sha256")).read_text().strip() == hashlib.sha256(data).hexdigest()

    # Idempotent: the same content again succeeds.
    r = run(cli, "wal-push", "--repo", repo, seg)
    assert r.returncode == 0, r.stderr

    # Different content under the same name fails loudly and changes nothing.
    seg.write_bytes(data + b"x")
    r = run(cli, "wal-push", "--repo", repo, seg)
    assert r.returncode != 0
    assert SEG in r.stderr and "different content" in r.stderr
    assert gzip.decompress(stored.read_bytes()) == data

    # wal-fetch through MEVBACKUP_REPO, replacing %p.
    dest = pg_wal / "RECOVERYXLOG"
    dest.write_bytes(b"stale")
    env = dict(os.environ, MEVBACKUP_REPO=str(repo))
    r = run(cli, "wal-fetch", SEG, dest, env=env)
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == data

    # An absent file: exit 1, no noise, nothing written.
    r = run(cli, "wal-fetch", "--repo", repo, "00000002.history", pg_wal / "h")
    assert r.returncode == 1
    assert r.stderr == ""
    assert not (pg_wal / "h").exists()

    # History files go under their timeline.
    hist = pg_wal / "00000002.history"
    hist.write_text("1\t0/3000000\tno recovery target specified\n")
    assert run(cli, "wal-push", "--repo", repo, hist).returncode == 0
    assert (repo / "wal" / "00000002" / "00000002.history.gz").exists()

    # Not a WAL file name: a usage-level error, not a silent success.
    other = pg_wal / "postgresql.conf"
    other.write_text("x")
    r = run(cli, "wal-push", "--repo", repo, other)
    assert r.returncode != 0 and "not a WAL file name" in r.stderr


def test_wal_push_fetch_python(tmp_path):
    repo = mevbackup.Repository(str(tmp_path / "repo"))
    seg = tmp_path / SEG
    seg.write_bytes(b"wal bytes" * 1000)
    assert repo.wal_push(seg) is True
    assert repo.wal_push(seg) is False
    seg.write_bytes(b"other")
    with pytest.raises(mevbackup.AlreadyExists):
        repo.wal_push(seg)
    assert repo.wal_fetch(SEG, tmp_path / "out") is True
    assert (tmp_path / "out").read_bytes() == b"wal bytes" * 1000
    assert repo.wal_fetch("000000010000000000000004", tmp_path / "none") is False
    assert not (tmp_path / "none").exists()


def test_archive_command_with_real_postgres(tools):
    """PostgreSQL 15 archives its segments through `mevbackup wal-push`."""
    work = tempfile.mkdtemp(prefix="mevb-pitr-")
    os.chmod(work, 0o755)
    repo = os.path.join(work, "repo")
    os.mkdir(repo, 0o700)
    if os.geteuid() == 0:
        shutil.chown(repo, "postgres", "postgres")
    try:
        with PgServer(extra_opts="-c archive_mode=on -c wal_level=replica -c archive_timeout=0") as pg:
            cmd = f"{tools['cli']} wal-push --repo {repo} %p"
            pg.psql(f"ALTER SYSTEM SET archive_command = '{cmd}'")
            pg.psql("SELECT pg_reload_conf()")
            pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
            seg = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
            pg.psql("SELECT pg_switch_wal()")
            stored = os.path.join(repo, "wal", seg[:8], seg + ".gz")
            deadline = time.monotonic() + 60
            while not os.path.exists(stored) and time.monotonic() < deadline:
                pg.psql("SELECT pg_stat_clear_snapshot()")
                time.sleep(0.1)
            assert os.path.exists(stored), pg.psql("SELECT last_failed_wal FROM pg_stat_archiver")
            assert pg.psql("SELECT failed_count FROM pg_stat_archiver") == "0"
            out = os.path.join(work, "fetched")
            r = run(tools["cli"], "wal-fetch", "--repo", repo, seg, out)
            assert r.returncode == 0, r.stderr
            assert os.path.getsize(out) == 16 * 1024 * 1024
    finally:
        shutil.rmtree(work, ignore_errors=True)
