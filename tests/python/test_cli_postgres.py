"""The mevbackup CLI against a real PostgreSQL on 127.0.0.1: round trips, stock tools,
and every way a backup can fail without losing or faking anything."""

import gzip
import hashlib
import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest


def files(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def backup(cli, pg, repo, db="mev_protection", *extra):
    r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo(db), *extra)
    assert r.returncode == 0, r.stderr
    return r


def test_backup_layout_manifest_and_modes(pg, cli, repo):
    r = backup(cli, pg, repo)
    m = re.search(r"database/mev_protection_\d{8}_\d{6}\.dump\.gz", r.stdout)
    assert m, r.stdout
    artifact = repo / m.group(0)
    manifest_path = Path(str(artifact) + ".manifest.json")
    assert files(repo) == sorted([m.group(0), m.group(0) + ".manifest.json"])
    assert stat.S_IMODE(artifact.stat().st_mode) == 0o600
    assert stat.S_IMODE(manifest_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((repo / "database").stat().st_mode) == 0o700

    manifest = json.loads(manifest_path.read_text())
    data = artifact.read_bytes()
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["size"] == len(data)
    payload = gzip.decompress(data)
    assert payload[:5] == b"PGDMP"  # pg_dump custom format
    assert manifest["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert manifest["source"]["server_version"].startswith("15")
    tables = {t["table"]: t for t in manifest["source"]["tables"]}
    assert tables["mev_threats"] == {**tables["mev_threats"], "rows": 2000, "exact": True}
    assert tables["transaction_protections"]["rows"] == 1000


def test_large_tables_get_estimates_marked_as_such(pg, repo):
    import mevbackup
    with mevbackup.Repository(repo) as r:
        os.environ["PGPASSWORD"] = pg.password
        try:
            b = r.backup_postgres(pg.conninfo("mev_protection"), exact_count_max_bytes=1)
        finally:
            del os.environ["PGPASSWORD"]
    tables = {t["table"]: t for t in b.manifest["source"]["tables"]}
    assert tables["mev_threats"]["exact"] is False
    assert tables["mev_threats"]["rows"] == 2000  # ANALYZE ran: reltuples is exact here


def test_list_json_reads_manifests(pg, cli, repo):
    backup(cli, pg, repo)
    time.sleep(1.1)
    backup(cli, pg, repo)
    # An artifact without a manifest is not a backup.
    (repo / "database" / "mev_protection_20200101_000000.dump.gz").write_bytes(b"junk")
    r = cli("list", "--repo", repo, "--json", check=True)
    items = json.loads(r.stdout)
    assert len(items) == 2
    for it in items:
        assert {"id", "kind", "path", "size", "sha256", "created_at", "compression"} <= set(it)
        assert it["kind"] == "postgres" and it["compression"] == "gzip"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", it["created_at"])
        assert hashlib.sha256((repo / it["path"]).read_bytes()).hexdigest() == it["sha256"]
        assert (repo / it["path"]).stat().st_size == it["size"]
    assert items[0]["created_at"] < items[1]["created_at"]
    # MEVBACKUP_REPO works in place of --repo.
    r2 = cli("list", "--json", env={**os.environ, "MEVBACKUP_REPO": str(repo)}, check=True)
    assert json.loads(r2.stdout) == items


def test_stock_gunzip_pg_restore_reads_the_artifact(pg, cli, repo, newdb):
    r = backup(cli, pg, repo)
    path = repo / re.search(r"database/\S+\.dump\.gz", r.stdout).group(0)
    target = newdb("stock")
    pg.psql(f'CREATE DATABASE "{target}"')
    pipe = subprocess.run(f"gunzip -c '{path}' | {pg.bindir}/pg_restore --no-owner -d \"$TARGET\"",
                          shell=True, capture_output=True, text=True,
                          env={**pg.env(), "TARGET": pg.conninfo(target)})
    assert pipe.returncode == 0, pipe.stderr
    assert pg.row_counts(target) == pg.row_counts("mev_protection")


def test_cli_restore_round_trip_refuses_non_empty_target_then_cleans(pg, cli, repo, newdb):
    backup(cli, pg, repo)
    target = newdb()
    r = cli("restore", "postgres", "--repo", repo, "--backup", "latest", "--dbname", pg.conninfo(target))
    assert r.returncode == 0, r.stderr
    assert pg.row_counts(target) == {"mev_threats": 2000, "transaction_protections": 1000}
    assert pg.psql("SELECT count(*) FROM threat_counts", target) == "3"

    pg.psql("DELETE FROM mev_threats WHERE id > 100", target)
    r = cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target))
    assert r.returncode == 1
    assert "not empty" in r.stderr and "--clean" in r.stderr
    assert pg.row_counts(target)["mev_threats"] == 100  # untouched

    r = cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target), "--clean")
    assert r.returncode == 0, r.stderr
    assert pg.row_counts(target)["mev_threats"] == 2000
    # No staging database is left behind.
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '%mevb_restore%'") == "0"


def test_restore_into_existing_empty_database_keeps_its_owner(pg, cli, repo, newdb):
    backup(cli, pg, repo)
    target = newdb()
    pg.psql("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='mev_user') "
            "THEN CREATE ROLE mev_user; END IF; END$$")
    pg.psql(f'CREATE DATABASE "{target}" OWNER mev_user')
    r = cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target))
    assert r.returncode == 0, r.stderr
    assert pg.psql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname='{target}'") == "mev_user"
    assert pg.row_counts(target)["mev_threats"] == 2000


def test_corrupt_artifact_is_refused_and_target_left_alone(pg, cli, repo, newdb):
    r = backup(cli, pg, repo)
    path = repo / re.search(r"database/\S+\.dump\.gz", r.stdout).group(0)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    target = newdb()
    r = cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target))
    assert r.returncode == 1
    assert "corrupt" in r.stderr or "SHA-256" in r.stderr or "does not match" in r.stderr, r.stderr
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{target}'") == "0"
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '%mevb_restore%'") == "0"


@pytest.mark.parametrize("case", ["missing_db", "wrong_password", "unreachable", "bad_conninfo"])
def test_connection_failures_name_the_cause_and_leave_nothing(pg, cli, repo, case):
    backup(cli, pg, repo)
    before = files(repo)
    env = None
    if case == "missing_db":
        conninfo, expect = pg.conninfo("no_such_db"), 'database "no_such_db" does not exist'
    elif case == "wrong_password":
        conninfo, expect = pg.conninfo("mev_protection"), "password authentication failed"
        env = {**os.environ, "PGPASSWORD": "wrong-secret-123"}
    elif case == "unreachable":
        conninfo, expect = "host=127.0.0.1 port=1 dbname=mev_protection connect_timeout=5", "cannot connect"
    else:
        conninfo, expect = "host=127.0.0.1 bogus_option=1", "invalid connection string"
    r = cli("backup", "postgres", "--repo", repo, "--dbname", conninfo, env=env)
    assert r.returncode == 1
    assert expect in r.stderr
    assert r.stderr.count("\n") == 1  # one clear line
    assert "wrong-secret-123" not in r.stderr and pg.password not in r.stderr
    assert files(repo) == before


def test_unwritable_repository(pg, cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("backup", "postgres", "--repo", blocker / "repo", "--dbname", pg.conninfo("mev_protection"))
    assert r.returncode == 1
    assert str(blocker) in r.stderr
    assert blocker.read_text() == "x"


def test_disk_full_leaves_no_partial_artifact(pg, cli, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        r = cli("backup", "postgres", "--repo", mnt / "repo", "--dbname", pg.conninfo("mev_protection"),
                "--compress", "none")
        assert r.returncode == 1
        assert "No space left on device" in r.stderr
        assert files(mnt / "repo") == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _slow_pg_dump(tmp_path, pg, delay="0.02"):
    """A pg_dump that streams through a slow pipe, so a test can act mid-stream.
    It records its argv to show no secret reaches it."""
    script = tmp_path / "pg_dump"
    script.write_text(f"""#!/bin/bash
set -o pipefail
printf '%s\\n' "$0" "$@" > {tmp_path}/argv
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


def test_pg_dump_killed_mid_stream(pg, cli, tools, repo, tmp_path, bigdb):
    backup(cli, pg, repo)
    before = files(repo)
    fake = _slow_pg_dump(tmp_path, pg)
    p = subprocess.Popen([tools["cli"], "backup", "postgres", "--repo", str(repo), "--dbname",
                          pg.conninfo(bigdb), "--pg-dump", str(fake), "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=pg.env())
    # Wait until bytes are flowing into a temporary file, then kill pg_dump's backend.
    deadline = time.time() + 60
    while time.time() < deadline:
        tmp = [f for f in (repo / "database").iterdir() if f.name.startswith(".")]
        if tmp and tmp[0].stat().st_size > 64 * 1024:
            break
        time.sleep(0.05)
    else:
        p.kill()
        pytest.fail("the dump never started")
    killed = pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     "WHERE application_name = 'pg_dump'")
    assert killed == "1"
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1
    assert "pg_dump" in err and f'"{bigdb}"' in err
    assert files(repo) == before


def test_no_secret_in_argv_logs_or_manifest(pg, cli, repo, tmp_path):
    fake = _slow_pg_dump(tmp_path, pg, delay="0")
    r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"),
            "--pg-dump", fake, "--verbose")
    assert r.returncode == 0, r.stderr
    argv = (tmp_path / "argv").read_text()
    assert pg.password not in argv
    assert "127.0.0.1" not in argv  # connection details travel in the environment
    assert pg.password not in r.stdout + r.stderr
    for f in repo.rglob("*"):
        if f.is_file():
            assert pg.password.encode() not in f.read_bytes()


def test_pg_dump_older_than_server_is_refused_clearly(pg, cli, repo, tmp_path):
    old = tmp_path / "pg_dump"
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    old.chmod(0o755)
    r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"), "--pg-dump", old)
    assert r.returncode == 1
    assert "version 9" in r.stderr and "cannot dump a newer server" in r.stderr
    assert files(repo) == []


def test_managed_pg_dump_options_are_refused(pg, cli, repo):
    r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"),
            "--pg-dump-arg", "--file=/tmp/x")
    assert r.returncode == 1
    assert "--file=/tmp/x" in r.stderr


def test_usage_errors_exit_2(cli):
    assert cli().returncode == 2
    assert cli("backup", "postgres", "--bogus").returncode == 2
    r = cli("backup", "postgres", "--repo", "/tmp/x")
    assert r.returncode == 2 and "--dbname" in r.stderr
    assert cli("backup", "mysql").returncode == 2
    assert cli("version").stdout.startswith("mevbackup 0.")


def test_c_examples_round_trip(pg, tools, repo, newdb):
    env = pg.env()
    r = subprocess.run([tools["c_backup"], str(repo), pg.conninfo("mev_protection")], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    backup_id = r.stdout.split()[0]
    target = newdb("c")
    r = subprocess.run([tools["c_restore"], str(repo), backup_id, pg.conninfo(target)], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert pg.row_counts(target) == pg.row_counts("mev_protection")


def test_capi_test_in_c_with_server(pg, tools, repo, newdb):
    r = subprocess.run([tools["capi_test"], str(repo), pg.conninfo("mev_protection"), pg.conninfo(newdb("capi"))],
                       capture_output=True, text=True, env=pg.env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "with round trip" in r.stdout


def test_zstd_backup_round_trip_and_stock_zstd_reads_it(pg, cli, repo, newdb):
    r = backup(cli, pg, repo, "mev_protection", "--compress", "zstd")
    path = repo / re.search(r"database/\S+\.dump\.zst", r.stdout).group(0)
    assert subprocess.run(["zstd", "-t", "-q", str(path)]).returncode == 0
    target = newdb("zstd")
    r = cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target))
    assert r.returncode == 0, r.stderr
    assert pg.row_counts(target) == pg.row_counts("mev_protection")


def test_high_gzip_level_is_parallel_members_that_gunzip_reads(pg, cli, repo, newdb):
    r = backup(cli, pg, repo, "mev_protection", "--level", "9")
    path = repo / re.search(r"database/\S+\.dump\.gz", r.stdout).group(0)
    assert subprocess.run(["gzip", "-t", str(path)]).returncode == 0
    target = newdb("l9")
    assert cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target)).returncode == 0
    assert pg.row_counts(target) == pg.row_counts("mev_protection")


def test_stalled_dump_fails_after_the_stall_timeout(pg, cli, repo, tmp_path):
    backup(cli, pg, repo)
    before = files(repo)
    stuck = tmp_path / "pg_dump"
    # Answers --version like pg_dump, then writes a little and hangs like a silent peer;
    # its child `sleep` would hold the pipes open if only the script were killed.
    stuck.write_text(f"""#!/bin/bash
if [ "$1" = --version ]; then exec {pg.bindir}/pg_dump --version; fi
printf 'PGDMP partial'
sleep 120
""")
    stuck.chmod(0o755)
    t0 = time.monotonic()
    r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"), "--pg-dump", stuck,
            env={"MEVBACKUP_STALL_TIMEOUT": "2"})
    assert r.returncode == 1
    assert "stalled" in r.stderr
    assert time.monotonic() - t0 < 60
    assert files(repo) == before


def test_restore_of_a_property_the_target_lacks_needs_allow_property_loss(pg, cli, repo, newdb):
    src, target = newdb("plcli"), newdb("plcli_back")
    pg.psql(f"CREATE DATABASE {src} LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0")
    pg.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1);", src)
    r = backup(cli, pg, repo, src)
    manifest = repo / (re.search(r"database/\S+\.dump\.gz", r.stdout).group(0) + ".manifest.json")
    m = json.loads(manifest.read_text())
    m["source"]["database_properties"]["ctype"] = "xx_NOWHERE.UTF-8"  # as if the target lacked the locale
    manifest.write_text(json.dumps(m))
    r = cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target))
    assert r.returncode == 1
    assert "xx_NOWHERE.UTF-8" in r.stderr and f'"{target}"' in r.stderr
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '{target}%'") == "0"
    r = cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target), "--allow-property-loss")
    assert r.returncode == 0, r.stderr
    assert "restored without the source's" in r.stderr and "xx_NOWHERE.UTF-8" in r.stderr
    assert pg.psql("SELECT count(*) FROM t", target) == "1"
