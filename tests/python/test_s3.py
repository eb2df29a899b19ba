"""S3 repositories end to end: s3rver on 127.0.0.1 behind a proxy that verifies every
SigV4 signature with botocore, the mevbackup CLI and Python API as clients, and the aws
CLI as the independent reader."""
import gzip
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from pgserver import _bindir  # noqa: E402
from s3server import KEY, SECRET, Fault, S3rver, VerifyingProxy  # noqa: E402

import mevbackup  # noqa: E402

BUCKET = "backups"


@pytest.fixture(scope="module")
def s3():
    server = S3rver([BUCKET]).start()
    proxy = VerifyingProxy(server).start()
    try:
        yield SimpleNamespace(server=server, proxy=proxy)
    finally:
        proxy.stop()
        server.stop()


_n = [0]


@pytest.fixture
def prefix(s3):
    """A fresh prefix in the bucket; faults of earlier tests are cleared."""
    s3.proxy.faults.clear()
    _n[0] += 1
    return f"host{_n[0]}/pg"


@pytest.fixture
def s3env(s3):
    return {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": s3.proxy.endpoint,
            "AWS_REGION": "us-east-1", "AWS_SESSION_TOKEN": "", "AWS_MAX_ATTEMPTS": ""}


@pytest.fixture
def aws(s3, tmp_path):
    """The aws CLI, talking to s3rver directly."""
    cfg = tmp_path / "aws-config"
    cfg.write_text("[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n")

    def run(*args, check=True):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "AWS_CONFIG_FILE": str(cfg),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_ACCESS_KEY_ID": KEY,
               "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_PAGER": ""}
        r = subprocess.run(["/usr/bin/aws", "--endpoint-url", f"http://127.0.0.1:{s3.server.port}", *args],
                           env=env, capture_output=True, timeout=300)
        if check:
            assert r.returncode == 0, r.stderr.decode()
        return r

    return run


def keys_under(aws, prefix):
    out = aws("s3api", "list-objects-v2", "--bucket", BUCKET, "--prefix", prefix + "/").stdout
    return sorted(o["Key"] for o in json.loads(out or b"{}").get("Contents", []))


@pytest.fixture(scope="module")
def blobdb(pg):
    """A database whose compressed dump needs several 5 MiB parts."""
    pg.psql("CREATE DATABASE mev_blob")
    pg.psql("CREATE TABLE blob AS SELECT g AS id, md5(random()::text) || md5(random()::text) || "
            "md5(random()::text) AS v FROM generate_series(1, 200000) g", dbname="mev_blob")
    return "mev_blob"


def blob_digest(pg, db):
    return pg.psql("SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM blob", dbname=db)


def test_backup_is_multipart_readable_by_aws_and_restores(cli, pg, s3, prefix, s3env, aws, blobdb, newdb):
    repo = f"s3://{BUCKET}/{prefix}"
    r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo(blobdb), "--storage-class", "STANDARD_IA",
            "--part-size", "5", "--json", env=s3env, check=True)
    m = json.loads(r.stdout)
    key = f"{prefix}/{m['path']}"
    assert m["size"] > 10 * 1024 * 1024

    # Streamed as a multipart upload: several parts, then one completion.
    parts = [c for c in s3.proxy.calls("PUT", "partNumber=") if c["path"] == f"/{BUCKET}/{key}"]
    assert len(parts) >= 2 and all(c["status"] == 200 for c in parts)
    assert [c["status"] for c in s3.proxy.calls("POST") if c["path"] == f"/{BUCKET}/{key}"
            and "uploadId=" in c["query"]] == [200]

    # The independent client sees the artifact, its storage class and its manifest.
    assert keys_under(aws, prefix) == sorted([key, key + ".manifest.json"])
    head = json.loads(aws("s3api", "head-object", "--bucket", BUCKET, "--key", key).stdout)
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ContentLength"] == m["size"]
    data = aws("s3", "cp", f"s3://{BUCKET}/{key}", "-").stdout
    assert hashlib.sha256(data).hexdigest() == m["sha256"]
    manifest = json.loads(aws("s3", "cp", f"s3://{BUCKET}/{key}.manifest.json", "-").stdout)
    assert manifest["sha256"] == m["sha256"]

    # Stock tools restore what the aws CLI downloaded.
    target = newdb("stock")
    pg.psql(f"CREATE DATABASE {target}")
    dump = Path(os.environ.get("TMPDIR", "/tmp")) / f"{target}.dump"
    try:
        dump.write_bytes(gzip.decompress(data))
        subprocess.run([os.path.join(_bindir(), "pg_restore"), "-d", pg.conninfo(target), "--no-owner", str(dump)],
                       env=pg.env(), check=True, capture_output=True, timeout=300)
    finally:
        dump.unlink(missing_ok=True)
    assert blob_digest(pg, target) == blob_digest(pg, blobdb)

    # And mevbackup restores from the bucket.
    target2 = newdb("s3")
    cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target2), env=s3env, check=True)
    assert blob_digest(pg, target2) == blob_digest(pg, blobdb)
    listed = cli("list", "--repo", repo, "--json", env=s3env, check=True).stdout
    assert m["id"] in listed


def test_single_put_small_backup_and_python_api(cli, pg, s3, prefix, s3env, aws):
    repo = f"s3://{BUCKET}/{prefix}"
    r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"), "--json", env=s3env,
            check=True)
    m = json.loads(r.stdout)
    assert not [c for c in s3.proxy.calls("POST") if c["path"].startswith(f"/{BUCKET}/{prefix}/")]
    head = json.loads(aws("s3api", "head-object", "--bucket", BUCKET, "--key", f"{prefix}/{m['path']}").stdout)
    assert head.get("StorageClass", "STANDARD") == "STANDARD"

    # The same settings through the Python API, with nothing in the environment.
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_")}
    try:
        with mevbackup.Repository(repo, endpoint_url=s3.proxy.endpoint, region="us-east-1", access_key_id=KEY,
                                  secret_access_key=SECRET) as py:
            assert [b.id for b in py.list()] == [m["id"]]
        with pytest.raises(mevbackup.AuthenticationFailed) as e:
            with mevbackup.Repository(repo, endpoint_url=s3.proxy.endpoint, region="us-east-1", access_key_id=KEY,
                                      secret_access_key="not-the-secret") as py:
                py.list()
        assert "SignatureDoesNotMatch" in str(e.value) and "not-the-secret" not in str(e.value)
        with pytest.raises(mevbackup.AuthenticationFailed, match="AWS_ACCESS_KEY_ID"):
            mevbackup.Repository(repo, endpoint_url=s3.proxy.endpoint)
    finally:
        os.environ.update(saved)


def test_wrong_secret_fails_at_once_and_leaves_nothing(cli, pg, s3, prefix, s3env, aws):
    env = dict(s3env, AWS_SECRET_ACCESS_KEY="definitely-wrong-secret")
    before = len(s3.proxy.calls())
    r = cli("backup", "postgres", "--repo", f"s3://{BUCKET}/{prefix}", "--dbname", pg.conninfo("mev_protection"),
            env=env)
    assert r.returncode == 1
    assert "403" in r.stderr and "SignatureDoesNotMatch" in r.stderr, r.stderr
    assert "definitely-wrong-secret" not in r.stderr
    calls = s3.proxy.calls()[before:]
    assert calls and all(c["status"] == 403 for c in calls)
    assert len(calls) <= 2  # the HEAD and the GET that explains it: a 4xx is not retried
    assert keys_under(aws, prefix) == []


def test_5xx_answers_are_retried(cli, pg, s3, prefix, s3env, aws):
    s3.proxy.faults = [
        Fault(lambda m, p, q: m == "PUT" and p.endswith(".dump.gz"), "500"),
        Fault(lambda m, p, q: m == "PUT" and p.endswith(".manifest.json"), "503", count=2),
    ]
    r = cli("backup", "postgres", "--repo", f"s3://{BUCKET}/{prefix}", "--dbname", pg.conninfo("mev_protection"),
            "--json", env=s3env, check=True)
    m = json.loads(r.stdout)
    statuses = [c["status"] for c in s3.proxy.calls("PUT") if c["path"].startswith(f"/{BUCKET}/{prefix}/")
                and "/locks/" not in c["path"]  # the repository lock's objects (docs/lock.md)
                and ".claim-" not in c["path"]]  # the claim of the backup's name (design.md)
    assert statuses == [500, 200, 503, 503, 200]
    data = aws("s3", "cp", f"s3://{BUCKET}/{prefix}/{m['path']}", "-").stdout
    assert hashlib.sha256(data).hexdigest() == m["sha256"]


def test_connection_dropped_mid_upload_is_retried(cli, pg, s3, prefix, s3env, aws, blobdb):
    s3.proxy.faults = [Fault(lambda m, p, q: m == "PUT" and q.get("partNumber") == "2", "drop")]
    r = cli("backup", "postgres", "--repo", f"s3://{BUCKET}/{prefix}", "--dbname", pg.conninfo(blobdb),
            "--part-size", "5", "--json", env=s3env, check=True)
    m = json.loads(r.stdout)
    part2 = [c["status"] for c in s3.proxy.calls("PUT", "partNumber=2&")
             if c["path"].startswith(f"/{BUCKET}/{prefix}/")]
    assert part2 == ["dropped", 200]
    data = aws("s3", "cp", f"s3://{BUCKET}/{prefix}/{m['path']}", "-").stdout
    assert hashlib.sha256(data).hexdigest() == m["sha256"]


def test_retries_give_up_with_a_clear_error(cli, pg, s3, prefix, s3env, aws):
    s3.proxy.faults = [Fault(lambda m, p, q: m == "PUT" and p.endswith(".dump.gz"), "503", count=100)]
    r = cli("backup", "postgres", "--repo", f"s3://{BUCKET}/{prefix}", "--dbname", pg.conninfo("mev_protection"),
            env=dict(s3env, AWS_MAX_ATTEMPTS="2"))
    assert r.returncode == 1
    assert "503 SlowDown" in r.stderr and "after 2 attempts" in r.stderr, r.stderr
    assert keys_under(aws, prefix) == []


def test_stream_failing_midway_aborts_the_upload(cli, pg, s3, prefix, s3env, aws, tmp_path):
    real = os.path.join(_bindir(), "pg_dump")
    fake = tmp_path / "pg_dump"
    fake.write_text(f"#!/bin/sh\ncase \"$1\" in --version) exec {real} --version;; esac\n"
                    "head -c 12000000 /dev/urandom\n"
                    # Hold the stream open until the first parts are stored (or 20 s), so the
                    # failure lands mid-upload rather than racing the first part.
                    f"i=0; while [ $i -lt 200 ] && ! [ -e {tmp_path}/parts ]; do sleep 0.1; i=$((i+1)); done\n"
                    "echo 'pg_dump: error: simulated failure' >&2\nexit 1\n")
    fake.chmod(0o755)
    stop = threading.Event()

    def mark_first_part():
        while not stop.is_set():
            # This test's parts only: the proxy's log also holds earlier tests' uploads.
            if any(c["path"].startswith(f"/{BUCKET}/{prefix}/") for c in s3.proxy.calls("PUT", "partNumber=")):
                (tmp_path / "parts").touch()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=mark_first_part)
    watcher.start()
    try:
        r = cli("backup", "postgres", "--repo", f"s3://{BUCKET}/{prefix}", "--dbname",
                pg.conninfo("mev_protection"), "--pg-dump", fake, "--part-size", "5", env=s3env)
    finally:
        stop.set()
        watcher.join()
    assert r.returncode == 1
    assert "simulated failure" in r.stderr, r.stderr
    mine = [c for c in s3.proxy.calls() if c["path"].startswith(f"/{BUCKET}/{prefix}/")]
    assert any(c["method"] == "PUT" and "partNumber=" in c["query"] for c in mine)  # it was streaming
    aborts = [c for c in mine if c["method"] == "DELETE" and "uploadId=" in c["query"]]
    assert [c["status"] for c in aborts] == [204]
    assert not [c for c in mine if c["method"] == "POST" and "uploadId=" in c["query"]]  # never completed
    assert keys_under(aws, prefix) == []
    assert not [k for k in s3.proxy.pending_uploads(BUCKET) if k.startswith(prefix + "/")]


def test_sync_local_to_s3_and_back(cli, pg, s3, prefix, s3env, aws, tmp_path):
    local = tmp_path / "local"
    first = json.loads(cli("backup", "postgres", "--repo", local, "--dbname", pg.conninfo("mev_protection"), "--json",
                           check=True).stdout)
    second = json.loads(cli("backup", "postgres", "--repo", local, "--dbname", pg.conninfo("mev_protection"),
                            "--json", check=True).stdout)
    remote = f"s3://{BUCKET}/{prefix}"
    r = cli("sync", "--from", local, "--to", remote, "--storage-class", "REDUCED_REDUNDANCY", "--kind", "postgres",
            env=s3env, check=True)
    assert "copied 2 backups" in r.stdout
    for m in (first, second):
        key = f"{prefix}/{m['path']}"
        head = json.loads(aws("s3api", "head-object", "--bucket", BUCKET, "--key", key).stdout)
        assert head["StorageClass"] == "REDUCED_REDUNDANCY"
        assert aws("s3", "cp", f"s3://{BUCKET}/{key}", "-").stdout == (local / m["path"]).read_bytes()
        assert (aws("s3", "cp", f"s3://{BUCKET}/{key}.manifest.json", "-").stdout ==
                (local / (m["path"] + ".manifest.json")).read_bytes())
    # Nothing left to copy the second time.
    assert "copied 0 backups" in cli("sync", "--from", local, "--to", remote, env=s3env, check=True).stdout

    # S3 -> local, through the Python API.
    back = tmp_path / "back"
    with mevbackup.Repository(remote, endpoint_url=s3.proxy.endpoint, region="us-east-1", access_key_id=KEY,
                              secret_access_key=SECRET) as src, mevbackup.Repository(back) as dst:
        assert src.sync_to(dst) == 2
        assert sorted(b.id for b in dst.list()) == sorted([first["id"], second["id"]])
    for m in (first, second):
        assert (back / m["path"]).read_bytes() == (local / m["path"]).read_bytes()


def test_sync_refuses_a_corrupt_artifact(cli, pg, s3, prefix, s3env, aws, tmp_path):
    local = tmp_path / "local"
    m = json.loads(cli("backup", "postgres", "--repo", local, "--dbname", pg.conninfo("mev_protection"), "--json",
                       check=True).stdout)
    art = local / m["path"]
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    art.write_bytes(bytes(data))
    r = cli("sync", "--from", local, "--to", f"s3://{BUCKET}/{prefix}", env=s3env)
    assert r.returncode == 1
    assert "SHA-256" in r.stderr and "not copied" in r.stderr, r.stderr
    assert keys_under(aws, prefix) == []


def test_lifecycle_needs_server_support_and_s3(cli, s3, prefix, s3env, tmp_path):
    # s3rver does not implement bucket lifecycle rules: the error says so plainly.
    r = cli("lifecycle", "--repo", f"s3://{BUCKET}/{prefix}", "--transition", "30:GLACIER", "--transition",
            "90:DEEP_ARCHIVE", "--expire", "365", env=s3env)
    assert r.returncode == 1
    assert "does not support bucket lifecycle rules" in r.stderr and "NotImplemented" in r.stderr, r.stderr
    lc = [c for c in s3.proxy.calls() if c["query"] == "lifecycle="]
    assert lc and lc[-1]["status"] == 501  # signed correctly (the proxy let it through)
    r = cli("lifecycle", "--repo", f"s3://{BUCKET}/{prefix}", "--transition", "90:GLACIER", "--transition",
            "30:DEEP_ARCHIVE", env=s3env)
    assert r.returncode == 1 and "increasing" in r.stderr
    with pytest.raises(mevbackup.Unsupported):
        with mevbackup.Repository(tmp_path / "local") as local:
            local.put_bucket_lifecycle([(30, "GLACIER")], expire_days=365)


def _is_complete(m, p, q):
    return m == "POST" and "uploadId" in q


def test_complete_answering_200_with_an_error(cli, pg, s3, prefix, s3env, aws, blobdb):
    # A transient error inside a 200 is retried...
    s3.proxy.faults = [Fault(_is_complete, "200-InternalError")]
    r = cli("backup", "postgres", "--repo", f"s3://{BUCKET}/{prefix}", "--dbname", pg.conninfo(blobdb),
            "--part-size", "5", "--json", env=s3env, check=True)
    m = json.loads(r.stdout)
    completes = [c["status"] for c in s3.proxy.calls("POST", "uploadId=") if c["path"].startswith(f"/{BUCKET}/{prefix}/")]
    assert completes == ["200-InternalError", 200]
    data = aws("s3", "cp", f"s3://{BUCKET}/{prefix}/{m['path']}", "-").stdout
    assert hashlib.sha256(data).hexdigest() == m["sha256"]

    # ...any other is a failure: the upload is aborted and nothing is published.
    other = prefix + "-b"
    s3.proxy.faults = [Fault(_is_complete, "200-InvalidPart", count=10)]
    r = cli("backup", "postgres", "--repo", f"s3://{BUCKET}/{other}", "--dbname", pg.conninfo(blobdb),
            "--part-size", "5", env=s3env)
    assert r.returncode == 1
    assert "CompleteMultipartUpload" in r.stderr and "InvalidPart" in r.stderr, r.stderr
    assert keys_under(aws, other) == []
    assert not [k for k in s3.proxy.pending_uploads(BUCKET) if k.startswith(other + "/")]


def test_cancel_mid_upload_aborts_it(pg, s3, prefix, aws, tmp_path, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", pg.password)
    real = os.path.join(_bindir(), "pg_dump")
    fake = tmp_path / "pg_dump"
    fake.write_text(f"#!/bin/sh\ncase \"$1\" in --version) exec {real} --version;; esac\n"
                    "head -c 16000000 /dev/urandom\nexec sleep 60\n")
    fake.chmod(0o755)

    class Stop(Exception):
        pass

    def progress(p):
        if p.bytes_out >= 15_000_000:
            raise Stop("enough")

    with mevbackup.Repository(f"s3://{BUCKET}/{prefix}", endpoint_url=s3.proxy.endpoint, region="us-east-1",
                              access_key_id=KEY, secret_access_key=SECRET, part_size=5 * 1024 * 1024) as r:
        with pytest.raises(Stop):
            r.backup_postgres(pg.conninfo("mev_protection"), pg_dump=str(fake), compression="none",
                              progress=progress)
        assert r.list() == []
    mine = [c for c in s3.proxy.calls() if c["path"].startswith(f"/{BUCKET}/{prefix}/")]
    assert any(c["method"] == "PUT" and "partNumber=" in c["query"] for c in mine)
    assert [c["status"] for c in mine if c["method"] == "DELETE" and "uploadId=" in c["query"]] == [204]
    assert keys_under(aws, prefix) == []
    assert not [k for k in s3.proxy.pending_uploads(BUCKET) if k.startswith(prefix + "/")]


def test_restore_in_sessions_reads_the_artifact_once_per_session(cli, pg, s3, prefix, s3env, newdb):
    repo = f"s3://{BUCKET}/{prefix}"
    m = json.loads(cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"), "--json",
                       env=s3env, check=True).stdout)
    artifact = f"/{BUCKET}/{prefix}/{m['path']}"
    target = newdb("s3par")
    r = cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target), "--jobs", "2", "--verbose",
            env=s3env, check=True)
    assert "in 2 sessions" in r.stderr, r.stderr
    assert pg.row_counts(target) == pg.row_counts("mev_protection")
    # The start (table of contents, pre-data), then one whole read per session.
    gets = [c["status"] for c in s3.proxy.calls("GET") if c["path"] == artifact]
    assert len(gets) == 3, gets


def test_restore_survives_a_connection_dropped_mid_download(cli, pg, s3, prefix, s3env, newdb):
    repo = f"s3://{BUCKET}/{prefix}"
    m = json.loads(cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"), "--json",
                       env=s3env, check=True).stdout)
    artifact = f"/{BUCKET}/{prefix}/{m['path']}"
    s3.proxy.faults = [Fault(lambda meth, p, q: meth == "GET" and p == artifact, "drop-response")]
    target = newdb("s3drop")
    # One stream: the resumed download is the only read of the artifact.
    cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target), "--jobs", "1", env=s3env, check=True)
    assert pg.row_counts(target) == pg.row_counts("mev_protection")
    gets = [c["status"] for c in s3.proxy.calls("GET") if c["path"] == artifact]
    assert gets == ["dropped-response", 206]


def test_lost_answer_to_a_completion_is_not_a_failure(cli, pg, s3, prefix, s3env, aws, blobdb):
    # The server completes the upload but the answer is lost; the retry finds no upload,
    # and the object (absent before) is there with exactly the bytes sent.
    s3.proxy.faults = [Fault(_is_complete, "drop-response")]
    r = cli("backup", "postgres", "--repo", f"s3://{BUCKET}/{prefix}", "--dbname", pg.conninfo(blobdb),
            "--part-size", "5", "--json", env=s3env, check=True)
    m = json.loads(r.stdout)
    completes = [c["status"] for c in s3.proxy.calls("POST", "uploadId=") if c["path"].startswith(f"/{BUCKET}/{prefix}/")]
    assert completes[0] == "dropped-response" and len(completes) == 2
    data = aws("s3", "cp", f"s3://{BUCKET}/{prefix}/{m['path']}", "-").stdout
    assert hashlib.sha256(data).hexdigest() == m["sha256"]


def test_tls_verification_off_is_warned_and_unreachable_endpoint_is_clear(cli, s3env):
    from s3server import free_port
    port = free_port()  # nothing listens there
    env = dict(s3env, AWS_MAX_ATTEMPTS="2")
    r = cli("list", "--repo", f"s3://{BUCKET}/x", "--endpoint-url", f"https://127.0.0.1:{port}", "--no-verify-tls",
            env=env)
    assert r.returncode == 1
    assert "warning: TLS certificate verification is OFF" in r.stderr, r.stderr
    assert f"127.0.0.1:{port}" in r.stderr and "after 2 attempts" in r.stderr, r.stderr
    assert SECRET not in r.stderr
    r = cli("list", "--repo", f"s3://{BUCKET}/x", "--endpoint-url", f"https://127.0.0.1:{port}", env=env)
    assert r.returncode == 1 and "warning" not in r.stderr


def test_prune_verify_and_check_on_an_s3_repository(cli, pg, s3, prefix, s3env, aws):
    repo = f"s3://{BUCKET}/{prefix}"
    ids = []
    for _ in range(2):
        r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"), "--json",
                env=s3env, check=True)
        ids.append(json.loads(r.stdout)["id"])
    # verify re-reads from S3 and records the outcome beside the backup, in the bucket.
    r = cli("verify", "--repo", repo, "--backup", "all", env=s3env, check=True)
    assert f"ok {ids[0]}" in r.stdout and f"ok {ids[1]}" in r.stdout
    assert sum(k.endswith(".verify.json") for k in keys_under(aws, prefix)) == 2
    assert cli("check", "--repo", repo, "--max-age", "1h", env=s3env).returncode == 0
    # prune deletes the older backup (artifact, record, manifest) and keeps the newest.
    before = len(s3.proxy.calls("POST", "delete"))
    r = cli("prune", "--repo", repo, "--keep-last", "1", env=s3env, check=True)
    assert f"delete {ids[0]}" in r.stdout
    # Two DeleteObjects batches: artifacts and records first, manifests last.
    deletes = s3.proxy.calls("POST", "delete")[before:]
    assert len(deletes) == 2 and all(c["status"] == 200 for c in deletes)
    left = keys_under(aws, prefix)
    assert not any(f"/{ids[0]}." in k for k in left)
    assert sum(f"/{ids[1]}." in k for k in left) == 3


def _config_dir(tmp_path):
    src = tmp_path / "etc"
    src.mkdir(exist_ok=True)
    (src / "app.conf").write_text("listen = 127.0.0.1\n")
    return src


def _frozen_backup(tools, env, repo, src, at):
    """`mevbackup backup files` with its wall clock frozen at `at` (UTC): runs started
    together name their backups in that same second. Monotonic time stays real."""
    e = dict(env, TZ="UTC", FAKETIME_DONT_FAKE_MONOTONIC="1")
    e["ASAN_OPTIONS"] = ":".join(o for o in (e.get("ASAN_OPTIONS", ""), "verify_asan_link_order=0") if o)
    return subprocess.Popen(["faketime", "-m", "-f", at, tools["cli"], "backup", "files", "--repo", repo,
                             "--base", str(src), "--json", "app.conf"],
                            env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_same_second_backups_on_a_server_ignoring_if_none_match_all_succeed_and_verify(
        cli, tools, pg, s3, prefix, s3env, aws, tmp_path):
    """s3rver ignores If-None-Match: two runs that pick one name both overwrite it. Each
    run claims its name first, so every pair gets two names, and each reported backup is
    there and verifies."""
    repo = f"s3://{BUCKET}/{prefix}"
    src = _config_dir(tmp_path)
    env = dict(pg.env(), **s3env)
    ids = []
    for _ in range(6):
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        runs = [_frozen_backup(tools, env, repo, src, at) for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in runs]
        for p, (out, err) in zip(runs, outs):
            assert p.returncode == 0, err
        pair = [json.loads(out)["id"] for out, _ in outs]
        stamp = at.replace("-", "").replace(":", "").replace(" ", "_")
        assert all(i == f"config_{stamp}" or i.startswith(f"config_{stamp}_") for i in pair), pair
        assert len(set(pair)) == 2, pair
        ids += pair
    assert len(set(ids)) == len(ids)
    r = cli("verify", "--repo", repo, "--backup", "all", "--no-record", env=s3env)
    assert r.returncode == 0, r.stdout + r.stderr
    for i in ids:
        assert f"ok {i}" in r.stdout
    left = keys_under(aws, prefix)
    assert len(left) == 3 * len(ids) and not [k for k in left if ".claim-" in k], left


def test_an_object_replaced_by_another_writer_is_not_deleted(cli, s3, prefix, s3env, aws, tmp_path):
    """The check after an upload finds another upload's mark on the object (a second
    writer replaced it on a server that ignores If-None-Match): the run fails and leaves
    the object alone instead of deleting what may be the other run's committed backup."""
    repo = f"s3://{BUCKET}/{prefix}"
    src = _config_dir(tmp_path)

    def stored_head(m, p, q):
        if m != "HEAD" or not p.endswith(".tar.gz"):
            return False
        prev = [c for c in s3.proxy.requests if c["path"] == p]
        return bool(prev) and (prev[-1]["method"], prev[-1]["status"]) == ("PUT", 200)

    s3.proxy.faults = [Fault(stored_head, "foreign-head")]
    r = cli("backup", "files", "--repo", repo, "--base", src, "app.conf", env=s3env)
    assert s3.proxy.faults[0].hits == 1
    assert r.returncode != 0
    assert "written by another upload" in r.stderr and "left alone" in r.stderr, r.stderr
    artifact = [k for k in keys_under(aws, prefix) if k.endswith(".tar.gz")]
    assert len(artifact) == 1
    assert not [c for c in s3.proxy.calls("DELETE") if c["path"] == f"/{BUCKET}/{artifact[0]}"]


def test_storage_class_applies_to_artifacts_only(cli, pg, s3, prefix, s3env, aws, blobdb):
    """--storage-class is for the artifact (its CreateMultipartUpload or PUT); manifests,
    verification records and lock objects stay STANDARD, instantly readable."""
    repo = f"s3://{BUCKET}/{prefix}"
    seen = len(s3.proxy.calls())
    r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo(blobdb), "--storage-class", "STANDARD_IA",
            "--part-size", "5", "--json", env=s3env, check=True)
    small = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"), "--storage-class",
                "STANDARD_IA", "--json", env=s3env, check=True)
    cli("verify", "--repo", repo, "--backup", "all", "--storage-class", "STANDARD_IA", env=s3env, check=True)
    calls = [c for c in s3.proxy.calls()[seen:] if c["path"].startswith(f"/{BUCKET}/{prefix}/")]
    artifacts = {f"/{BUCKET}/{prefix}/{json.loads(x.stdout)['path']}" for x in (r, small)}
    creates = [c for c in calls if c["method"] == "POST" and c["query"] in ("uploads", "uploads=")]
    puts = [c for c in calls if c["method"] == "PUT" and "partNumber=" not in c["query"]]
    assert [c["path"] for c in creates] == [f"/{BUCKET}/{prefix}/{json.loads(r.stdout)['path']}"]
    assert all(c["storage_class"] == "STANDARD_IA" for c in creates)
    art_puts = [c for c in puts if c["path"] in artifacts]
    assert len(art_puts) == 1 and art_puts[0]["storage_class"] == "STANDARD_IA"
    others = [c for c in puts if c["path"] not in artifacts]
    kinds = {k: [c for c in others if k in c["path"]] for k in (".manifest.json", ".verify.json", "/locks/")}
    assert all(kinds.values()), kinds
    assert all(c["storage_class"] is None for c in others), others
    for p in artifacts:
        head = json.loads(aws("s3api", "head-object", "--bucket", BUCKET, "--key", p.split("/", 2)[2]).stdout)
        assert head["StorageClass"] == "STANDARD_IA"
        head = json.loads(aws("s3api", "head-object", "--bucket", BUCKET, "--key",
                              p.split("/", 2)[2] + ".manifest.json").stdout)
        assert head.get("StorageClass", "STANDARD") == "STANDARD"


def test_a_folder_marker_does_not_stop_prune(cli, pg, s3, prefix, s3env, aws):
    """A console's folder marker ("config/", an empty object) is no backup key: listings
    skip it with a warning, and prune goes on."""
    repo = f"s3://{BUCKET}/{prefix}"
    aws("s3api", "put-object", "--bucket", BUCKET, "--key", f"{prefix}/config/")
    ids = [json.loads(cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"), "--json",
                          env=s3env, check=True).stdout)["id"] for _ in range(2)]
    r = cli("prune", "--repo", repo, "--keep-last", "1", "--grace", "0", env=s3env)
    assert r.returncode == 0, r.stderr
    assert f"delete {ids[0]}" in r.stdout
    assert f'ignoring the object "config/"' in r.stderr, r.stderr
    left = keys_under(aws, prefix)
    assert f"{prefix}/config/" in left and not any(f"/{ids[0]}." in k for k in left)


def test_an_oversized_listing_answer_is_refused(cli, s3, prefix, s3env):
    """A listing answer is XML of a few MiB at most: one of 17 MiB fails the request with a
    clear error instead of being taken into memory whatever its size."""
    repo = f"s3://{BUCKET}/{prefix}"
    s3.proxy.faults = [Fault(lambda m, p, q: m == "GET" and q.get("list-type") == "2", "huge-xml")]
    r = cli("list", "--repo", repo, env=s3env)
    assert s3.proxy.faults[0].hits == 1
    assert r.returncode != 0
    assert "answer is larger than 16777216 bytes" in r.stderr, r.stderr


def test_a_ranged_get_answered_with_the_whole_object_is_cut_at_the_range(cli, pg, s3, prefix, s3env, blobdb):
    """A server that ignores Range sends the whole object: the read takes no more than the
    range it asked for (8 MiB) and fails clearly, instead of holding the whole object."""
    repo = f"s3://{BUCKET}/{prefix}"
    m = json.loads(cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo(blobdb), "--part-size", "5",
                       "--json", env=s3env, check=True).stdout)
    assert m["size"] > 8 * 1024 * 1024
    s3.proxy.faults = [Fault(lambda meth, p, q: meth == "GET" and p.endswith(m["path"]), "ignore-range")]
    r = cli("verify", "--repo", repo, "--backup", m["id"], "--no-record", env=s3env)
    assert s3.proxy.faults[0].hits == 1
    assert r.returncode != 0
    assert "answer is larger than 8388608 bytes" in r.stdout + r.stderr, r.stdout + r.stderr


def test_the_test_server_survives_puts_and_deletes_racing_in_one_directory(s3):
    """The harness itself: unpatched, s3rver dies when a DELETE empties a directory while a
    PUT opens a file in it (tests/s3/keep-directories.js), which once failed every test
    after two concurrent backups. Four writers race in one directory; the server lives."""
    import http.client
    errors = []

    def writer(name):
        conn = http.client.HTTPConnection("127.0.0.1", s3.server.port, timeout=30)
        try:
            for _ in range(150):
                for method, body in (("PUT", b"x" * 64), ("DELETE", None)):
                    conn.request(method, f"/{BUCKET}/race/dir/{name}", body=body)
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status not in (200, 204):
                        errors.append(f"{method} {name}: {resp.status}")
        except OSError as e:
            errors.append(f"{name}: {e!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s3.server.proc.poll() is None and not errors, errors[:3]
