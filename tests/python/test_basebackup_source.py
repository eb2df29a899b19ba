"""The base backup Dumper as a stream-layer source (mevb_source_new_basebackup): one tar of
the data directory, checked with stock tools: `tar`, `pg_verifybackup`, and a PostgreSQL 15
server started on the extracted directory alone (no WAL archive)."""
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

import mevbackup
from mevbackup import Filter, Sink, Source, pipeline_run
from pgserver import PgServer, free_port


def as_postgres(argv):
    return ["runuser", "-u", "postgres", "--"] + argv if os.geteuid() == 0 else argv


def chown_tree(root):
    if os.geteuid() != 0:
        return
    for dirpath, dirs, files in os.walk(root):
        for n in [dirpath] + [os.path.join(dirpath, f) for f in files]:
            shutil.chown(n, "postgres", "postgres")


@pytest.fixture(scope="module")
def server():
    # archive_mode off: the WAL in the tar is all a restore has.
    with PgServer() as pg:
        pg.psql("CREATE TABLE accounts (id int PRIMARY KEY, note text NOT NULL)")
        pg.psql("INSERT INTO accounts SELECT g, 'row ' || g FROM generate_series(1, 5000) g")
        yield pg


@pytest.fixture
def conn(server, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", server.password)
    return server.conninfo()


def test_base_backup_source_gives_a_tar_that_starts_a_server(server, conn, tmp_path):
    out = tmp_path / "base.tar.gz"
    src = Source.basebackup(conn)
    gz = Filter.compressor("gzip")
    pipeline_run(src, [gz], Sink.to_path(out))
    # Written after the backup ended: the restored server must not have it.
    server.psql("INSERT INTO accounts VALUES (0, 'after the backup')")

    with tarfile.open(out, "r:gz") as t:
        names = t.getnames()
    assert names[-1] == "backup_manifest", names[-5:]
    assert "PG_VERSION" in names and "global/pg_control" in names
    assert "backup_label" in names
    assert any(n.startswith("pg_wal/") and len(os.path.basename(n)) == 24 for n in names), \
        "the backup's WAL segments are in the tar"
    assert "postmaster.pid" not in names

    work = tempfile.mkdtemp(prefix="mevb-bbsrc-")
    try:
        os.chmod(work, 0o755)
        data = os.path.join(work, "data")
        os.mkdir(data, 0o700)
        subprocess.run(["tar", "-xzf", str(out), "-C", data], check=True)
        chown_tree(work)
        r = subprocess.run(as_postgres([f"{server.bindir}/pg_verifybackup", data]), capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "successfully verified" in r.stdout

        port = free_port()
        log = os.path.join(work, "server.log")
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c archive_mode=off"
        r = subprocess.run(as_postgres([f"{server.bindir}/pg_ctl", "-D", data, "-l", log, "-o", opts,
                                        "-w", "-t", "60", "start"]), capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr + open(log).read()
        try:
            q = subprocess.run([f"{server.bindir}/psql", "-X", "-t", "-A", "-d",
                                f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
                                "-c", "SELECT count(*), min(id), max(id) FROM accounts"],
                               capture_output=True, text=True, env=server.env())
            assert q.returncode == 0, q.stderr
            assert q.stdout.strip() == "5000|1|5000"
        finally:
            subprocess.run(as_postgres([f"{server.bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"]),
                           capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_base_backup_source_refuses_tablespaces_by_name(server, conn):
    loc = tempfile.mkdtemp(prefix="mevb-tbs-")
    os.chmod(loc, 0o700)
    chown_tree(loc)
    server.psql(f"CREATE TABLESPACE side_space LOCATION '{loc}'")
    try:
        oid = server.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'side_space'")
        with pytest.raises(mevbackup.Unsupported) as e:
            Source.basebackup(conn)
        assert oid in str(e.value) and loc in str(e.value)
        assert "one archive per tablespace" in str(e.value)
    finally:
        server.psql("DROP TABLESPACE side_space")
        shutil.rmtree(loc, ignore_errors=True)
    # The refused backup was ended by the server: a new one starts.
    Source.basebackup(conn).close()


def test_base_backup_source_without_wal_needs_archiving(server, conn):
    with pytest.raises(mevbackup.Unsupported) as e:
        Source.basebackup(conn, include_wal=False)
    assert "archive_mode is off" in str(e.value)
    with pytest.raises(mevbackup.InvalidArgument) as e:
        Source.basebackup(conn, max_rate_kbps=5)
    assert "max rate 5 kB/s" in str(e.value)


def test_base_backup_source_ended_by_the_server_fails_and_commits_nothing(server, conn):
    killed, events = [], []

    def write(data):
        # At the first chunk: tens of MB are still to come, more than any buffer holds.
        if not killed:
            killed.append(server.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE backend_type = 'walsender'"))

    sink = Sink.to_callback(write, commit=lambda: events.append("commit"), abort=lambda: events.append("abort"))
    with pytest.raises(mevbackup.Error) as e:
        pipeline_run(Source.basebackup(conn), [], sink)
    assert killed == ["1"]
    assert events == ["abort"]
    assert isinstance(e.value, (mevbackup.DumpFailed, mevbackup.ConnectionFailed)), e.value
    assert "base backup stream broke off" in str(e.value)
    assert "source (base backup of 127.0.0.1:" in str(e.value)
    # The server is none the worse: the next backup runs.
    n = []
    pipeline_run(Source.basebackup(conn, fast_checkpoint=False), [], Sink.to_callback(lambda d: n.append(len(d))))
    assert sum(n) > 1 << 20
