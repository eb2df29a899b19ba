"""Encrypted backups of every kind, against real servers: the backup host holds only a
public key (--recipient), stock `age -d` then gunzip, pg_restore, redis-check-rdb and tar
read every artifact, and the library restores them with the identity (--identity).
Missing, wrong and world-readable identities, edited manifests and damaged artifacts fail
with a message naming what is wrong, and leave the target and the repository as they were."""
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from pgserver import PgServer, free_port  # noqa: E402
from redisserver import RedisServer, same_data  # noqa: E402

import mevbackup  # noqa: E402


def keygen(path: Path) -> str:
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    os.chmod(path, 0o600)
    return subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    k = {"id": d / "backup.key", "other": d / "other.key"}
    k["recipient"] = keygen(k["id"])
    k["other_recipient"] = keygen(k["other"])
    return k


def age_decrypt(path, identity) -> bytes:
    r = subprocess.run(["age", "-d", "-i", str(identity), str(path)], capture_output=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def tree(root):
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def test_postgres_dump_encrypted_restores_with_identity_and_stock_age(cli, pg, repo, keys, newdb, tmp_path):
    r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"),
            "--recipient", keys["recipient"], "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["path"].endswith(".dump.gz.age") and m["encrypted"] is True
    assert m["encryption"] == {"format": "age", "recipients": [keys["recipient"]]}
    stored = Path(repo) / m["path"]
    raw = stored.read_bytes()
    assert raw.startswith(b"age-encryption.org/v1\n")
    assert hashlib.sha256(raw).hexdigest() == m["sha256"] and len(raw) == m["size"]  # checksums cover stored bytes
    assert b"AGE-SECRET-KEY" not in (Path(repo) / (m["path"] + ".manifest.json")).read_bytes()
    # The stock tools, as the 3 a.m. restore: age -d | gunzip | pg_restore.
    dump = gzip.decompress(age_decrypt(stored, keys["id"]))
    assert hashlib.sha256(dump).hexdigest() == m["payload_sha256"]
    (tmp_path / "db.dump").write_bytes(dump)
    listing = subprocess.run(["pg_restore", "-l", str(tmp_path / "db.dump")], capture_output=True, text=True)
    assert listing.returncode == 0 and "TABLE DATA public mev_threats" in listing.stdout, listing.stdout + listing.stderr

    # No identity: refused before anything is created, naming the backup and its recipient.
    target = newdb()
    r = cli("restore", "postgres", "--repo", repo, "--backup", m["id"], "--dbname", pg.conninfo(target))
    assert r.returncode != 0 and "identity" in r.stderr and keys["recipient"] in r.stderr, r.stderr
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{target}'") == "0"
    # A wrong identity: the age header says so; the staging database is dropped.
    r = cli("restore", "postgres", "--repo", repo, "--backup", m["id"], "--dbname", pg.conninfo(target),
            "--identity", keys["other"])
    assert r.returncode != 0 and "identit" in r.stderr.lower(), r.stderr
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '%{target}%'") == "0"
    # The right one restores every row.
    r = cli("restore", "postgres", "--repo", repo, "--backup", m["id"], "--dbname", pg.conninfo(target),
            "--identity", keys["id"])
    assert r.returncode == 0, r.stderr
    q = "SELECT count(*), sum(id) FROM mev_threats"
    assert pg.psql(q, dbname=target) == pg.psql(q, dbname="mev_protection")
    # verify decrypts (pg_restore --list of the real dump) with the identity ...
    r = cli("verify", "--repo", repo, "--backup", m["id"], "--identity", keys["id"], "--no-record")
    assert r.returncode == 0, r.stdout + r.stderr
    # ... and without one (the backup host) checks the stored bytes and says it did only that.
    r = cli("verify", "--repo", repo, "--backup", m["id"], "--no-record", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no identity" in r.stdout
    stored.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    r = cli("verify", "--repo", repo, "--backup", m["id"], "--no-record")
    assert r.returncode != 0 and "sha256" in (r.stdout + r.stderr).lower()
    stored.write_bytes(raw)


def test_world_readable_identity_and_bad_recipient_are_refused(cli, pg, repo, keys, tmp_path):
    loose = tmp_path / "loose.key"
    shutil.copy(keys["id"], loose)
    os.chmod(loose, 0o644)
    r = cli("list", "--repo", repo, "--identity", loose)
    assert r.returncode != 0 and "loose.key" in r.stderr and "0644" in r.stderr and "chmod 600" in r.stderr
    assert "AGE-SECRET-KEY" not in r.stderr
    bad = keys["recipient"][:-1] + ("q" if keys["recipient"][-1] != "q" else "p")  # checksum broken
    r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"), "--recipient", bad)
    assert r.returncode != 0 and "recipient" in r.stderr, r.stderr
    assert not Path(repo, "database").exists() or not list(Path(repo, "database").iterdir())
    # A recipients file names the line that is wrong.
    rf = tmp_path / "recipients.txt"
    rf.write_text(f"# ops\n{keys['recipient']}\nnot-a-key\n")
    r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"),
            "--recipients-file", rf)
    assert r.returncode != 0 and "line 3" in r.stderr, r.stderr


def test_files_encrypted_with_recipients_file_to_two_keys(cli, keys, tmp_path):
    repo = tmp_path / "repo"
    src = tmp_path / "etc"
    (src / "app").mkdir(parents=True)
    (src / "app" / "app.conf").write_text("listen = 127.0.0.1\n" * 50)
    (src / "app" / "limits.yaml").write_text("max: 3\n")
    rf = tmp_path / "recipients.txt"
    rf.write_text(f"# the ops team\n{keys['recipient']}\n\n{keys['other_recipient']}\n")
    r = cli("backup", "files", "--repo", repo, "--base", src, "--recipients-file", rf, "--json", "app")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["path"].endswith(".tar.gz.age")
    assert sorted(m["encryption"]["recipients"]) == sorted([keys["recipient"], keys["other_recipient"]])
    # Either identity opens it with stock age; tar reads what comes out.
    for ident in (keys["id"], keys["other"]):
        plain = tmp_path / "plain.tar.gz"
        plain.write_bytes(age_decrypt(repo / m["path"], ident))
        with tarfile.open(plain, "r:gz") as t:
            assert t.extractfile("app/app.conf").read() == (src / "app" / "app.conf").read_bytes()
    # The member list (file names) is encrypted too.
    members = repo / (m["path"] + ".members.json.gz")
    assert members.read_bytes().startswith(b"age-encryption.org/v1\n")
    out = tmp_path / "out"
    r = cli("restore", "files", "--repo", repo, "--target", out, "--identity", keys["other"])
    assert r.returncode == 0, r.stderr
    assert tree(out) == tree(src)


def test_passphrase_file_round_trip_and_never_in_argv(cli, tools, tmp_path):
    repo = tmp_path / "repo"
    src = tmp_path / "etc"
    src.mkdir()
    (src / "a.conf").write_text("x = 1\n")
    pf = tmp_path / "pass.txt"
    pf.write_text("correct horse battery staple\n")
    os.chmod(pf, 0o600)
    r = cli("backup", "files", "--repo", repo, "--base", src, "--passphrase-file", pf, "--json", "a.conf")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["encryption"]["recipients"] == ["scrypt"]
    assert b"correct horse" not in (repo / (m["path"] + ".manifest.json")).read_bytes()
    # Through a file descriptor (/dev/fd/N): the passphrase never touches a file.
    rd, wr = os.pipe()
    os.write(wr, b"correct horse battery staple\n")
    os.close(wr)
    out = tmp_path / "out"
    try:
        r = subprocess.run([tools["cli"], "restore", "files", "--repo", str(repo),
                            "--target", str(out), "--passphrase-file", f"/dev/fd/{rd}"],
                           capture_output=True, text=True, pass_fds=(rd,), timeout=120)
    finally:
        os.close(rd)
    assert r.returncode == 0, r.stderr
    assert (out / "a.conf").read_text() == "x = 1\n"
    # A wrong passphrase fails and restores nothing.
    pf.write_text("wrong\n")
    out2 = tmp_path / "out2"
    r = cli("restore", "files", "--repo", repo, "--target", out2, "--passphrase-file", pf)
    assert r.returncode != 0 and not (out2 / "a.conf").exists(), r.stderr


def test_edited_manifest_and_damaged_artifact_are_refused(cli, pg, keys, newdb, tmp_path):
    repo = tmp_path / "repo"
    r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"),
            "--recipient", keys["recipient"], "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    mpath = repo / (m["path"] + ".manifest.json")
    artifact = repo / m["path"]
    original_manifest, original = mpath.read_bytes(), artifact.read_bytes()
    target = newdb()

    # A manifest claiming "encrypted": false for an encrypted artifact.
    j = json.loads(original_manifest)
    j["encrypted"] = False
    j.pop("encryption")
    mpath.write_text(json.dumps(j))
    r = cli("restore", "postgres", "--repo", repo, "--backup", m["id"], "--dbname", pg.conninfo(target),
            "--identity", keys["id"])
    assert r.returncode != 0 and "age-encrypted but its manifest says it is not" in r.stderr, r.stderr
    mpath.write_bytes(original_manifest)

    # A bit flipped in the payload (checksums fixed up, as a forger would): the chunk's tag
    # fails, and the staging database is dropped.
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    artifact.write_bytes(bytes(flipped))
    j = json.loads(original_manifest)
    j["sha256"] = hashlib.sha256(flipped).hexdigest()
    mpath.write_text(json.dumps(j))
    r = cli("restore", "postgres", "--repo", repo, "--backup", m["id"], "--dbname", pg.conninfo(target),
            "--identity", keys["id"])
    assert r.returncode != 0 and ("tag" in r.stderr or "corrupt" in r.stderr.lower() or "damaged" in r.stderr), \
        r.stderr
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '%{target}%'") == "0"

    # Cut short (sizes fixed up too): the last chunk is missing.
    cut = original[:len(original) - 100]
    artifact.write_bytes(cut)
    j["sha256"], j["size"] = hashlib.sha256(cut).hexdigest(), len(cut)
    mpath.write_text(json.dumps(j))
    r = cli("restore", "postgres", "--repo", repo, "--backup", m["id"], "--dbname", pg.conninfo(target),
            "--identity", keys["id"])
    assert r.returncode != 0, r.stderr
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '%{target}%'") == "0"


def test_redis_encrypted_rdb_restores_and_stock_tools_read_it(cli, keys, tmp_path):
    with RedisServer() as src:
        src.fill_sample()
        repo = tmp_path / "repo"
        r = cli("backup", "redis", "--repo", repo, "--redis-url", src.url(), "--recipient", keys["recipient"],
                "--json")
        assert r.returncode == 0, r.stderr
        m = json.loads(r.stdout)
        assert m["path"].endswith(".rdb.gz.age") and m["encrypted"] is True
        rdb = tmp_path / "dump.rdb"
        rdb.write_bytes(gzip.decompress(age_decrypt(repo / m["path"], keys["id"])))
        check = subprocess.run(["redis-check-rdb", str(rdb)], capture_output=True, text=True)
        assert check.returncode == 0 and "RDB looks OK" in check.stdout, check.stdout + check.stderr
        target = RedisServer()
        try:
            r = cli("restore", "redis", "--repo", repo, "--data-dir", target.dir)
            assert r.returncode != 0 and "identity" in r.stderr
            assert not os.path.exists(os.path.join(target.dir, "dump.rdb"))
            r = cli("restore", "redis", "--repo", repo, "--data-dir", target.dir, "--identity", keys["id"])
            assert r.returncode == 0, r.stderr
            target.start()
            same_data(src.snapshot(), target.snapshot())
        finally:
            target.stop()


def test_user_kind_through_python_encrypted(keys, tmp_path):
    repo = tmp_path / "repo"
    payload = b'{"export": "service state"}\n' * 1000

    def get(r, b):
        got = []
        r.get_artifact(b, mevbackup.Sink.to_callback(got.append))
        return b"".join(got)

    with mevbackup.Repository(repo, recipients=[keys["recipient"]]) as r:
        b = r.put_artifact(mevbackup.Source.from_iterable([payload[:5000], payload[5000:]]), kind="export",
                           name_prefix="svc", extension=".jsonl")
        assert b.path.endswith(".jsonl.gz.age")
        with pytest.raises(mevbackup.Error) as e:
            get(r, b)
        assert "identity" in str(e.value)
    assert gzip.decompress(age_decrypt(repo / b.path, keys["id"])) == payload
    with mevbackup.Repository(repo, identity_files=[keys["id"]]) as r:
        assert get(r, b) == payload
    with pytest.raises(TypeError):
        mevbackup.Repository(repo, recipients=keys["recipient"])  # one string, not a list of them


def _run(cli, *args, env=None, timeout=180):
    return subprocess.run([cli, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _stop_server(data_dir):
    import glob
    pg_ctl = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1]
    argv = [pg_ctl, "-D", data_dir, "-m", "immediate", "-w", "stop"]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--"] + argv
    subprocess.run(argv, capture_output=True, timeout=60)


def test_pitr_with_encrypted_base_backup_and_wal(tools):
    """archive_command encrypts every WAL segment to the public key, the base backup is
    encrypted, and a point-in-time restore decrypts both with the identity (the
    restore_command it writes passes the identity file's path, never a key)."""
    cli = tools["cli"]
    work = tempfile.mkdtemp(prefix="mevb-enc-pitr-")
    os.chmod(work, 0o755)
    repo = os.path.join(work, "repo")
    os.mkdir(repo, 0o700)
    ident = Path(work) / "backup.key"
    recipient = keygen(ident)
    if os.geteuid() == 0:  # the server (as postgres) runs wal-push and wal-fetch
        shutil.chown(repo, "postgres", "postgres")
        shutil.chown(ident, "postgres", "postgres")
    pg = PgServer(extra_opts="-c archive_mode=on -c wal_level=replica -c archive_timeout=0")
    pg.start()
    data = os.path.join(work, "restored")
    try:
        env = pg.env()
        pg.psql(f"ALTER SYSTEM SET archive_command = '{cli} wal-push --repo {repo} --recipient {recipient} %p'")
        pg.psql("SELECT pg_reload_conf()")
        pg.psql("CREATE TABLE accounts (id int PRIMARY KEY, note text NOT NULL)")
        pg.psql("INSERT INTO accounts SELECT g, 'before ' || g FROM generate_series(1, 1000) g")
        r = _run(cli, "backup", "basebackup", "--repo", repo, "--dbname", pg.conninfo(), "--recipient", recipient,
                 "--json", env=env)
        assert r.returncode == 0, r.stderr
        m = json.loads(r.stdout)
        assert m["encrypted"] is True and m["path"].endswith("/base.tar.gz.age")
        for f in m["source"]["files"]:
            assert f["path"].endswith(".gz.age"), f
            assert Path(repo, f["path"]).read_bytes().startswith(b"age-encryption.org/v1\n")
        # Stock tools read the base archive: age -d | tar -tz.
        base = age_decrypt(Path(repo, m["path"]), ident)
        listing = subprocess.run(["tar", "-tz"], input=base, capture_output=True)
        assert listing.returncode == 0 and b"PG_VERSION" in listing.stdout

        pg.psql("INSERT INTO accounts SELECT g, 'after ' || g FROM generate_series(1001, 1500) g")
        target = pg.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
        pg.psql("DELETE FROM accounts WHERE id <= 1200")
        seg = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        pg.psql("SELECT pg_switch_wal()")
        stored = os.path.join(repo, "wal", seg[:8], seg + ".gz")
        _wait(lambda: os.path.exists(stored), 60, f"archiving of {seg}")
        wal = Path(stored).read_bytes()
        assert wal.startswith(b"age-encryption.org/v1\n")  # no WAL in clear text
        assert len(gzip.decompress(age_decrypt(stored, ident))) == 16 * 1024 * 1024

        # Rotation: the base backup is rekeyed to a new identity (every part moves to a new
        # id); the WAL keeps the old recipient, so the restore takes both identities.
        ident2 = Path(work) / "new.key"
        recipient2 = keygen(ident2)
        if os.geteuid() == 0:
            shutil.chown(ident2, "postgres", "postgres")
        r = _run(cli, "rekey", "--repo", repo, "--backup", m["id"], "--identity", ident, "--recipient", recipient2,
                 "--json", env=env)
        assert r.returncode == 0, r.stderr
        rk = json.loads(r.stdout)
        assert rk["id"] == m["id"] + "_1" and rk["kind"] == "basebackup"
        assert rk["encryption"]["recipients"] == [recipient2]
        old_dir = os.path.join(repo, "basebackup", m["id"])
        assert not os.path.exists(old_dir) or os.listdir(old_dir) == []  # every old part is gone
        assert [os.path.basename(f["path"]) for f in rk["source"]["files"]] == \
            [os.path.basename(f["path"]) for f in m["source"]["files"]]
        for f in rk["source"]["files"]:
            assert f["path"].startswith(f"basebackup/{rk['id']}/")
            assert hashlib.sha256(Path(repo, f["path"]).read_bytes()).hexdigest() == f["sha256"]
            assert subprocess.run(["age", "-d", "-i", str(ident), str(Path(repo, f["path"]))],
                                  capture_output=True).returncode != 0  # the old identity no longer opens it
        assert age_decrypt(Path(repo, rk["path"]), ident2) == base  # the same tar inside
        r = _run(cli, "verify", "--repo", repo, "--backup", rk["id"], "--identity", ident2, env=env)
        assert r.returncode == 0, r.stdout + r.stderr

        # Without the identity the restore refuses before it writes a data directory.
        os.mkdir(data, 0o700)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        port = free_port()
        common = ["restore", "pitr", "--repo", repo, "--target-time", target, "--data-dir", data,
                  "--set", f"port={port}", "--set", "listen_addresses=127.0.0.1", "--set", "unix_socket_directories="]
        r = _run(cli, *common, env=env)
        assert r.returncode != 0 and "identity" in r.stderr, r.stderr
        assert os.listdir(data) == []
        r = _run(cli, *common, "--identity", ident2, "--identity", ident, "--start", "--timeout", "120", env=env)
        log = os.path.join(data, "pitr_recovery.log")
        assert r.returncode == 0, r.stdout + r.stderr + (open(log).read() if os.path.exists(log) else "")
        conf = open(os.path.join(data, "postgresql.auto.conf")).read()
        line = [x for x in conf.splitlines() if x.startswith("restore_command")][0]
        assert "--identity" in line and str(ident) in line and str(ident2) in line and "AGE-SECRET-KEY" not in conf
        second = PgServer()
        second.port = port
        second.password = pg.password
        assert second.psql("SELECT count(*) FROM accounts") == "1500"
        shutil.rmtree(second.root, ignore_errors=True)
    finally:
        _stop_server(data)
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_check_warns_about_backups_to_recipients_not_in_the_current_set(tools, keys, tmp_path):
    """Rotation: backups encrypted to a retired key need its identity kept; check says so,
    and says when the newest backup is not encrypted at all."""
    repo = tmp_path / "repo"
    src = tmp_path / "etc"
    src.mkdir()
    (src / "a.conf").write_text("x\n")

    def run(*args):
        return subprocess.run([tools["cli"], *map(str, args)], capture_output=True, text=True, timeout=120)

    r = run("backup", "files", "--repo", repo, "--base", src, "--recipient", keys["other_recipient"], "a.conf")
    assert r.returncode == 0, r.stderr
    time.sleep(1.1)
    r = run("backup", "files", "--repo", repo, "--base", src, "--recipient", keys["recipient"], "a.conf")
    assert r.returncode == 0, r.stderr
    r = run("check", "--repo", repo, "--max-age", "1h", "--recipient", keys["recipient"])
    assert r.returncode == 1 and "WARNING" in r.stdout and keys["other_recipient"] in r.stdout, r.stdout
    assert "1 backup(s) encrypted to recipients not in the current set" in r.stdout
    r = run("check", "--repo", repo, "--max-age", "1h", "--recipient", keys["recipient"], "--recipient", keys["other_recipient"])
    assert r.returncode == 0, r.stdout
    r = run("check", "--repo", repo, "--max-age", "1h")  # no current set given: nothing to compare
    assert r.returncode == 0, r.stdout
    time.sleep(1.1)
    r = run("backup", "files", "--repo", repo, "--base", src, "a.conf")  # encryption forgotten
    assert r.returncode == 0, r.stderr
    r = run("check", "--repo", repo, "--max-age", "1h", "--recipient", keys["recipient"], "--recipient", keys["other_recipient"])
    assert r.returncode == 1 and "is not encrypted" in r.stdout, r.stdout


def test_rekey_rewrites_headers_only_and_keeps_the_old_backup_on_failure(tools, keys, tmp_path):
    """Rotation of a stored backup: rekey opens it with the old identity and re-encrypts
    it to the new recipient by rewriting the age headers (the payload bytes after them are
    the same), under a new id, signed anew; the old identity no longer opens it. A wrong
    identity or a damaged artifact leaves the backup exactly as it was."""
    repo = tmp_path / "repo"
    src = tmp_path / "etc"
    src.mkdir()
    (src / "a.conf").write_text("secret = 1\n" * 2000)

    def run(*args):
        return subprocess.run([tools["cli"], *map(str, args)], capture_output=True, text=True, timeout=120)

    gen = json.loads(run("key", "generate", "--dir", tmp_path / "k", "--json").stdout)
    r = run("backup", "files", "--repo", repo, "--base", src, "--recipient", keys["other_recipient"], "--json",
            "a.conf")
    assert r.returncode == 0, r.stderr
    old = json.loads(r.stdout)
    old_bytes = (repo / old["path"]).read_bytes()
    r = run("verify", "--repo", repo, "--backup", old["id"], "--identity", keys["other"])
    assert r.returncode == 0, r.stdout + r.stderr
    before = tree(repo)

    # A wrong identity: refused, nothing changed.
    r = run("rekey", "--repo", repo, "--backup", old["id"], "--identity", keys["id"], "--recipient", keys["recipient"])
    assert r.returncode != 0 and "no identity matches" in r.stderr, r.stderr
    assert tree(repo) == before
    # A damaged payload with the manifest's checksums untouched: refused before anything is kept.
    damaged = bytearray(old_bytes)
    damaged[-20] ^= 1
    (repo / old["path"]).write_bytes(bytes(damaged))
    r = run("rekey", "--repo", repo, "--backup", old["id"], "--identity", keys["other"], "--recipient",
            keys["recipient"])
    assert r.returncode != 0 and "does not match its manifest" in r.stderr, r.stderr
    (repo / old["path"]).write_bytes(old_bytes)
    assert tree(repo) == before

    r = run("rekey", "--repo", repo, "--backup", "latest", "--identity", keys["other"], "--recipient",
            keys["recipient"], "--signing-key", gen["signing_key_file"], "--json")
    assert r.returncode == 0, r.stderr
    new = json.loads(r.stdout)
    assert new["id"] != old["id"] and new["started_at"] == old["started_at"]
    assert new["encryption"]["recipients"] == [keys["recipient"]]
    assert new["source"]["rekeyed_from"]["id"] == old["id"]
    assert not (repo / old["path"]).exists() and not (repo / (old["path"] + ".manifest.json")).exists()
    new_bytes = (repo / new["path"]).read_bytes()
    # Only the header changed: the payload (nonce and chunks) is byte for byte the old one.
    old_hdr = old_bytes.index(b"\n---") + old_bytes[old_bytes.index(b"\n---") + 1:].index(b"\n") + 2
    new_hdr = new_bytes.index(b"\n---") + new_bytes[new_bytes.index(b"\n---") + 1:].index(b"\n") + 2
    assert new_bytes[new_hdr:] == old_bytes[old_hdr:]
    assert hashlib.sha256(new_bytes).hexdigest() == new["sha256"]
    assert age_decrypt(repo / new["path"], keys["id"]) == age_decrypt_bytes(old_bytes, keys["other"])
    r = subprocess.run(["age", "-d", "-i", str(keys["other"]), str(repo / new["path"])], capture_output=True)
    assert r.returncode != 0  # the old identity no longer opens it
    # Its verification record came along; it restores with the new identity and the verify key.
    assert (repo / (new["path"] + ".verify.json")).exists()
    out = tmp_path / "out"
    r = run("restore", "files", "--repo", repo, "--target", out, "--identity", keys["id"], "--verify-key",
            gen["verify_key_file"])
    assert r.returncode == 0, r.stderr
    assert (out / "a.conf").read_text() == (src / "a.conf").read_text()
    # Plaintext backups are not rekeyed (a new backup with --recipient encrypts).
    r = run("backup", "files", "--repo", repo, "--base", src, "--prefix", "plain", "a.conf")
    assert r.returncode == 0
    r = run("rekey", "--repo", repo, "--backup", "latest", "--source", "plain", "--identity", keys["id"],
            "--recipient", keys["recipient"])
    assert r.returncode != 0 and "not encrypted" in r.stderr


def age_decrypt_bytes(data, identity) -> bytes:
    r = subprocess.run(["age", "-d", "-i", str(identity)], input=data, capture_output=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_python_rekey(keys, tmp_path):
    repo = tmp_path / "repo"
    with mevbackup.Repository(repo, recipients=[keys["other_recipient"]]) as r:
        b = r.put_artifact(mevbackup.Source.from_iterable([b"x" * 100000]), kind="export", name_prefix="svc")
    with mevbackup.Repository(repo, recipients=[keys["recipient"]], identity_files=[keys["other"]]) as r:
        n = r.rekey(b.id)
    assert n.id != b.id and n.encrypted
    assert n.manifest["encryption"]["recipients"] == [keys["recipient"]]
    assert gzip.decompress(age_decrypt(repo / n.path, keys["id"])) == b"x" * 100000
