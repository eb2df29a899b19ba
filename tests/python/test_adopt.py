"""Taking over the runbook's backups: a repository laid out as the runbook's scripts fill
/app/backups (pg_dump -Fc | gzip, redis RDBs gzipped, tar czf of the configuration, no
manifests), built here with the stock tools against test servers on 127.0.0.1, then
`mevbackup adopt` and `prune`, which must lose nothing they did not write."""

import gzip
import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from pgserver import _bindir  # noqa: E402
from redisserver import RedisServer  # noqa: E402

import mevbackup  # noqa: E402

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)
NOW_S = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(days: int, hour: int = 2) -> datetime:
    return (NOW - timedelta(days=days)).replace(hour=hour, minute=0, second=0)


def name_of(t: datetime) -> str:
    return t.strftime("%Y%m%d_%H%M%S")


def set_mtime(p: Path, t: datetime) -> None:
    os.utime(p, (t.timestamp(), t.timestamp()))


def snapshot(root: Path) -> dict:
    """Every file under root with the SHA-256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def rds():
    with RedisServer() as server:
        server.fill_sample(50)
        yield server


@pytest.fixture
def runbook_repo(pg, rds, tmp_path):
    """/app/backups as the runbook leaves it, with damaged and stray files among the backups."""
    root = tmp_path / "backups"
    db, rd, cf = root / "database", root / "redis", root / "config"
    for d in (db, rd, cf):
        d.mkdir(parents=True)
    env = pg.env()
    pg_dump = os.path.join(_bindir(), "pg_dump")
    days = {}
    # 30 daily dumps, days 1..30 before NOW: the one of day 30 is older than 30 days.
    for d in range(1, 31):
        t = stamp(d)
        f = db / f"mev_protection_{name_of(t)}.dump.gz"
        subprocess.run(f"'{pg_dump}' --no-owner --no-acl --format=custom '{pg.conninfo('mev_protection')}' "
                       f"| gzip > '{f}'", shell=True, check=True, env=env)
        set_mtime(f, t)
        days[f.name] = d
    for d in (1, 2, 40):
        t = stamp(d, 3)
        raw = tmp_path / "dump.rdb"
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(rds.port), "--rdb", str(raw)],
                       check=True, capture_output=True)
        subprocess.run(["gzip", "-f", str(raw)], check=True)
        f = rd / f"redis_{name_of(t)}.rdb.gz"
        (tmp_path / "dump.rdb.gz").rename(f)
        set_mtime(f, t)
        days[f.name] = d
    conf = tmp_path / "app"
    (conf / "nginx").mkdir(parents=True)
    (conf / "docker-compose.yml").write_text("services: {}\n")
    (conf / "nginx" / "nginx.conf").write_text("events {}\n")
    for d in (1, 2, 45):
        t = stamp(d, 4)
        f = cf / f"config_{name_of(t)}.tar.gz"
        subprocess.run(["tar", "-czf", str(f), "docker-compose.yml", "nginx/nginx.conf"], cwd=conf, check=True)
        set_mtime(f, t)
        days[f.name] = d

    # What must survive untouched: strays, damaged copies, a directory named like a backup.
    old = stamp(60)
    good = (db / f"mev_protection_{name_of(stamp(1))}.dump.gz").read_bytes()
    bad = {
        "notes.txt": b"call the DBA before restoring\n",
        "database/notes.txt": b"moved to the new host\n",
        f"database/mev_protection_{name_of(stamp(50))}.dump.gz": good[: len(good) // 2],  # half copied
        f"database/mev_protection_{name_of(stamp(51))}.dump.gz": gzip.compress(b"this is not a dump\n" * 100),
        f"config/config_{name_of(stamp(52))}.tar.gz": gzip.compress(b"not a tar archive\n" * 100),
        f"database/mev_protection_{name_of(stamp(53))}.dump.gz/part1": good[:1000],
    }
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x20
    bad[f"database/mev_protection_{name_of(stamp(54))}.dump.gz"] = bytes(flipped)
    for rel, data in bad.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        set_mtime(p, old)
    return root, days, bad


def test_runbook_backups_are_adopted_and_retained_nothing_foreign_lost(runbook_repo, cli, pg, newdb, tmp_path):
    root, days, bad = runbook_repo
    before = snapshot(root)

    # Before adoption prune keeps every file it did not write, whatever its age.
    r = cli("prune", "--repo", root, "--keep-days", "30", "--now", NOW_S, "--dry-run", check=True)
    assert "would delete" not in r.stdout, r.stdout
    for rel in before:
        assert f"keep {rel}: foreign, kept" in r.stdout, rel
    assert snapshot(root) == before

    # A dry run reports and writes nothing.
    r = cli("adopt", "--repo", root, "--dry-run", "--json")
    assert r.returncode == 1, r.stderr  # damaged files are found
    dry = json.loads(r.stdout)
    assert (dry["adopted"], dry["damaged"], dry["foreign"]) == (36, 4, 3)
    assert snapshot(root) == before

    r = cli("adopt", "--repo", root)
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "adopted 36, 4 damaged, 3 foreign"
    body = lines[:-1]
    # One line per object; the directory named like a backup is one line, not one per file inside.
    dirname = next(k for k in bad if k.endswith("/part1")).rsplit("/", 1)[0] + "/"
    assert len(body) == 36 + 4 + 3
    outcome = {line.split(" ", 1)[1].split(": ", 1)[0]: line.split(" ", 1)[0] for line in body}
    assert outcome[dirname] == "foreign"
    assert outcome["notes.txt"] == outcome["database/notes.txt"] == "foreign"
    for rel in bad:
        if rel.endswith(".dump.gz") or rel.endswith(".tar.gz"):
            assert outcome[rel] == "damaged", (rel, r.stdout)
    for name in days:
        kind_dir = "database" if name.endswith(".dump.gz") else "redis" if name.endswith(".rdb.gz") else "config"
        assert outcome[f"{kind_dir}/{name}"] == "adopted"
    why = {line.split(": ", 1)[0].split(" ", 1)[1]: line.split(": ", 1)[1] for line in body}
    truncated = f"database/mev_protection_{name_of(stamp(50))}.dump.gz"
    assert "gzip data is truncated" in why[truncated], why[truncated]
    assert "not a pg_dump custom-format archive" in why[f"database/mev_protection_{name_of(stamp(51))}.dump.gz"]
    assert "not a tar archive" in why[f"config/config_{name_of(stamp(52))}.tar.gz"]
    assert "gzip" in why[f"database/mev_protection_{name_of(stamp(54))}.dump.gz"]

    # Adoption only added manifests: every file found is byte for byte what it was.
    after = snapshot(root)
    assert {k: v for k, v in after.items() if not k.endswith(".manifest.json")} == before
    assert len([k for k in after if k.endswith(".manifest.json")]) == 36

    listing = json.loads(cli("list", "--repo", root, "--json", check=True).stdout)
    assert len(listing) == 36
    newest_pg = max((b for b in listing if b["kind"] == "postgres"), key=lambda b: b["created_at"])
    assert newest_pg["id"] == f"mev_protection_{name_of(stamp(1))}"
    assert newest_pg["created_at"] == stamp(1).strftime("%Y-%m-%dT%H:%M:%SZ")
    m = json.loads((root / "database" / f"{newest_pg['id']}.dump.gz.manifest.json").read_text())
    assert m["adopted"] is True and m["source_name"] == "mev_protection" and "tables" not in m["source"]
    f = root / "database" / f"{newest_pg['id']}.dump.gz"
    assert m["size"] == f.stat().st_size and m["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert m["payload_sha256"] == hashlib.sha256(gzip.decompress(f.read_bytes())).hexdigest()

    # Verified like any other backup.
    r = cli("verify", "--repo", root, "--backup", "all", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["failed"] == 0

    # Restored like any other backup: the database, the Redis RDB, the configuration.
    target = newdb()
    r = cli("restore", "postgres", "--repo", root, "--backup", "latest", "--dbname", pg.conninfo(target))
    assert r.returncode == 0, r.stderr
    assert pg.row_counts(target) == pg.row_counts("mev_protection")
    data_dir = tmp_path / "redis-data"
    data_dir.mkdir()
    r = cli("restore", "redis", "--repo", root, "--backup", "latest", "--data-dir", data_dir)
    assert r.returncode == 0, r.stderr
    newest_rdb = root / "redis" / f"redis_{name_of(stamp(1, 3))}.rdb.gz"
    assert (data_dir / "dump.rdb").read_bytes() == gzip.decompress(newest_rdb.read_bytes())
    out = tmp_path / "restored-config"
    r = cli("restore", "files", "--repo", root, "--backup", "latest", "--target", out)
    assert r.returncode == 0, r.stderr
    assert (out / "nginx" / "nginx.conf").read_text() == "events {}\n"

    # Retained like any other backup: what is younger than 30 days stays, nothing foreign goes.
    before_prune = snapshot(root)
    r = cli("prune", "--repo", root, "--keep-days", "30", "--now", NOW_S, "--json", check=True)
    res = json.loads(r.stdout)
    gone = sorted(d["id"] for d in res["decisions"] if d["action"] == "delete")
    assert gone == sorted([f"config_{name_of(stamp(45, 4))}", f"mev_protection_{name_of(stamp(30))}",
                           f"redis_{name_of(stamp(40, 3))}"]), gone
    left = snapshot(root)
    for name, d in days.items():
        kind_dir = "database" if name.endswith(".dump.gz") else "redis" if name.endswith(".rdb.gz") else "config"
        assert (f"{kind_dir}/{name}" in left) == (d < 30), name
    for rel in bad:
        assert left[rel] == before_prune[rel], rel

    # A second adoption finds nothing new and still reports the damaged files.
    r = cli("adopt", "--repo", root, "--json")
    again = json.loads(r.stdout)
    assert (again["adopted"], again["damaged"], again["foreign"]) == (0, 4, 3)


def test_python_adopt_reports_each_file(runbook_repo):
    root, days, bad = runbook_repo
    with mevbackup.Repository(str(root)) as r:
        rep = r.adopt(dry_run=True)
        assert rep.status == 4
        by_key = {f["key"]: f for f in rep.data["files"]}
        assert by_key["notes.txt"]["outcome"] == "foreign"
        assert by_key[f"database/mev_protection_{name_of(stamp(1))}.dump.gz"]["outcome"] == "adopted"
        assert by_key[f"database/mev_protection_{name_of(stamp(1))}.dump.gz"]["kind"] == "postgres"
        assert r.list() == []
        rep = r.adopt()
        assert rep.data["adopted"] == 36
        assert len(r.list()) == 36


# ---- the runbook's copies in S3 (`aws s3 cp` into s3://BUCKET/backups/database/)

BUCKET = "backups"


@pytest.fixture(scope="module")
def s3():
    from s3server import S3rver, VerifyingProxy
    server = S3rver([BUCKET]).start()
    proxy = VerifyingProxy(server).start()
    try:
        yield server, proxy
    finally:
        proxy.stop()
        server.stop()


def test_s3_runbook_copies_are_adopted_and_nothing_foreign_is_pruned(s3, cli, pg, tmp_path):
    from s3server import KEY, SECRET
    server, proxy = s3
    env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": proxy.endpoint,
           "AWS_REGION": "us-east-1", "AWS_SESSION_TOKEN": "", "AWS_MAX_ATTEMPTS": ""}
    cfg = tmp_path / "aws-config"
    cfg.write_text("[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n")
    aws_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "AWS_CONFIG_FILE": str(cfg),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_ACCESS_KEY_ID": KEY,
               "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_PAGER": ""}

    def aws(*args):
        r = subprocess.run(["/usr/bin/aws", "--endpoint-url", f"http://127.0.0.1:{server.port}", *args],
                           env=aws_env, capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout

    def objects():
        out = aws("s3api", "list-objects-v2", "--bucket", BUCKET, "--prefix", "backups/")
        return {o["Key"]: o["ETag"] for o in json.loads(out or b"{}").get("Contents", [])}

    local = tmp_path / "database"
    local.mkdir()
    dump = local / f"mev_protection_{name_of(stamp(40))}.dump.gz"
    pg_dump = os.path.join(_bindir(), "pg_dump")
    subprocess.run(f"'{pg_dump}' --format=custom '{pg.conninfo('mev_protection')}' | gzip > '{dump}'",
                   shell=True, check=True, env=pg.env())
    half = local / f"mev_protection_{name_of(stamp(41))}.dump.gz"
    half.write_bytes(dump.read_bytes()[:2000])
    notes = tmp_path / "notes.txt"
    notes.write_text("restore drill on Friday\n")
    for f in (dump, half):
        aws("s3", "cp", str(f), f"s3://{BUCKET}/backups/database/")
    aws("s3", "cp", str(notes), f"s3://{BUCKET}/backups/notes.txt")
    repo = f"s3://{BUCKET}/backups"
    before = objects()
    assert len(before) == 3

    r = cli("prune", "--repo", repo, "--keep-days", "30", "--now", NOW_S, "--grace", "0", "--dry-run", env=env,
            check=True)
    assert "would delete" not in r.stdout and r.stdout.count("foreign, kept") == 3, r.stdout
    r = cli("adopt", "--repo", repo, "--json", env=env)
    assert r.returncode == 1, r.stderr
    res = json.loads(r.stdout)
    by_key = {f["key"]: f["outcome"] for f in res["files"]}
    assert by_key == {f"database/{dump.name}": "adopted", f"database/{half.name}": "damaged", "notes.txt": "foreign"}
    listing = json.loads(cli("list", "--repo", repo, "--json", env=env, check=True).stdout)
    assert [b["id"] for b in listing] == [dump.name[: -len(".dump.gz")]]
    assert cli("verify", "--repo", repo, "--backup", "all", env=env).returncode == 0
    r = cli("prune", "--repo", repo, "--keep-days", "30", "--now", NOW_S, "--grace", "0", env=env, check=True)
    after = objects()
    # Adoption added the manifest (and verify its record); prune deleted nothing.
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {f"backups/database/{dump.name}.manifest.json",
                                        f"backups/database/{dump.name}.verify.json"}
