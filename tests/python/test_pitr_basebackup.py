"""Point-in-time recovery end to end with a real PostgreSQL 15: base backups over the
replication protocol, WAL archived by `mevbackup wal-push`, restore to a moment before
an accidental deletion into a second server, a missing WAL segment, an interrupted
base backup."""
import glob
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time

import pytest

import mevbackup
from pgserver import PgServer, free_port


def run(cli, *args, env=None, timeout=180):
    return subprocess.run([cli, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def chown_postgres(path):
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def wait_until(cond, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def tree_digest(root):
    """SHA-256 of every file under root, by relative path: to prove a backup unchanged."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def manifests(repo):
    return sorted(glob.glob(os.path.join(repo, "basebackup", "*", "*.manifest.json")))


def assert_fault_contained(cli, repo, env, good_id, good_digest, new_ids_before):
    """The four-point rule after a fault: the earlier good backup unchanged, nothing
    incomplete carrying a manifest, and verify still passing."""
    assert tree_digest(os.path.join(repo, "basebackup", good_id)) == good_digest
    assert manifests(repo) == new_ids_before
    r = run(cli, "verify", "--repo", repo, "--backup", "all", "--kind", "basebackup", "--no-record", env=env)
    assert r.returncode == 0, r.stdout + r.stderr


class Scenario:
    pass


@pytest.fixture(scope="module")
def scenario(tools):
    """One archiving server; rows, a base backup, more rows, the noted time, the
    accidental deletion, the WAL switched and archived."""
    cli = tools["cli"]
    s = Scenario()
    s.cli = cli
    s.work = tempfile.mkdtemp(prefix="mevb-pitr2-")
    os.chmod(s.work, 0o755)
    s.repo = os.path.join(s.work, "repo")
    os.mkdir(s.repo, 0o700)
    chown_postgres(s.repo)  # the archiver runs as postgres
    pg = PgServer(extra_opts="-c archive_mode=on -c wal_level=replica -c archive_timeout=0")
    pg.start()
    s.pg = pg
    s.env = pg.env()
    try:
        pg.psql(f"ALTER SYSTEM SET archive_command = '{cli} wal-push --repo {s.repo} %p'")
        pg.psql("SELECT pg_reload_conf()")
        pg.psql("CREATE TABLE accounts (id int PRIMARY KEY, note text NOT NULL)")
        pg.psql("INSERT INTO accounts SELECT g, 'before backup ' || g FROM generate_series(1, 1000) g")

        r = run(cli, "backup", "basebackup", "--repo", s.repo, "--dbname", pg.conninfo(), "--json", env=s.env)
        assert r.returncode == 0, r.stderr
        s.backup = json.loads(r.stdout)
        s.backup_id = s.backup["id"]

        pg.psql("INSERT INTO accounts SELECT g, 'after backup ' || g FROM generate_series(1001, 1500) g")
        s.target = pg.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                           "'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
        pg.psql("DELETE FROM accounts WHERE id <= 1200")  # the accident
        assert pg.psql("SELECT count(*) FROM accounts") == "300"
        seg = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        pg.psql("SELECT pg_switch_wal()")
        s.last_segment = seg
        stored = os.path.join(s.repo, "wal", seg[:8], seg + ".gz")
        wait_until(lambda: os.path.exists(stored), 60, f"archiving of {seg}")
        # More WAL after it, so that removing that segment leaves a gap, not an end.
        pg.psql("CREATE TABLE later AS SELECT 1 AS x")
        seg2 = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        pg.psql("SELECT pg_switch_wal()")
        stored2 = os.path.join(s.repo, "wal", seg2[:8], seg2 + ".gz")
        wait_until(lambda: os.path.exists(stored2), 60, f"archiving of {seg2}")
        # A copy of the archive taken before any restore adds a timeline to it.
        s.repo_copy = os.path.join(s.work, "repo-copy")
        shutil.copytree(s.repo, s.repo_copy, symlinks=True)
        for dirpath, dirs, files in os.walk(s.repo_copy):
            for n in [dirpath] + [os.path.join(dirpath, f) for f in files]:
                chown_postgres(n)
        yield s
    finally:
        pg.stop()
        shutil.rmtree(s.work, ignore_errors=True)


def stop_server(data_dir):
    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1]
    argv = [bindir, "-D", data_dir, "-m", "immediate", "-w", "stop"]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--"] + argv
    subprocess.run(argv, capture_output=True, timeout=60)


def test_basebackup_layout_and_catalog(scenario):
    s = scenario
    m = s.backup
    assert m["kind"] == "basebackup"
    setdir = os.path.join(s.repo, "basebackup", s.backup_id)
    assert m["path"] == f"basebackup/{s.backup_id}/base.tar.gz"
    src = m["source"]
    for key in ("start_lsn", "stop_lsn", "start_timeline", "stop_timeline", "server_version", "wal_segment_size"):
        assert key in src, key
    assert src["wal_segment_size"] == 16 * 1024 * 1024
    assert src["server_version"].startswith("15")
    names = sorted(f["name"] for f in src["files"])
    assert names == ["backup_manifest", "base.tar"]
    # Stock tools read the parts: a tar.gz with PG_VERSION, PostgreSQL's own manifest.
    with tarfile.open(os.path.join(setdir, "base.tar.gz"), "r:gz") as t:
        members = t.getnames()
        assert "PG_VERSION" in members and "backup_label" in members
        assert t.extractfile("PG_VERSION").read().strip() == b"15"
    pgm = json.loads(gzip.decompress(open(os.path.join(setdir, "backup_manifest.gz"), "rb").read()))
    assert pgm["PostgreSQL-Backup-Manifest-Version"] == 1
    assert subprocess.run(["tar", "-tzf", os.path.join(setdir, "base.tar.gz")], capture_output=True).returncode == 0
    # list shows it as one backup; verify re-reads every part and checks the WAL archive.
    r = run(s.cli, "list", "--repo", s.repo, "--json", env=s.env)
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert [b["id"] for b in listed if b["kind"] == "basebackup"] == [s.backup_id]
    r = run(s.cli, "verify", "--repo", s.repo, "--backup", s.backup_id, "--no-record", "--json", env=s.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wal continuity" in r.stdout


def test_restore_to_time_before_deletion_into_second_server(scenario):
    s = scenario
    data = os.path.join(s.work, "restored")
    os.mkdir(data, 0o700)
    chown_postgres(data)  # the owner of the (empty) data directory gets the files
    port = free_port()
    r = run(s.cli, "restore", "pitr", "--repo", s.repo, "--target-time", s.target, "--data-dir", data,
            "--set", f"port={port}", "--set", "listen_addresses=127.0.0.1", "--set", "unix_socket_directories=",
            "--start", "--timeout", "120", env=s.env)
    try:
        assert r.returncode == 0, r.stdout + r.stderr + open(os.path.join(data, "pitr_recovery.log")).read()
        assert s.backup_id in r.stdout
        st = os.stat(data)
        assert oct(st.st_mode & 0o777) == "0o700"
        if os.geteuid() == 0:
            import pwd
            assert pwd.getpwuid(st.st_uid).pw_name == "postgres"
        conf = open(os.path.join(data, "postgresql.auto.conf")).read()
        assert "wal-fetch --repo" in conf and "recovery_target_time" in conf
        assert "PGPASSWORD" not in conf and s.pg.password not in conf
        second = PgServer()
        second.port = port
        second.password = s.pg.password
        assert second.psql("SELECT pg_is_in_recovery()") == "f", (
            open(os.path.join(data, "postmaster.pid")).read() + open(os.path.join(data, "pitr_recovery.log")).read())
        # The deleted rows are back: everything committed before the noted time.
        assert second.psql("SELECT count(*) FROM accounts") == "1500"
        assert second.psql("SELECT count(*) FROM accounts WHERE id <= 1200") == "1200"
        assert s.pg.psql("SELECT count(*) FROM accounts") == "300"
        shutil.rmtree(second.root, ignore_errors=True)
    finally:
        stop_server(data)


def test_restore_refuses_non_empty_data_dir(scenario):
    s = scenario
    data = os.path.join(s.work, "busy")
    os.mkdir(data)
    open(os.path.join(data, "PG_VERSION"), "w").write("precious\n")
    r = run(s.cli, "restore", "pitr", "--repo", s.repo, "--data-dir", data, env=s.env)
    assert r.returncode == 1
    assert "not empty" in r.stderr
    assert open(os.path.join(data, "PG_VERSION")).read() == "precious\n"


def test_a_full_disk_fails_the_unpack_and_leaves_the_data_directory_empty(scenario):
    """The data directory's filesystem fills up while the base backup unpacks (an 8 MiB
    tmpfs in a mount namespace of its own): libarchive only warns about the failed write;
    the restore must fail naming the file and the lack of space, and empty what it wrote."""
    s = scenario
    disk = os.path.join(s.work, "smalldisk")
    os.mkdir(disk)
    data = os.path.join(disk, "data")
    script = (f'mount -t tmpfs -o size=8m,mode=0755 tmpfs "{disk}" && mkdir -m 700 "{data}" && '
              f'"$0" restore pitr --repo "{s.repo}" --data-dir "{data}"; echo "rc=$?"; echo "left:"; ls -A "{data}"')
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, s.cli],
                       capture_output=True, text=True, env=s.env, timeout=180)
    out = r.stdout.split("\n")
    assert "rc=0" not in out, r.stdout + r.stderr
    assert "No space left on device" in r.stderr, r.stderr
    assert [x for x in out[out.index("left:") + 1:] if x] == [], r.stdout


def test_missing_wal_segment_fails_naming_it(scenario):
    s = scenario
    src = json.load(open(os.path.join(s.repo_copy, s.backup["path"] + ".manifest.json")))["source"]
    stop = src["stop_segment"]
    # The segment after the backup's end holds the rows written before the target.
    missing = "%08X%08X%08X" % (int(stop[:8], 16), int(stop[8:16], 16), int(stop[16:], 16) + 1)
    os.unlink(os.path.join(s.repo_copy, "wal", missing[:8], missing + ".gz"))
    data = os.path.join(s.work, "restored-missing")
    port = free_port()
    r = run(s.cli, "restore", "pitr", "--repo", s.repo_copy, "--target-time", s.target, "--data-dir", data,
            "--owner", "postgres", "--set", f"port={port}", "--set", "listen_addresses=127.0.0.1",
            "--set", "unix_socket_directories=", "--start", "--timeout", "120", env=s.env)
    try:
        assert r.returncode == 1, r.stdout + r.stderr
        assert missing in r.stderr, r.stderr
        assert "recovery" in r.stderr
        # verify reports the gap in the archive.
        r = run(s.cli, "verify", "--repo", s.repo_copy, "--backup", s.backup_id, "--no-record", env=s.env)
        assert r.returncode != 0 and missing in (r.stdout + r.stderr)
    finally:
        stop_server(data)


def test_interrupted_basebackup_leaves_no_complete_looking_backup(scenario):
    s = scenario
    before = manifests(s.repo)
    good_dir = os.path.join(s.repo, "basebackup", s.backup_id)
    good_digest = tree_digest(good_dir)
    # 1 MiB/s: the base archive takes long enough to be cut midway.
    p = subprocess.Popen([s.cli, "backup", "basebackup", "--repo", s.repo, "--dbname", s.pg.conninfo(),
                          "--max-rate", "1MiB/s", "--quiet"], env=s.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        pid = ""

        def streaming():
            nonlocal pid
            pid = s.pg.psql("SELECT pid FROM pg_stat_progress_basebackup "
                            "WHERE phase = 'streaming database files' AND backup_streamed > 0")
            return pid != ""

        wait_until(streaming, 60, "the base backup to stream")
        s.pg.psql(f"SELECT pg_terminate_backend({pid})")
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1, err
    assert "base backup" in err, err
    assert any(w in err.lower() for w in ("terminat", "closed", "lost")), err
    assert_fault_contained(s.cli, s.repo, s.env, s.backup_id, good_digest, before)
    # No file with a final name in the interrupted set, and nothing listed as a backup.
    for setdir in glob.glob(os.path.join(s.repo, "basebackup", "*")):
        if os.path.basename(setdir) != s.backup_id:
            assert [f for f in os.listdir(setdir) if not f.startswith(".")] == [], os.listdir(setdir)


def test_python_basebackup_and_restore_pitr(scenario, tmp_path, monkeypatch):
    s = scenario
    monkeypatch.setenv("PGPASSWORD", s.pg.password)
    repo_dir = tmp_path / "pyrepo"
    with mevbackup.Repository(str(repo_dir)) as repo:
        b = repo.backup_basebackup(s.pg.conninfo(), prefix="pybase")
        assert b.kind == "basebackup" and b.id.startswith("pybase_")
        assert b.manifest["source"]["stop_lsn"]
        data = tmp_path / "pgdata"
        rep = repo.restore_pitr(data, mevbackup_path=s.cli, owner="postgres" if os.geteuid() == 0 else None)
        assert rep.data["backup"] == b.id and rep.status == 0
        assert "pg_ctl" in rep.text
        assert (data / "recovery.signal").exists() and (data / "PG_VERSION").read_text().strip() == "15"
        with pytest.raises(mevbackup.NotEmpty):
            repo.restore_pitr(data)
