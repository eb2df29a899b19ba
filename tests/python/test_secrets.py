"""Secrets stay where they belong: children get only the environment they need, the CLI
keeps no core file, the bindings refuse strings C would cut short, and a PostgreSQL server
that never answers cannot hang a backup."""

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from redisserver import RedisServer  # noqa: E402

import mevbackup  # noqa: E402

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws-secret-0d9f2c",
    "MEVBACKUP_S3_SECRET_ACCESS_KEY": "mevb-s3-secret-77a1",
    "REDISCLI_AUTH": "redis-secret-5be3",
    "MEVBACKUP_REDIS_PASSWORD": "redis-secret-91c0",
}


def env_lines(path: Path):
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_pg_dump_gets_pg_variables_and_no_other_secret(pg, cli, repo, tmp_path):
    spy = tmp_path / "pg_dump"
    spy.write_text(f"""#!/bin/bash
if [ "$1" = --version ]; then exec {pg.bindir}/pg_dump --version; fi
env > {tmp_path}/env
cat /proc/$PPID/limits > {tmp_path}/parent_limits
exec {pg.bindir}/pg_dump "$@"
""")
    spy.chmod(0o755)
    r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"), "--pg-dump", spy,
            env={**SECRETS, "MEVBACKUP_STALL_TIMEOUT": "30"})
    assert r.returncode == 0, r.stderr
    env = env_lines(tmp_path / "env")
    text = (tmp_path / "env").read_text()
    for value in SECRETS.values():
        assert value not in text
    assert env["PGPASSWORD"] == pg.password  # pg_dump needs this one
    assert env["PGDATABASE"] == "mev_protection"
    assert env["PGCONNECT_TIMEOUT"] == "30"  # the stall timeout
    assert "PGSSLMODE" not in env  # loopback: libpq's default
    assert set(env) <= {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PWD", "SHLVL", "_", "OLDPWD"} | {
        k for k in env if k.startswith("PG") or k.startswith("LC_")}
    # The CLI runs without core files (and the limit is inherited).
    limits = (tmp_path / "parent_limits").read_text()
    assert re.search(r"^Max core file size\s+0\s+0\s", limits, re.M), limits


def test_hook_gets_no_secret(tools, repo, tmp_path):
    password = "hook-test-Redis-pw"
    with RedisServer(password=password) as rds:
        rds.fill_sample(20)
        env = {**SECRETS, **rds.env(), "PGPASSWORD": "pg-secret-3e11"}  # the real Redis password wins
        r = subprocess.run([tools["cli"], "backup", "redis", "--repo", str(repo), "--redis-url", rds.url(),
                            "--mode", "bgsave"], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        target = tmp_path / "target"
        target.mkdir()
        r = subprocess.run([tools["cli"], "restore", "redis", "--repo", str(repo), "--backup", "latest",
                            "--data-dir", str(target), "--before", f"sh -c 'env > {tmp_path}/hook_env'"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
    text = (tmp_path / "hook_env").read_text()
    for value in [*SECRETS.values(), "pg-secret-3e11", password]:
        assert value not in text
    assert "PATH=" in text


@pytest.mark.parametrize("call", [
    lambda r: r.backup_postgres("dbname=mev_protection\0host=elsewhere"),
    lambda r: r.restore_postgres("latest", dbname="dbname=x", staging_dir="/tmp\0/etc"),
    lambda r: r.backup_postgres("dbname=x", pg_dump_args=["--no-owner\0--clean"]),
])
def test_embedded_nul_is_refused_by_the_bindings(repo, call):
    with mevbackup.Repository(repo) as r:
        with pytest.raises(ValueError) as e:
            call(r)
        assert "NUL" in str(e.value)
    with pytest.raises(ValueError):
        mevbackup.Repository(str(repo) + "\0/etc")


def test_silent_postgres_server_fails_after_the_stall_timeout(tools, repo):
    """A peer that accepts the TCP connection and never says a word."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    held, stop = [], threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])  # kept open, never answered
            except socket.timeout:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    env = {k: v for k, v in os.environ.items() if k != "PGCONNECT_TIMEOUT"}
    env.update({"PGPASSWORD": "unused", "MEVBACKUP_STALL_TIMEOUT": "2"})
    try:
        t0 = time.monotonic()
        # The subprocess timeout bounds the test even where the library would wait forever.
        r = subprocess.run([tools["cli"], "backup", "postgres", "--repo", str(repo), "--dbname",
                            f"host=127.0.0.1 port={port} user=postgres dbname=x"],
                           capture_output=True, text=True, env=env, timeout=60)
        elapsed = time.monotonic() - t0
        assert r.returncode == 1, r.stderr
        assert "timeout expired" in r.stderr and "no answer within 2 s" in r.stderr, r.stderr
        assert elapsed < 30, elapsed
        assert held  # the server did accept
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()
    assert not (Path(repo) / "database").exists() or not any((Path(repo) / "database").iterdir())
