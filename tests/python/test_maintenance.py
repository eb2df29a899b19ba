"""prune, verify and check through the CLI and Python against real backups."""

import json
import re
import subprocess

import pytest

import mevbackup


def make_backups(cli, pg, repo, n):
    ids = []
    for _ in range(n):
        # not --quiet: the backup line names the new id
        r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"))
        assert r.returncode == 0, r.stderr
        ids.append(r.stdout.split()[1].rstrip(":"))
    return ids


def test_verify_with_restore_test_and_queries(pg, cli, repo):
    make_backups(cli, pg, repo, 1)
    r = cli("verify", "--repo", repo, "--backup", "latest", "--restore-test", pg.conninfo("postgres"),
            "--query", "SELECT COUNT(*) FROM mev_threats", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)["results"][0]
    assert res["outcome"] == "ok"
    checks = {c["check"]: c for c in res["checks"]}
    assert checks["rows public.mev_threats"]["ok"] and "2000 rows, 2000 at dump time" in checks["rows public.mev_threats"]["detail"]
    assert checks["query"]["detail"] == "2000"
    # The scratch database is gone.
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'mevb_verify_%'") == "0"
    # The outcome is recorded beside the backup.
    rec = list((repo / "database").glob("*.verify.json"))
    assert len(rec) == 1 and json.loads(rec[0].read_text())["outcome"] == "ok"


def test_verify_fails_a_flipped_byte_naming_the_backup(pg, cli, repo):
    ids = make_backups(cli, pg, repo, 1)
    artifact = next((repo / "database").glob("*.dump.gz"))
    data = bytearray(artifact.read_bytes())
    data[100] ^= 0x04
    artifact.write_bytes(bytes(data))
    r = cli("verify", "--repo", repo, "--backup", "all")
    assert r.returncode == 1
    assert f"FAILED {ids[0]}" in r.stdout


def test_failing_query_fails_the_run_and_records_nothing(pg, cli, repo):
    # A query that cannot run (a typo) says nothing about the backup: recording it as a
    # failed verification would let prune delete a good backup.
    make_backups(cli, pg, repo, 1)
    r = cli("verify", "--repo", repo, "--restore-test", pg.conninfo("postgres"), "--query", "SELECT * FROM nope")
    assert r.returncode == 1
    assert "nope" in r.stderr and "nothing recorded" in r.stderr
    assert not list((repo / "database").glob("*.verify.json"))
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'mevb_verify_%'") == "0"


def test_verify_with_the_restore_test_server_down_keeps_the_good_record(pg, cli, repo):
    ids = make_backups(cli, pg, repo, 1)
    assert cli("verify", "--repo", repo, "--backup", "all").returncode == 0
    record = next((repo / "database").glob("*.verify.json"))
    before = record.read_bytes()
    import socket
    with socket.socket() as s:  # a port where nothing listens: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("verify", "--repo", repo, "--backup", "all", "--restore-test",
            f"host=127.0.0.1 port={port} dbname=postgres user=nobody connect_timeout=5")
    assert r.returncode == 1
    assert f"could not verify {ids[0]}" in r.stderr and "nothing recorded" in r.stderr
    assert record.read_bytes() == before


def test_prune_cli_dry_run_then_delete(pg, cli, repo):
    import time
    ids = []
    for _ in range(3):
        ids += make_backups(cli, pg, repo, 1)
        time.sleep(1.05)
    assert cli("prune", "--repo", repo).returncode == 2  # a policy is required
    r = cli("prune", "--repo", repo, "--keep-last", "2", "--dry-run", check=True)
    assert f"would delete {ids[0]}: matches no keep rule" in r.stdout
    assert len(json.loads(cli("list", "--repo", repo, "--json").stdout)) == 3
    r = cli("prune", "--repo", repo, "--keep-last", "2", "--json", check=True)
    out = json.loads(r.stdout)
    assert out["deleted"] == 1
    assert [x["id"] for x in json.loads(cli("list", "--repo", repo, "--json").stdout)] == ids[1:]
    assert not any(ids[0] in p.name for p in repo.rglob("*"))
    # keep-days far in the future still keeps the newest: backups stopping never empties the repo.
    r = cli("prune", "--repo", repo, "--keep-days", "30", "--now", "2030-01-01T00:00:00Z", check=True)
    assert [x["id"] for x in json.loads(cli("list", "--repo", repo, "--json").stdout)] == ids[2:]


def test_check_exit_codes_and_prometheus(pg, cli, repo, tmp_path):
    r = cli("check", "--repo", repo, "--max-age", "25h")
    assert r.returncode == 2 and r.stdout.startswith("MEVBACKUP CRITICAL")
    make_backups(cli, pg, repo, 1)
    listing = json.loads(cli("list", "--repo", repo, "--json").stdout)
    assert cli("check", "--repo", repo, "--max-age", "25h").returncode == 0
    created = listing[0]["created_at"]
    day = created[:10]
    # 21 h later: WARNING (>= 80% of 25 h); 26 h later: CRITICAL.
    from datetime import datetime, timedelta, timezone
    t0 = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    fmt = lambda d: (t0 + d).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    assert cli("check", "--repo", repo, "--max-age", "25h", "--now", fmt(timedelta(hours=21))).returncode == 1
    r = cli("check", "--repo", repo, "--max-age", "25h", "--now", fmt(timedelta(hours=26)), "--json")
    assert r.returncode == 2
    assert json.loads(r.stdout)["groups"][0]["status"] == "CRITICAL"
    assert cli("check", "--repo", repo, "--max-age", "banana").returncode == 3
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("check", "--repo", blocker, "--max-age", "25h")
    assert r.returncode == 3 and "UNKNOWN" in r.stdout

    prom = tmp_path / "mevbackup.prom"
    assert cli("check", "--repo", repo, "--max-age", "25h", "--prometheus", prom).returncode == 0
    text = prom.read_text()
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? [-+0-9.eE]+$')
    names = set()
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ ", line), line
            continue
        assert sample.match(line), line
        names.add(line.split("{")[0].split(" ")[0])
    assert {"mevbackup_last_success_timestamp_seconds", "mevbackup_last_backup_size_bytes",
            "mevbackup_backups_total"} <= names
    assert f'kind="postgres",source="mev_protection"' in text
    assert oct(prom.stat().st_mode & 0o777) == "0o644"
    assert day in created


def test_python_prune_verify_check(pgenv_repo):
    pg, repo = pgenv_repo
    with mevbackup.Repository(repo) as r:
        b = r.backup_postgres(pg.conninfo("mev_protection"))
        rep = r.verify("all", restore_test=pg.conninfo("postgres"), queries=["SELECT 1"])
        assert rep.status == 0 and rep.data["results"][0]["id"] == b.id
        assert r.check(max_age_seconds=3600).status == 0
        assert r.check(max_age_seconds=3600, now="2099-01-01T00:00:00Z").status == 2
        rep = r.prune(keep_last=1, dry_run=True)
        assert rep.status == 0 and rep.data["decisions"][0]["action"] == "keep"
        with pytest.raises(mevbackup.InvalidArgument) as e:
            r.prune(keep_last=0)
        assert "keep-last must be at least 1" in str(e.value)


@pytest.fixture
def pgenv_repo(pg, repo, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", pg.password)
    return pg, repo
