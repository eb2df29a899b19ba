"""Issue 9, the repository side of the fault-injection suite: the repository lock (13),
SIGKILL at random points (14), hostile corpora (16), canary credentials (17), umask 000
(18), and the four-point rule for scenarios 1 and 4. Every fault is checked against the
four points: (1) non-zero status with a specific code and a message naming the cause,
(2) earlier good backups unchanged, (3) nothing incomplete under a final name or with a
manifest, (4) `mevbackup verify` still passes."""

import gzip
import hashlib
import json
import os
import random
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from redisserver import RedisServer  # noqa: E402
from s3server import KEY, S3rver, VerifyingProxy  # noqa: E402

import mevbackup  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT / "tests" / "corpora"
BUCKET = "backups"
CANARY_S3 = "CANARY-s3-secret-" + os.urandom(6).hex()
CANARY_PG = "CANARY-pg-password-" + os.urandom(6).hex()
CANARY_REDIS = "CANARY-redis-password-" + os.urandom(6).hex()


# ---- helpers: running the CLI, waiting, the four points ----------------------------------


def wait_for(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def run(tools, *args, env=None, umask=None, timeout=120):
    return subprocess.run([tools["cli"], *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def start(tools, *args, env=None, umask=None):
    """The CLI in its own process group, so a SIGKILL reaches its children too."""
    return subprocess.Popen([tools["cli"], *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True,
                            preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.communicate(timeout=30)


def gated_pg_dump(tmp_path, pg, gate: Path, name="pg_dump"):
    """A pg_dump that streams its first 64 KiB, then waits until `gate` exists: the
    backup holds its lock (and a temporary artifact) until the test opens the gate."""
    script = tmp_path / name
    script.write_text(f"""#!/bin/bash
set -o pipefail
printf '%s\\n' "$0" "$@" > {tmp_path}/{name}.argv
if [ "$1" = --version ]; then exec {pg.bindir}/pg_dump --version; fi
{pg.bindir}/pg_dump "$@" | /usr/bin/python3 -c '
import os, sys, time
deadline = time.time() + 120
while True:
    b = sys.stdin.buffer.read(65536)
    if not b: break
    sys.stdout.buffer.write(b); sys.stdout.buffer.flush()
    while not os.path.exists("{gate}") and time.time() < deadline: time.sleep(0.02)
'
""")
    script.chmod(0o755)
    return script


def holds_lock_locally(repo: Path) -> bool:
    """True once a backup into the local `repo` holds its lock: its temporary artifact
    exists (created only after the lock is taken). Its lock object alone does not say
    that: the writer may still be listing for conflicting locks, and a lock written
    meanwhile makes both back off."""
    d = repo / "database"
    return bool(lock_files(repo)) and d.is_dir() and any(f.name.startswith(".") for f in d.iterdir())


def slow_pg_dump(tmp_path, pg, delay="0.01"):
    script = tmp_path / "pg_dump_slow"
    script.write_text(f"""#!/bin/bash
set -o pipefail
if [ "$1" = --version ]; then exec {pg.bindir}/pg_dump --version; fi
{pg.bindir}/pg_dump "$@" | /usr/bin/python3 -c '
import sys, time
while True:
    b = sys.stdin.buffer.read(32768)
    if not b: break
    sys.stdout.buffer.write(b); sys.stdout.buffer.flush(); time.sleep({delay})
'
""")
    script.chmod(0o755)
    return script


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def lock_files(repo: Path):
    d = repo / "locks"
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")) if d.exists() else []


def good_backups(repo: Path) -> dict:
    """{relative path: sha256} of every complete backup's artifact and manifest."""
    out = {}
    for m in repo.rglob("*.manifest.json"):
        art = Path(str(m)[: -len(".manifest.json")])
        if art.exists():
            out[str(art.relative_to(repo))] = sha(art)
            out[str(m.relative_to(repo))] = sha(m)
    return out


def assert_consistent(repo: Path, allow_locks=False):
    """Point (3): no temporary file, no artifact without its manifest, no manifest
    without its artifact (outside the WAL archive), and (unless allowed) no lock left."""
    for p in repo.rglob("*"):
        rel = p.relative_to(repo)
        if p.is_dir() or rel.parts[0] == "wal":
            continue
        if rel.parts[0] == "locks":
            assert allow_locks, f"lock left behind: {rel}"
            continue
        assert not p.name.startswith("."), f"temporary file left: {rel}"
        name = str(p)
        if name.endswith(".manifest.json"):
            assert Path(name[: -len(".manifest.json")]).exists(), f"manifest without artifact: {rel}"
        elif not name.endswith(".verify.json"):
            assert Path(name + ".manifest.json").exists(), f"artifact without manifest: {rel}"


def assert_four_points(tools, repo, before: dict, rc=None, stderr="", expect=(), exc=None, code=None, env=None,
                       allow_locks=False):
    """The rule of issue 9 after a fault. Give either (rc, stderr) of the CLI or the
    Python exception `exc` with its expected `code`."""
    # (1) a non-zero status with a specific code and a message naming the cause
    if exc is not None:
        assert isinstance(exc, mevbackup.Error) and exc.code == code, (exc, code)
        message = exc.message
    else:
        assert rc not in (None, 0), stderr
        message = stderr
    for e in expect:
        assert e in message, (e, message)
    # (2) no earlier good backup changed or deleted
    now = good_backups(repo)
    for k, h in before.items():
        assert now.get(k) == h, f"earlier backup {k} changed or gone"
    # (3) nothing incomplete under a final name or with a manifest
    assert_consistent(repo, allow_locks)
    # (4) verify passes on everything the repository holds
    if now:
        r = run(tools, "verify", "--repo", repo, "--backup", "all", "--no-record", env=env)
        assert r.returncode == 0, r.stdout + r.stderr


def pg_backup(tools, pg, repo, db="mev_protection", *extra, env=None):
    r = run(tools, "backup", "postgres", "--repo", repo, "--dbname", pg.conninfo(db), "--quiet", *extra,
            env=env or pg.env())
    assert r.returncode == 0, r.stderr
    return r


def lock_env(pg, **kw):
    e = pg.env()
    e.pop("MEVBACKUP_LOCK_WAIT", None)
    for k, v in kw.items():
        e["MEVBACKUP_LOCK_" + k.upper()] = str(v)
    return e


# ---- 13: the repository lock, local ----------------------------------------------------


def test_13_prune_is_locked_out_while_a_backup_runs_then_succeeds(pg, tools, tmp_path):
    repo = tmp_path / "repo"
    pg_backup(tools, pg, repo)
    before = good_backups(repo)
    gate = tmp_path / "gate"
    p = start(tools, "backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"), "--quiet",
              "--pg-dump", gated_pg_dump(tmp_path, pg, gate), env=lock_env(pg))
    try:
        wait_for(lambda: holds_lock_locally(repo), what="the backup's lock and temporary artifact")
        locks = lock_files(repo)
        lock = json.loads(locks[0].read_text())
        assert lock["kind"] == "shared" and lock["pid"] == p.pid and lock["host"] == socket.gethostname()
        assert stat.S_IMODE(locks[0].stat().st_mode) == 0o600
        # The CLI: fails at once, naming the holder.
        t0 = time.monotonic()
        r = run(tools, "prune", "--repo", repo, "--keep-last", "1", env=lock_env(pg))
        assert time.monotonic() - t0 < 10
        assert r.returncode == 11  # locked: try again later
        assert "is locked" in r.stderr and f"shared lock is held by {socket.gethostname()} pid {p.pid}" in r.stderr
        assert r.stderr.count("\n") == 1
        # The library: status 18, mevbackup.Locked.
        with mevbackup.Repository(repo) as rp:
            with pytest.raises(mevbackup.Locked) as e:
                rp.prune(keep_last=1)
        assert e.value.code == 18 == mevbackup.Locked.code and str(repo) in e.value.message
        # A second backup (shared) is not blocked by the first (its own name: two backups
        # of one source started in the same second would race for one final name).
        pg_backup(tools, pg, repo, "mev_protection", "--prefix", "second", env=lock_env(pg))
        # A prune told to wait gets the lock once the backup is done.
        waiting = start(tools, "prune", "--repo", repo, "--keep-last", "10", env=lock_env(pg, wait=60))
        time.sleep(0.5)
        assert waiting.poll() is None  # still waiting
    finally:
        gate.touch()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    # The locked prune changed nothing: the four points (the message was checked above).
    assert_four_points(tools, repo, before, rc=1, stderr=r.stderr, expect=["is locked"])
    assert len([m for m in repo.rglob("*.manifest.json")]) == 3
    assert lock_files(repo) == []


def test_13_backup_is_locked_out_by_an_exclusive_lock_until_its_holder_dies(pg, tools, tmp_path):
    """An exclusive lock as a running prune holds it (planted, with a live pid of this
    host), then the same lock once its process is gone: ignored, and removed by prune."""
    repo = tmp_path / "repo"
    pg_backup(tools, pg, repo)
    before = good_backups(repo)
    holder = subprocess.Popen(["sleep", "60"])
    now = int(time.time())
    (repo / "locks").mkdir(mode=0o700, exist_ok=True)
    lock = repo / "locks" / "00000000deadbeef-00000000.json"
    lock.write_text(json.dumps({"id": "00000000deadbeef", "kind": "exclusive", "host": socket.gethostname(),
                                "pid": holder.pid, "created": now, "refreshed": now}))
    try:
        r = run(tools, "backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"),
                env=lock_env(pg))
        assert_four_points(tools, repo, before, rc=r.returncode, stderr=r.stderr,
                           expect=["is locked", "cannot take a shared lock", "exclusive lock is held by",
                                   f"pid {holder.pid}"], env=dict(pg.env(), MEVBACKUP_NO_LOCK="1"), allow_locks=True)
        assert lock.exists()
        with mevbackup.Repository(repo) as rp:
            with pytest.raises(mevbackup.Locked):
                rp.verify("all")
            cfg = tmp_path / "cfg"
            cfg.mkdir()
            (cfg / "app.yml").write_text("a: 1\n")
            with pytest.raises(mevbackup.Locked):
                rp.backup_files(["app.yml"], base=cfg)
    finally:
        holder.kill()
        holder.wait()
    pg_backup(tools, pg, repo, env=lock_env(pg))  # a dead holder's lock is ignored
    assert lock.exists()  # ... but only an exclusive locker removes it
    r = run(tools, "prune", "--repo", repo, "--keep-last", "5", "--verbose", env=lock_env(pg))
    assert r.returncode == 0, r.stderr
    assert "removing abandoned exclusive lock" in r.stderr and "no longer runs" in r.stderr
    assert not lock.exists()
    assert_consistent(repo)


def test_13_lock_is_refreshed_while_held_and_survives_its_ttl(pg, tools, tmp_path):
    repo = tmp_path / "repo"
    gate = tmp_path / "gate"
    env = lock_env(pg, ttl=3, refresh=1)
    p = start(tools, "backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"), "--quiet",
              "--pg-dump", gated_pg_dump(tmp_path, pg, gate), env=env)
    try:
        first = wait_for(lambda: lock_files(repo), what="the lock")[0]
        seen = {first.name}
        records = [json.loads(first.read_text())]

        def refreshed_twice():
            for f in lock_files(repo):
                if f.name not in seen:
                    seen.add(f.name)
                    try:
                        records.append(json.loads(f.read_text()))
                    except (FileNotFoundError, json.JSONDecodeError):
                        pass
            return len(seen) >= 5

        wait_for(refreshed_twice, timeout=20, what="four refreshes")
        ids = {r["id"] for r in records}
        assert len(ids) == 1  # one lock, rewritten under its next sequence number
        assert records[-1]["refreshed"] >= records[0]["refreshed"] + 2
        # The previous object is removed after each refresh.
        wait_for(lambda: len(lock_files(repo)) == 1, what="one lock object")
        # Older than its TTL, yet refreshed: still live.
        assert time.time() - records[0]["created"] > 3
        r = run(tools, "prune", "--repo", repo, "--keep-last", "1", env=env)
        assert r.returncode == 11 and "is locked" in r.stderr, r.stderr
    finally:
        gate.touch()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert lock_files(repo) == []


def test_13_abandoned_lock_of_a_killed_backup_expires(pg, tools, tmp_path):
    """SIGKILL leaves the lock; as a lock of another host it holds until its TTL passes
    without refresh, then prune takes over and removes it and the killed run's leftovers."""
    repo = tmp_path / "repo"
    pg_backup(tools, pg, repo)
    before = good_backups(repo)
    gate = tmp_path / "gate"
    env = lock_env(pg, ttl=3, refresh=1)
    p = start(tools, "backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"), "--quiet",
              "--pg-dump", gated_pg_dump(tmp_path, pg, gate), env=env)
    lock = wait_for(lambda: lock_files(repo), what="the lock")[0]
    kill_group(p)
    gate.touch()
    lock = lock_files(repo)[0]
    rec = json.loads(lock.read_text())
    assert rec["pid"] == p.pid
    rec["host"] = "another-host"  # its pid cannot be checked from here: only the TTL frees it
    lock.write_text(json.dumps(rec))
    t0 = time.monotonic()
    r = run(tools, "prune", "--repo", repo, "--keep-last", "5", "--grace", "1s", env=env)
    assert r.returncode == 11 and "another-host" in r.stderr, r.stderr

    def prune_ok():
        time.sleep(0.2)
        return run(tools, "prune", "--repo", repo, "--keep-last", "5", "--grace", "1s", "--verbose",
                   env=env).returncode == 0

    wait_for(prune_ok, timeout=20, what="the abandoned lock to expire")
    assert 2 <= time.monotonic() - t0 < 20
    assert lock_files(repo) == []
    assert_four_points(tools, repo, before, rc=r.returncode, stderr=r.stderr, expect=["is locked"])


def test_13_lock_environment_is_validated(pg, tools, tmp_path):
    (tmp_path / "x").write_text("x")
    r = run(tools, "backup", "files", "--repo", tmp_path / "repo", "--base", tmp_path, "x",
            env=lock_env(pg, ttl="soon"))
    assert r.returncode == 1 and "MEVBACKUP_LOCK_TTL" in r.stderr
    e = lock_env(pg)
    e["MEVBACKUP_NO_LOCK"] = "1"
    r = run(tools, "backup", "files", "--repo", tmp_path / "repo", "--base", tmp_path, "x", env=e)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "repo" / "locks").exists()


# ---- 13: the repository lock on S3 -------------------------------------------------------


@pytest.fixture(scope="module")
def s3():
    server = S3rver([BUCKET]).start()
    proxy = VerifyingProxy(server, secret=CANARY_S3).start()  # the secret key is a canary (17)
    try:
        yield proxy
    finally:
        proxy.stop()
        server.stop()


_n = [0]


def s3_repo(s3) -> str:
    _n[0] += 1
    return f"s3://{BUCKET}/frepo{_n[0]}/pg"


def s3_env(s3, pg, **lock):
    e = lock_env(pg, **lock)
    e.update({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": CANARY_S3, "AWS_ENDPOINT_URL": s3.endpoint,
              "AWS_REGION": "us-east-1", "AWS_SESSION_TOKEN": "", "AWS_MAX_ATTEMPTS": ""})
    return e


def s3_lock_puts(s3, url):
    prefix = "/" + url[len("s3://"):] + "/locks/"
    return [c for c in s3.calls("PUT") if c["path"].startswith(prefix)]


def s3_manifests(tools, url, env) -> dict:
    r = run(tools, "list", "--repo", url, "--json", env=env)
    assert r.returncode == 0, r.stderr
    return {b["id"]: b["sha256"] for b in json.loads(r.stdout)}


def test_13_s3_backup_and_prune_concurrently(pg, tools, tmp_path, s3):
    url = s3_repo(s3)
    env = s3_env(s3, pg, ttl=30, refresh=1)
    pg_backup(tools, pg, url, env=env)
    before = s3_manifests(tools, url, env)
    gate = tmp_path / "gate"
    earlier = len(s3_lock_puts(s3, url))  # the first backup's lock
    p = start(tools, "backup", "postgres", "--repo", url, "--dbname", pg.conninfo("mev_protection"), "--quiet",
              "--pg-dump", gated_pg_dump(tmp_path, pg, gate), env=env)
    try:
        # A refresh is written only once the lock is held (the first write alone may still
        # be listing for conflicting locks: a lock written meanwhile makes both back off).
        wait_for(lambda: len(s3_lock_puts(s3, url)) >= earlier + 2, what="the backup's lock refreshed on S3")
        r = run(tools, "prune", "--repo", url, "--keep-last", "1", env=env)
        assert r.returncode == 11
        assert "is locked" in r.stderr and f"pid {p.pid}" in r.stderr and url.split("//")[1] in r.stderr, r.stderr
        after_prune = len(s3_lock_puts(s3, url))
        wait_for(lambda: len(s3_lock_puts(s3, url)) > after_prune, timeout=10, what="a refresh on S3 after the prune")
    finally:
        gate.touch()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    after = s3_manifests(tools, url, env)
    assert all(after.get(k) == v for k, v in before.items()) and len(after) == 2
    assert run(tools, "verify", "--repo", url, "--backup", "all", "--no-record", env=env).returncode == 0
    r = run(tools, "prune", "--repo", url, "--keep-last", "1", env=env)
    assert r.returncode == 0, r.stderr
    assert len(s3_manifests(tools, url, env)) == 1


def test_13_14_s3_killed_backup_leaves_a_lock_that_the_next_prune_clears(pg, tools, tmp_path, s3):
    url = s3_repo(s3)
    env = s3_env(s3, pg, ttl=30)
    pg_backup(tools, pg, url, env=env)
    before = s3_manifests(tools, url, env)
    gate = tmp_path / "gate"
    earlier = len(s3_lock_puts(s3, url))  # the first backup's lock
    p = start(tools, "backup", "postgres", "--repo", url, "--dbname", pg.conninfo("mev_protection"), "--quiet",
              "--pg-dump", gated_pg_dump(tmp_path, pg, gate), env=env)
    wait_for(lambda: len(s3_lock_puts(s3, url)) > earlier, what="the lock object on S3")
    kill_group(p)
    gate.touch()
    lock_key = s3_lock_puts(s3, url)[-1]["path"]
    # Same host, dead pid: abandoned at once; prune removes it.
    r = run(tools, "prune", "--repo", url, "--keep-last", "5", "--verbose", env=env)
    assert r.returncode == 0, r.stderr
    assert "removing abandoned shared lock" in r.stderr
    assert any(c["path"] == lock_key for c in s3.calls("DELETE")) or any(
        lock_key.split("/")[-1] in c["query"] for c in s3.calls("POST", "delete"))
    assert s3_manifests(tools, url, env) == before
    assert run(tools, "verify", "--repo", url, "--backup", "all", "--no-record", env=env).returncode == 0
    # A later exclusive run finds no lock at all.
    r = run(tools, "prune", "--repo", url, "--keep-last", "5", "--verbose", env=env)
    assert r.returncode == 0 and "abandoned" not in r.stderr


# ---- 14: SIGKILL at random points --------------------------------------------------------


def _cleanup_run_and_check(tools, repo, before, env):
    """The next run: prune (exclusive: removes the dead run's lock) with a zero grace
    period cleans temporary files and manifest-less artifacts; then the four points."""
    with mevbackup.Repository(repo) as rp:
        rp.prune(keep_last=100, incomplete_grace_seconds=0)
    now = good_backups(repo)
    for k, h in before.items():
        assert now.get(k) == h
    assert_consistent(repo)
    r = run(tools, "verify", "--repo", repo, "--backup", "all", "--no-record", env=env)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_14_sigkill_during_backup(pg, tools, tmp_path, bigdb, seed):
    rng = random.Random(seed)
    repo = tmp_path / "repo"
    pg_backup(tools, pg, repo)
    before = good_backups(repo)
    offset = rng.randrange(0, 512 << 10)
    p = start(tools, "backup", "postgres", "--repo", repo, "--dbname", pg.conninfo(bigdb), "--quiet",
              "--pg-dump", slow_pg_dump(tmp_path, pg), env=lock_env(pg))

    def reached():
        if p.poll() is not None:
            return True
        tmp = [f for f in (repo / "database").iterdir() if f.name.startswith(".")]
        try:
            return any(f.stat().st_size >= offset for f in tmp)
        except FileNotFoundError:
            return False

    wait_for(reached, timeout=60, what=f"{offset} bytes written")
    kill_group(p)
    _cleanup_run_and_check(tools, repo, before, pg.env())


@pytest.mark.parametrize("seed", [1, 2])
def test_14_sigkill_during_restore(pg, tools, tmp_path, newdb, seed):
    rng = random.Random(seed)
    repo = tmp_path / "repo"
    pg_backup(tools, pg, repo)
    before = good_backups(repo)
    p = start(tools, "restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(newdb("killed")), "--quiet",
              env=lock_env(pg))
    time.sleep(rng.uniform(0.05, 0.6))  # a random point of the restore is the fault itself
    kill_group(p)
    _cleanup_run_and_check(tools, repo, before, pg.env())


def _staging_dbs(pg, target):
    return pg.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{target[:30]}\\_mevb\\_restore\\_%' "
                   "ORDER BY 1").split()


def test_14_sigkill_mid_restore_staging_database_is_dropped_by_the_next_restore(pg, tools, tmp_path, newdb):
    """A restore killed while pg_restore fills its staging database leaves that database on
    the server; the next restore to the same target drops it (its process is dead, nobody is
    connected) and leaves one that is not known to be abandoned."""
    repo = tmp_path / "repo"
    pg_backup(tools, pg, repo)
    target = newdb("killed")
    slow = tmp_path / "pg_restore_slow"
    slow.write_text(f"""#!/bin/bash
if [ "$1" = --version ]; then exec {pg.bindir}/pg_restore --version; fi
sleep 30 & wait
""")
    slow.chmod(0o755)
    p = start(tools, "restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target), "--quiet",
              "--pg-restore", slow, env=lock_env(pg))
    wait_for(lambda: _staging_dbs(pg, target), timeout=30, what="the staging database")
    kill_group(p)
    left = _staging_dbs(pg, target)
    assert len(left) == 1
    # Not ours to judge: another host's staging database (say, a restore running there).
    other = f"{target[:30]}_mevb_restore_0badcafe"
    pg.psql(f'CREATE DATABASE "{other}"')
    pg.psql(f"""COMMENT ON DATABASE "{other}" IS 'mevbackup restore staging: host=elsewhere pid=1'""")
    r = run(tools, "restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target), "--verbose",
            env=lock_env(pg))
    assert r.returncode == 0, r.stderr
    assert f"dropping staging database {left[0]} left by a killed restore" in r.stderr, r.stderr
    assert f"leaving staging database {other}" in r.stderr, r.stderr
    assert _staging_dbs(pg, target) == [other]
    assert pg.psql("SELECT count(*) FROM mev_threats", target) == pg.psql("SELECT count(*) FROM mev_threats",
                                                                         "mev_protection")
    pg.psql(f'DROP DATABASE "{other}"')


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_14_sigkill_during_prune(pg, tools, tmp_path, seed):
    rng = random.Random(seed)
    repo = tmp_path / "repo"
    for _ in range(4):
        pg_backup(tools, pg, repo)
    manifests = sorted(repo.rglob("*.manifest.json"))
    newest = {str(m.relative_to(repo)) for m in manifests[-2:]}
    keep = {k: v for k, v in good_backups(repo).items() if k in newest or k + ".manifest.json" in newest}
    p = start(tools, "prune", "--repo", repo, "--keep-last", "2", env=lock_env(pg))
    time.sleep(rng.uniform(0.0, 0.05))
    kill_group(p)
    # The next run repeats the prune: what the killed one left half done is finished.
    r = run(tools, "prune", "--repo", repo, "--keep-last", "2", env=lock_env(pg))
    assert r.returncode == 0, r.stderr
    assert good_backups(repo) == keep
    _cleanup_run_and_check(tools, repo, keep, pg.env())


def test_14_lock_temp_file_of_a_killed_process_goes_at_once(pg, tools, tmp_path):
    """What a SIGKILL between a lock's temporary write and its rename leaves (the rare
    point test_14_sigkill_during_prune sometimes hits): a lock temporary file younger than
    the TTL. Its name says whose it is (lock ids are <random>-<host tag>-<pid>): the next
    exclusive locker removes at once the one of a process gone from this host, and keeps
    a live process's until the TTL."""
    repo = tmp_path / "repo"
    pg_backup(tools, pg, repo)
    dead = subprocess.Popen(["true"])
    dead.wait()
    tag = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]
    locks = repo / "locks"
    locks.mkdir(exist_ok=True)
    killed = locks / f".0123456789abcdef-{tag}-{dead.pid}-00000000.json.tmp-00000000000000aa"
    live = locks / f".fedcba9876543210-{tag}-{os.getpid()}-00000002.json.tmp-00000000000000bb"
    for f in (killed, live):
        f.write_text('{"id": ')
    r = run(tools, "prune", "--repo", repo, "--keep-last", "10", env=lock_env(pg))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in locks.iterdir()) == [live.name]
    live.unlink()
    assert_consistent(repo)


# ---- 1 and 4 under the four points ------------------------------------------------------


def test_1_pg_dump_backend_killed_four_points(pg, tools, tmp_path, bigdb):
    repo = tmp_path / "repo"
    pg_backup(tools, pg, repo)
    before = good_backups(repo)
    offset = random.Random(1).randrange(64 << 10, 256 << 10)
    p = start(tools, "backup", "postgres", "--repo", repo, "--dbname", pg.conninfo(bigdb), "--quiet",
              "--pg-dump", slow_pg_dump(tmp_path, pg, "0.02"), env=pg.env())

    def flowing():
        tmp = [f for f in (repo / "database").iterdir() if f.name.startswith(".")]
        try:
            return any(f.stat().st_size >= offset for f in tmp)
        except FileNotFoundError:
            return False

    wait_for(flowing, timeout=60, what="the dump to flow")
    assert pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                   "WHERE application_name = 'pg_dump'") == "1"
    out, err = p.communicate(timeout=120)
    assert_four_points(tools, repo, before, rc=p.returncode, stderr=err, expect=["pg_dump", f'"{bigdb}"'],
                       env=pg.env())
    with mevbackup.Repository(repo) as rp:
        assert len(rp.list()) == 1


def test_4_repository_disk_full_four_points(pg, tools, tmp_path, bigdb, monkeypatch):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        repo = mnt / "repo"
        pg_backup(tools, pg, repo, "mev_protection", "--compress", "zstd")
        before = good_backups(repo)
        r = run(tools, "backup", "postgres", "--repo", repo, "--dbname", pg.conninfo(bigdb), "--compress", "none",
                env=pg.env())
        assert_four_points(tools, repo, before, rc=r.returncode, stderr=r.stderr,
                           expect=["No space left on device", "database/"], env=pg.env())
        # Python: the same fault is mevbackup.NoSpace (status 15).
        monkeypatch.setenv("PGPASSWORD", pg.password)
        with mevbackup.Repository(repo) as rp:
            with pytest.raises(mevbackup.NoSpace) as e:
                rp.backup_postgres(pg.conninfo(bigdb), compression="none")
        assert_four_points(tools, repo, before, exc=e.value, code=15, expect=["No space left on device"],
                           env=pg.env())
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ---- 16: hostile corpora -----------------------------------------------------------------


def _plant_files_backup(tools, repo: Path, tar: bytes, tmp_path) -> str:
    seed = tmp_path / "seed"
    seed.mkdir(exist_ok=True)
    (seed / "x").write_text("x")
    r = run(tools, "backup", "files", "--repo", repo, "--base", seed, "--prefix", "hostile", "x")
    assert r.returncode == 0, r.stderr
    art = repo / re.search(r"config/hostile_\d{8}_\d{6}(_\d+)?\.tar\.gz", r.stdout).group(0)
    data = gzip.compress(tar, mtime=0)
    art.write_bytes(data)
    mpath = Path(str(art) + ".manifest.json")
    m = json.loads(mpath.read_text())
    m.update(size=len(data), sha256=hashlib.sha256(data).hexdigest(), payload_size=len(tar),
             payload_sha256=hashlib.sha256(tar).hexdigest())
    m["source"] = {"base_dir": "/nowhere"}
    mpath.write_text(json.dumps(m))
    return m["id"]


def test_16_corpora_are_committed_and_reproducible(tmp_path):
    subprocess.run(["/usr/bin/python3", str(CORPORA / "make_corpora.py"), str(tmp_path)], check=True)
    for sub in ("tar", "rdb"):
        made = sorted(p.name for p in (tmp_path / sub).iterdir())
        committed = sorted(p.name for p in (CORPORA / sub).iterdir())
        assert made == committed and made
        for n in made:
            assert (tmp_path / sub / n).read_bytes() == (CORPORA / sub / n).read_bytes(), n


@pytest.mark.parametrize("name", sorted(p.stem for p in (CORPORA / "tar").glob("*.tar")))
def test_16_hostile_tar_corpus_is_refused_and_nothing_is_written(tools, tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("original\n")
    repo = tmp_path / "repo"
    ident = _plant_files_backup(tools, repo, (CORPORA / "tar" / f"{name}.tar").read_bytes(), tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("keep\n")

    def world():
        return {str(p.relative_to(tmp_path)): (p.is_symlink(), p.read_bytes() if p.is_file() and not p.is_symlink()
                                               else None)
                for p in tmp_path.rglob("*") if "repo" not in p.parts and "seed" not in p.parts}

    before = world()
    for extra in ([], ["--dry-run"], ["--overwrite"]):
        r = run(tools, "restore", "files", "--repo", repo, "--backup", ident, "--target", target, *extra)
        assert r.returncode == 1, (name, r.stdout, r.stderr)
        assert "refusing archive member" in r.stderr, r.stderr
        assert world() == before
    r = run(tools, "restore", "files", "--repo", repo, "--backup", ident, "--target", tmp_path / "fresh")
    assert r.returncode == 1 and not (tmp_path / "fresh").exists()
    assert not Path("/tmp/mevb-corpus-outside").exists()
    assert not (tmp_path / "mevb-corpus-escaped.txt").exists()
    with mevbackup.Repository(repo) as rp:
        with pytest.raises(mevbackup.Error) as e:
            rp.restore_files(ident, target=target)
    assert "refusing archive member" in e.value.message and world() == before


def _plant_redis_backup(repo: Path, rdb: bytes, version: int, ident="corpus_20260101_000000") -> str:
    data = gzip.compress(rdb, mtime=0)
    path = f"redis/{ident}.rdb.gz"
    (repo / "redis").mkdir(parents=True, exist_ok=True)
    (repo / path).write_bytes(data)
    m = {"manifest_version": 1, "id": ident, "kind": "redis", "path": path, "format": "rdb", "compression": "gzip",
         "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "payload_size": len(rdb),
         "payload_sha256": hashlib.sha256(rdb).hexdigest(), "started_at": "2026-01-01T00:00:00Z",
         "finished_at": "2026-01-01T00:00:01Z", "created_at": "2026-01-01T00:00:00Z", "source_name": "corpus",
         "source": {"rdb_version": version}, "tool": {"name": "make_corpora.py"}}
    (repo / (path + ".manifest.json")).write_text(json.dumps(m))
    return ident


def test_16_good_rdb_of_the_corpus_restores(tools, tmp_path):
    repo = tmp_path / "repo"
    ident = _plant_redis_backup(repo, (CORPORA / "rdb" / "good.rdb").read_bytes(), 9)
    ddir = tmp_path / "data"
    ddir.mkdir()
    r = run(tools, "restore", "redis", "--repo", repo, "--backup", ident, "--data-dir", ddir)
    assert r.returncode == 0, r.stderr
    assert (ddir / "dump.rdb").read_bytes() == (CORPORA / "rdb" / "good.rdb").read_bytes()
    chk = subprocess.run(["redis-check-rdb", str(ddir / "dump.rdb")], capture_output=True, text=True)
    assert chk.returncode == 0 and "RDB looks OK" in chk.stdout, chk.stdout


@pytest.mark.parametrize("name,version,expect", [
    ("truncated", 9, "is not a valid RDB"),
    ("bitflip", 9, "is not a valid RDB"),
    ("garbage", 9, "is not a valid RDB"),
    ("newer-v12", 12, "loads at most version"),  # the manifest tells the truth
    ("newer-v12", 9, "loads at most version"),   # the manifest lies: the header still tells
])
def test_16_bad_rdb_corpus_is_refused_and_the_data_dir_untouched(tools, tmp_path, name, version, expect):
    repo = tmp_path / "repo"
    ident = _plant_redis_backup(repo, (CORPORA / "rdb" / f"{name}.rdb").read_bytes(), version)
    ddir = tmp_path / "data"
    ddir.mkdir()
    (ddir / "dump.rdb").write_bytes(b"old contents")
    r = run(tools, "restore", "redis", "--repo", repo, "--backup", ident, "--data-dir", ddir, "--before",
            "touch " + str(tmp_path / "ran"))
    assert r.returncode == 1 and expect in r.stderr, r.stderr
    assert sorted(os.listdir(ddir)) == ["dump.rdb"] and (ddir / "dump.rdb").read_bytes() == b"old contents"
    assert not (tmp_path / "ran").exists()
    code = mevbackup.VersionMismatch if "version" in expect else mevbackup.Corrupt
    with mevbackup.Repository(repo) as rp:
        with pytest.raises(code):
            rp.restore_redis(ident, data_dir=str(ddir))
    assert sorted(os.listdir(ddir)) == ["dump.rdb"]


# ---- 17: canary credentials --------------------------------------------------------------


class ProcScanner:
    """Scans every /proc/*/cmdline (all users) over and over while a run goes on."""

    def __init__(self, canaries):
        self.canaries = [c.encode() for c in canaries]
        self.hits, self.scans, self.saw_dump = [], 0, False
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            for d in Path("/proc").iterdir():
                if not d.name.isdigit():
                    continue
                try:
                    cmd = (d / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"pg_dump" in cmd and b"--snapshot=" in cmd:
                    self.saw_dump = True
                for c in self.canaries:
                    if c in cmd:
                        self.hits.append((d.name, cmd))
            self.scans += 1
            time.sleep(0.002)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _no_canary_in_files(root: Path, canaries):
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            for c in canaries:
                assert c.encode() not in data, f"{c} found in {p}"


def test_17_canary_credentials_appear_nowhere(pg, tools, tmp_path, s3, newdb):
    canaries = [CANARY_PG, CANARY_S3, CANARY_REDIS]
    role = "canary_" + os.urandom(4).hex()
    pg.psql(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{CANARY_PG}'")
    conninfo = pg.conninfo("mev_protection", user=role)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    url = s3_repo(s3)
    env = s3_env(s3, pg)
    env.update(PGPASSWORD=CANARY_PG, TMPDIR=str(tmpdir), MEVBACKUP_REDIS_PASSWORD=CANARY_REDIS)
    local = tmp_path / "repo"
    logs = []
    gate = tmp_path / "gate"
    fake = gated_pg_dump(tmp_path, pg, gate)
    with ProcScanner(canaries) as scan:
        for repo in (url, local):
            gate.unlink(missing_ok=True)
            p = start(tools, "backup", "postgres", "--repo", repo, "--dbname", conninfo, "--pg-dump", fake,
                      "--verbose", env=env)
            # While pg_dump runs (held at the gate), the scanner sees it.
            scan.saw_dump = False
            wait_for(lambda: scan.saw_dump, what="a scan during the dump")
            first = scan.scans
            wait_for(lambda: scan.scans > first + 2, what="more scans")
            gate.touch()
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            logs += [out, err]
        with RedisServer(password=CANARY_REDIS) as rds:
            rds.fill_sample()
            for repo in (url, local):
                r = run(tools, "backup", "redis", "--repo", repo, "--redis-url", rds.url(), "--verbose", env=env)
                assert r.returncode == 0, r.stderr
                logs += [r.stdout, r.stderr]
            # Wrong credentials: the error names the cause, never the secret.
            bad = dict(env, MEVBACKUP_REDIS_PASSWORD=CANARY_REDIS + "-wrong")
            r = run(tools, "backup", "redis", "--repo", local, "--redis-url", rds.url(), env=bad)
            assert r.returncode == 1
            logs += [r.stdout, r.stderr]
        r = run(tools, "restore", "postgres", "--repo", url, "--dbname", pg.conninfo(newdb("canary"), user=role),
                "--source", "mev_protection", "--verbose", env=env)
        assert r.returncode == 0, r.stderr
        logs += [r.stdout, r.stderr]
        for e, what in ((dict(env, PGPASSWORD=CANARY_PG + "-wrong"), "password authentication failed"),
                        (dict(env, AWS_SECRET_ACCESS_KEY=CANARY_S3 + "-wrong"), "SignatureDoesNotMatch")):
            r = run(tools, "backup", "postgres", "--repo", url, "--dbname", conninfo, env=e)
            assert r.returncode == 1 and what in r.stderr, r.stderr
            logs += [r.stdout, r.stderr]
        with mevbackup.Repository(local) as rp:
            try:
                os.environ["PGPASSWORD"] = CANARY_PG + "-wrong"
                with pytest.raises(mevbackup.AuthenticationFailed) as e:
                    rp.backup_postgres(conninfo)
            finally:
                os.environ.pop("PGPASSWORD", None)
            logs.append(e.value.message)
    assert scan.hits == [], scan.hits
    for text in logs:
        for c in canaries:
            assert c not in text
    _no_canary_in_files(local, canaries)
    _no_canary_in_files(tmpdir, canaries)
    _no_canary_in_files(Path(s3.data_dir), canaries)  # every object of the S3 repository
    assert CANARY_PG not in (tmp_path / "pg_dump.argv").read_text()


# ---- 18: umask 000 -----------------------------------------------------------------------


def _assert_private(root: Path):
    for p in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        if p.is_dir():
            assert mode == 0o700, f"{p}: {oct(mode)}"
        else:
            assert mode == 0o600, f"{p}: {oct(mode)}"


def test_18_umask_000_keeps_the_repository_private(pg, tools, tmp_path):
    repo = tmp_path / "repo"
    gate = tmp_path / "gate"
    p = start(tools, "backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"), "--quiet",
              "--pg-dump", gated_pg_dump(tmp_path, pg, gate), env=pg.env(), umask=0)
    try:
        wait_for(lambda: lock_files(repo) and (repo / "database").is_dir()
                 and [f for f in (repo / "database").iterdir() if f.name.startswith(".")],
                 what="the lock and the temporary artifact")
        _assert_private(repo)  # the lock and the temporary file too
    finally:
        gate.touch()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    src = tmp_path / "src"
    (src / "conf").mkdir(parents=True)
    (src / "conf" / "app.yml").write_text("a: 1\n")
    r = run(tools, "backup", "files", "--repo", repo, "--base", src, ".", umask=0)
    assert r.returncode == 0, r.stderr
    r = run(tools, "verify", "--repo", repo, "--backup", "all", env=pg.env(), umask=0)  # records .verify.json
    assert r.returncode == 0, r.stderr
    assert list(repo.rglob("*.verify.json"))
    r = run(tools, "prune", "--repo", repo, "--keep-last", "5", env=pg.env(), umask=0)
    assert r.returncode == 0, r.stderr
    _assert_private(repo)
    assert {p.name for p in repo.iterdir()} >= {"database", "config", "locks"}
    # A files restore under umask 000 leaves no staging behind and gives the files the
    # archive's modes, not wider ones.
    out_dir = tmp_path / "out"
    r = run(tools, "restore", "files", "--repo", repo, "--target", out_dir, umask=0)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((out_dir / "conf" / "app.yml").stat().st_mode) == stat.S_IMODE(
        (src / "conf" / "app.yml").stat().st_mode)
    assert not [q for q in tmp_path.iterdir() if ".mevb-" in q.name]
