"""Redis backup and offline restore against real redis-server instances on 127.0.0.1,
through the CLI and the Python bindings."""

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
from redisserver import FakeMaster, RedisServer, free_port, same_data  # noqa: E402
import rdb_seeds  # noqa: E402  (the hand-built RDBs, byte by byte)

import mevbackup  # noqa: E402

PASSWORD = "s3cret-Redis-pw"


@pytest.fixture(scope="module")
def rds():
    with RedisServer(password=PASSWORD, acl_user="backup") as server:
        server.fill_sample()
        yield server


@pytest.fixture
def rcli(tools):
    def run(*args, env=None):
        return subprocess.run([tools["cli"], *map(str, args)], capture_output=True, text=True,
                              env=env if env is not None else dict(os.environ), timeout=300)
    return run


def artifacts(repo):
    d = Path(repo) / "redis"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def check_rdb(repo, manifest, tmp_path):
    raw = tmp_path / "check.rdb"
    raw.write_bytes(gzip.decompress((Path(repo) / manifest["path"]).read_bytes()))
    r = subprocess.run(["redis-check-rdb", str(raw)], capture_output=True, text=True)
    assert r.returncode == 0 and "RDB looks OK" in r.stdout, r.stdout + r.stderr
    assert raw.read_bytes()[:9] == b"REDIS%04d" % manifest["source"]["rdb_version"]


@pytest.mark.parametrize("mode,diskless", [("bgsave", True), ("replication", True), ("replication", False),
                                           ("auto", True)])
def test_backup_modes_make_valid_rdbs(rds, rcli, repo, tmp_path, mode, diskless):
    rds.cli("CONFIG", "SET", "repl-diskless-sync", "yes" if diskless else "no")
    r = rcli("backup", "redis", "--repo", repo, "--redis-url", rds.url(), "--mode", mode, "--json", "--verbose",
             env=rds.env())
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    if mode == "replication":  # both framings of the sync were met
        assert ("receiving a diskless RDB stream" in r.stderr) == diskless, r.stderr
    assert m["kind"] == "redis" and m["path"].startswith("redis/redis_") and m["path"].endswith(".rdb.gz")
    assert m["source"]["mode"] == ("bgsave" if mode == "auto" else mode)
    assert m["source"]["redis_version"] == rds.cli("INFO", "server").split("redis_version:")[1].split()[0]
    assert m["source"]["keyspace"]["0"]["keys"] == rds.dbsizes()[0]
    assert m["source"]["keyspace"]["1"]["keys"] == 30
    assert (Path(repo) / (m["path"] + ".manifest.json")).exists()
    rdb = m["source"]["rdb"]  # what the RDB reader counted in the stream itself
    assert rdb["verified"] and rdb["checksum_verified"]
    assert rdb["keys"] == {str(db): n for db, n in rds.dbsizes().items()}
    assert rdb["expires"] == {"0": 40}
    assert set(rdb["types"]) == {"string", "hash", "list", "set", "zset", "stream"}
    assert rdb["key_sample"]["size"] == sum(rds.dbsizes().values()) and len(rdb["key_sample"]["sha256"]) == 64
    check_rdb(repo, m, tmp_path)
    assert PASSWORD not in r.stdout + r.stderr


def test_an_rdb_path_here_that_the_server_did_not_write_is_not_backed_up(rcli, repo, tmp_path):
    """The container case: the server's dir, as it sees it, is another directory than the
    path of that name here (a private tmpfs over it, in its own mount namespace). What lies
    here is an old file: auto must not take it for the server's RDB, and bgsave refuses."""
    wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs tmpfs "$MEVB_HIDE" && exec "$@"', "sh"]
    server = RedisServer(wrap=wrap)
    stale = Path(server.dir) / "dump.rdb"
    stale.write_bytes(b"REDIS0011 an old file, not what the server saves")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    os.environ["MEVB_HIDE"] = server.dir
    try:
        with server:
            server.cli("SET", "k", "v")
            r = rcli("backup", "redis", "--repo", repo, "--redis-url", server.url(), "--mode", "bgsave")
            assert r.returncode == 1 and "not that server's RDB" in r.stderr and "replication" in r.stderr, r.stderr
            r = rcli("backup", "redis", "--repo", repo, "--redis-url", server.url(), "--json", "--verbose")
            assert r.returncode == 0, r.stderr
            m = json.loads(r.stdout)
            assert m["source"]["mode"] == "replication" and m["source"]["rdb"]["keys"] == {"0": 1}, r.stderr
            assert stale.read_bytes().startswith(b"REDIS0011 an old file")  # the server never saw it
    finally:
        del os.environ["MEVB_HIDE"]


def test_replication_mode_says_it_waits_for_the_servers_sync_delay(rds, rcli, repo):
    rds.cli("CONFIG", "SET", "repl-diskless-sync", "yes")
    rds.cli("CONFIG", "SET", "repl-diskless-sync-delay", "1")
    try:
        r = rcli("backup", "redis", "--repo", repo, "--redis-url", rds.url(), "--mode", "replication",
                 env=rds.env())
        assert r.returncode == 0, r.stderr
        assert "repl-diskless-sync-delay (1 s)" in r.stderr, r.stderr
        # Without the delay (or with a disk-based sync) there is nothing to say.
        rds.cli("CONFIG", "SET", "repl-diskless-sync-delay", "0")
        r = rcli("backup", "redis", "--repo", repo, "--redis-url", rds.url(), "--mode", "replication",
                 env=rds.env())
        assert r.returncode == 0 and "repl-diskless-sync-delay" not in r.stderr, r.stderr
    finally:
        rds.cli("CONFIG", "SET", "repl-diskless-sync-delay", "0")


def test_offline_restore_reproduces_every_key(rds, rcli, repo, tmp_path):
    r = rcli("backup", "redis", "--repo", repo, "--redis-url", rds.url(), "--mode", "replication", env=rds.env())
    assert r.returncode == 0, r.stderr
    target = RedisServer()
    try:
        marker = tmp_path / "hooks.log"
        r = rcli("restore", "redis", "--repo", repo, "--backup", "latest", "--data-dir", target.dir,
                 "--before", f"sh -c 'echo before >> {marker}'", "--after", f"sh -c 'echo after >> {marker}'")
        assert r.returncode == 0, r.stderr
        assert marker.read_text().split() == ["before", "after"]
        assert sorted(os.listdir(target.dir)) == ["dump.rdb"]  # no temporary file left
        target.start()
        assert target.dbsizes() == rds.dbsizes()
        same_data(rds.snapshot(), target.snapshot())
    finally:
        target.stop()


def test_python_round_trip_with_acl_user(rds, repo, tmp_path):
    with mevbackup.Repository(repo) as r:
        b = r.backup_redis(rds.url(user="backup"), password=rds.acl_password, mode="bgsave", prefix="cache")
        assert b.kind == "redis" and b.path.startswith("redis/cache_")
        assert r.find("latest", kind="redis").id == b.id
        target = RedisServer()
        try:
            r.restore_redis(b, data_dir=target.dir)
            target.start()
            same_data(rds.snapshot(), target.snapshot())
        finally:
            target.stop()
        with pytest.raises(mevbackup.InvalidArgument):
            r.restore_redis(b, redis_url=rds.url(), data_dir=str(tmp_path))
        with pytest.raises(mevbackup.InvalidArgument):
            r.backup_redis(rds.url(), mode="rsync")


def test_unreachable_server(rcli, repo):
    r = rcli("backup", "redis", "--repo", repo, "--redis-url", f"redis://127.0.0.1:{free_port()}")
    assert r.returncode == 1
    assert "cannot connect to Redis at redis://127.0.0.1:" in r.stderr
    assert artifacts(repo) == []


def test_wrong_or_missing_password(rds, rcli, repo):
    env = dict(os.environ, MEVBACKUP_REDIS_PASSWORD="not-the-password")
    r = rcli("backup", "redis", "--repo", repo, "--redis-url", rds.url(), env=env)
    assert r.returncode == 1 and "refused the credentials" in r.stderr
    assert "not-the-password" not in r.stderr
    env.pop("MEVBACKUP_REDIS_PASSWORD")
    r = rcli("backup", "redis", "--repo", repo, "--redis-url", rds.url(), env=env)
    assert r.returncode == 1 and "requires a password" in r.stderr
    # A password in the URL works, draws a warning, and never shows up in messages.
    bad = rds.url(with_password=True).replace(PASSWORD, "wrong-pw")
    r = rcli("backup", "redis", "--repo", repo, "--redis-url", bad, env=env)
    assert r.returncode == 1 and "visible to other users" in r.stderr and "wrong-pw" not in r.stderr
    with mevbackup.Repository(repo) as rp:
        with pytest.raises(mevbackup.AuthenticationFailed) as e:
            rp.backup_redis(rds.url(user="backup"), password="nope")
        assert "nope" not in e.value.message and "user backup" in e.value.message
    assert artifacts(repo) == []


def test_bgsave_failure_leaves_no_artifact(rcli, repo):
    with RedisServer() as server:
        server.cli("SET", "k", "v")
        # The save cannot be renamed over a (non-empty) directory, even as root.
        os.makedirs(os.path.join(server.dir, "dump.rdb", "x"))
        r = rcli("backup", "redis", "--repo", repo, "--redis-url", server.url(), "--mode", "bgsave")
        assert r.returncode == 1
        assert "BGSAVE failed" in r.stderr and "rdb_last_bgsave_status:err" in r.stderr
    assert artifacts(repo) == []


def test_cut_replication_stream_leaves_no_artifact(rcli, repo, tools):
    with RedisServer() as server:
        server.pipe([["SET", f"k{i}", "v" * 100] for i in range(400)])
        server.cli("CONFIG", "SET", "rdb-key-save-delay", "20000")  # 20 ms per key: a slow sync
        proc = subprocess.Popen([tools["cli"], "backup", "redis", "--repo", str(repo), "--redis-url", server.url(),
                                 "--mode", "replication"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            # The sync runs once the server forked its saving child for a connected replica.
            while not ("rdb_bgsave_in_progress:1" in server.cli("INFO", "persistence")
                       and "connected_slaves:1" in server.cli("INFO", "replication")):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
            server.cli("CLIENT", "KILL", "TYPE", "replica")
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 1, err
        assert "replication stream from Redis at" in err and "was cut" in err
    assert [a for a in artifacts(repo)] == []


def _backup(rds, repo):
    with mevbackup.Repository(repo) as r:
        return r.backup_redis(rds.url(), password=PASSWORD, mode="replication")


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_damaged_artifact_leaves_target_untouched(rds, rcli, repo, tmp_path, damage):
    b = _backup(rds, repo)
    path = Path(repo) / b.path
    data = bytearray(path.read_bytes())
    if damage == "corrupt":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    ddir = tmp_path / "data"
    ddir.mkdir()
    (ddir / "dump.rdb").write_bytes(b"old contents")
    r = rcli("restore", "redis", "--repo", repo, "--backup", b.id, "--data-dir", ddir, "--before", "touch " + str(tmp_path / "ran"))
    assert r.returncode == 1
    assert any(w in r.stderr for w in ("refusing to restore", "does not match the manifest", "corrupt")), r.stderr
    assert sorted(os.listdir(ddir)) == ["dump.rdb"] and (ddir / "dump.rdb").read_bytes() == b"old contents"
    assert not (tmp_path / "ran").exists()


def test_failing_hook_and_version_check(rds, rcli, repo, tmp_path):
    b = _backup(rds, repo)
    ddir = tmp_path / "data"
    ddir.mkdir()
    r = rcli("restore", "redis", "--repo", repo, "--data-dir", ddir, "--before", "false")
    assert r.returncode == 1 and 'the before hook "false" exited with status 1' in r.stderr
    assert os.listdir(ddir) == []
    r = rcli("restore", "redis", "--repo", repo, "--data-dir", ddir, "--target-rdb-version", "9")
    assert r.returncode == 1 and "loads at most version 9" in r.stderr
    assert os.listdir(ddir) == []
    r = rcli("restore", "redis", "--repo", repo, "--data-dir", ddir, "--redis-url", rds.url())
    assert r.returncode == 2
    assert b.id


def test_live_restore_reproduces_every_key(rds, rcli, repo):
    r = rcli("backup", "redis", "--repo", repo, "--redis-url", rds.url(), env=rds.env())
    assert r.returncode == 0, r.stderr
    with RedisServer(password="target-pw") as target:
        env = dict(os.environ, MEVBACKUP_REDIS_PASSWORD="target-pw")
        r = rcli("restore", "redis", "--repo", repo, "--redis-url", target.url(), "--verbose", env=env)
        assert r.returncode == 0, r.stderr
        assert "target-pw" not in r.stderr
        assert target.dbsizes() == rds.dbsizes()
        same_data(rds.snapshot(), target.snapshot())
        # Now the target is not empty: refused, unless --replace or --flush.
        target.cli("SET", "extra", "1")
        r = rcli("restore", "redis", "--repo", repo, "--redis-url", target.url(), env=env)
        assert r.returncode == 1 and "already holds" in r.stderr and "--replace" in r.stderr
        r = rcli("restore", "redis", "--repo", repo, "--redis-url", target.url(), "--replace", env=env)
        assert r.returncode == 0, r.stderr
        assert target.cli("GET", "extra").strip() == "1"
        r = rcli("restore", "redis", "--repo", repo, "--redis-url", target.url(), "--flush", env=env)
        assert r.returncode == 0, r.stderr
        assert target.cli("EXISTS", "extra").strip() == "0"
        same_data(rds.snapshot(), target.snapshot())


def test_live_restore_skips_expired_keys_and_refuses_damage(repo, tmp_path):
    with RedisServer() as src, RedisServer() as target:
        src.cli("SET", "keep", "v")
        src.cli("SET", "soon", "gone", "PX", "800")
        with mevbackup.Repository(repo) as r:
            b = r.backup_redis(src.url(), mode="replication")
            while src.cli("EXISTS", "soon").strip() != "0":  # wait until the key expired
                time.sleep(0.05)
            r.restore_redis(b, redis_url=target.url())
            assert target.cli("EXISTS", "keep").strip() == "1"
            assert target.cli("EXISTS", "soon").strip() == "0"
            # A damaged artifact is refused before the target is touched, even with flush.
            path = Path(repo) / b.path
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01
            path.write_bytes(bytes(data))
            with pytest.raises(mevbackup.Corrupt):
                r.restore_redis(b, redis_url=target.url(), flush=True)
            assert target.cli("EXISTS", "keep").strip() == "1"


def test_verify_loads_redis_backups_with_the_rdb_reader(rds, repo):
    b = _backup(rds, repo)
    with mevbackup.Repository(repo) as r:
        rep = r.verify(b.id)
        assert rep.status == 0, rep.text
        checks = {c["check"]: c for c in rep.data["results"][0]["checks"]}
        assert checks["rdb"]["ok"] and "CRC-64 checked" in checks["rdb"]["detail"]
    # A manifest whose key counts disagree with the RDB fails verification, naming the backup.
    mpath = Path(repo) / (b.path + ".manifest.json")
    m = json.loads(mpath.read_text())
    db = next(iter(m["source"]["rdb"]["keys"]))
    m["source"]["rdb"]["keys"][db] += 1
    mpath.write_text(json.dumps(m))
    with mevbackup.Repository(repo) as r:
        rep = r.verify(b.id)
        assert rep.status == 1
        assert b.id in rep.text and "FAILED" in rep.text


LIBRARY = ("#!lua name=mevblib\n"
           "redis.register_function('mevbfn', function(keys, args) return 'restored-' .. args[1] end)")


def test_functions_round_trip_live_and_offline(rcli, repo):
    with RedisServer() as src:
        src.cli("FUNCTION", "LOAD", LIBRARY)
        src.cli("SET", "k", "v")
        r = rcli("backup", "redis", "--repo", repo, "--redis-url", src.url(), "--mode", "replication", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["source"]["rdb"]["functions"] == 1
    with RedisServer() as target:
        r = rcli("restore", "redis", "--repo", repo, "--redis-url", target.url())
        assert r.returncode == 0, r.stderr
        assert target.cli("FCALL", "mevbfn", "0", "live").strip() == "restored-live"
        assert target.cli("GET", "k").strip() == "v"
    with RedisServer() as target:  # libraries already there: the keys' rules apply
        target.cli("FUNCTION", "LOAD", LIBRARY.replace("'restored-'", "'old-'"))
        target.cli("FUNCTION", "LOAD", "#!lua name=extra\nredis.register_function('extrafn', function() return 1 end)")
        r = rcli("restore", "redis", "--repo", repo, "--redis-url", target.url())
        assert r.returncode == 1 and "already holds 2 function libraries" in r.stderr, r.stderr
        assert target.cli("FCALL", "mevbfn", "0", "x").strip() == "old-x"
        r = rcli("restore", "redis", "--repo", repo, "--redis-url", target.url(), "--replace")
        assert r.returncode == 0, r.stderr
        assert target.cli("FCALL", "mevbfn", "0", "x").strip() == "restored-x"
        assert target.cli("FCALL", "extrafn", "0").strip() == "1"  # --replace keeps the others
        r = rcli("restore", "redis", "--repo", repo, "--redis-url", target.url(), "--flush")
        assert r.returncode == 0, r.stderr
        assert "extrafn" not in target.cli("FUNCTION", "LIST")
        assert target.cli("FCALL", "mevbfn", "0", "x").strip() == "restored-x"
    target = RedisServer()
    try:
        r = rcli("restore", "redis", "--repo", repo, "--data-dir", target.dir)
        assert r.returncode == 0, r.stderr
        target.start()
        assert target.cli("FCALL", "mevbfn", "0", "offline").strip() == "restored-offline"
    finally:
        target.stop()


def test_live_restore_failing_midway_says_how_many_keys_went_in(repo):
    with RedisServer() as src, RedisServer() as target:
        src.pipe([["SET", f"a{i}", "v"] for i in range(300)] + [["SET", "b0", "v"]])
        target.cli("ACL", "SETUSER", "restorer", "on", ">restorer-pw", "~a*", "+@all")
        with mevbackup.Repository(repo) as r:
            b = r.backup_redis(src.url(), mode="replication")
            with pytest.raises(mevbackup.RestoreFailed) as e:
                r.restore_redis(b, redis_url=target.url(user="restorer"), password="restorer-pw")
        assert 'restoring key "b0" of database 0' in e.value.message, e.value.message
        assert target.dbsizes() == {0: 300}
        assert "300 of the backup's keys went in" in e.value.message
        assert "the target held no keys before, so it holds only those now" in e.value.message
        assert "restorer-pw" not in e.value.message


def test_hostile_master_stream_stops_at_the_first_parse_failure(repo):
    # A master announcing 64 MiB of an RDB that is invalid from byte 10.
    payload = b"REDIS0010" + b"\xf0" * (64 << 20)
    with FakeMaster(payload) as master:
        with mevbackup.Repository(repo) as r, pytest.raises(mevbackup.DumpFailed) as e:
            r.backup_redis(master.url(), mode="replication")
    assert "is not a valid RDB" in e.value.message and "unknown string encoding" in e.value.message, e.value.message
    assert master.sent < (16 << 20), master.sent  # socket buffers at most, not the stream
    assert artifacts(repo) == []


def test_rdb12_of_a_7_4_master_is_read_and_verified(repo):
    seed = rdb_seeds.seeds()["v12_hash_field_expiry"]
    with FakeMaster(seed, version="7.4.1") as master:
        with mevbackup.Repository(repo) as r:
            b = r.backup_redis(master.url(), mode="replication")
    rdb = b.manifest["source"]["rdb"]
    assert b.manifest["source"]["rdb_version"] == 12
    assert rdb["verified"] and rdb["checksum_verified"]
    assert rdb["keys"] == {"0": 5} and rdb["types"] == {"hash": 4, "string": 1} and rdb["functions"] == 1
    with RedisServer() as target, mevbackup.Repository(repo) as r:  # Debian's 7.0 cannot load it
        with pytest.raises(mevbackup.VersionMismatch):
            r.restore_redis(b, redis_url=target.url())
        assert target.dbsizes() == {}


@pytest.mark.parametrize("seed,what", [("bad_ziplist_truncated", "ziplist: zlbytes says"),
                                       ("bad_listpack_backlen", "back-length says 5"),
                                       ("bad_intset_encoding", "intset: encoding 3")])
def test_rdb_with_a_bad_inner_encoding_is_not_backed_up(repo, seed, what):
    with FakeMaster(rdb_seeds.seeds()[seed], version="7.0.15") as master:
        with mevbackup.Repository(repo) as r, pytest.raises(mevbackup.DumpFailed) as e:
            r.backup_redis(master.url(), mode="replication")
    assert what in e.value.message, e.value.message
    assert artifacts(repo) == []


def _module_rdb() -> bytes:
    charset = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    mid = 0
    for c in "mevbmodul":
        mid = (mid << 6) | charset.index(c)
    mid = (mid << 10) | 3
    idlen = b"\x81" + mid.to_bytes(8, "big")
    body = (b"\xfe\x00" + b"\x00" + rdb_seeds.string(b"plain") + rdb_seeds.string(b"v")
            + b"\x07" + rdb_seeds.string(b"m") + idlen + b"\x02\x05\x00")  # a module key: uint 5, EOF
    return rdb_seeds.rdb(10, body)


def test_module_data_is_refused_unless_allowed_and_never_skipped_by_a_live_restore(repo):
    with FakeMaster(_module_rdb(), version="7.0.15") as master:
        with mevbackup.Repository(repo) as r, pytest.raises(mevbackup.DumpFailed) as e:
            r.backup_redis(master.url(), mode="replication")
    assert "module(s) mevbmodul (1 keys, 0 aux records)" in e.value.message, e.value.message
    assert artifacts(repo) == []
    with FakeMaster(_module_rdb(), version="7.0.15") as master, mevbackup.Repository(repo) as r:
        b = r.backup_redis(master.url(), mode="replication", allow_modules=True)
    assert b.manifest["source"]["rdb"]["module_values"] == {"mevbmodul": 1}
    with RedisServer() as target, mevbackup.Repository(repo) as r:  # no such module loaded there
        with pytest.raises(mevbackup.RestoreFailed) as e:
            r.restore_redis(b, redis_url=target.url())
        assert 'restoring key "m"' in e.value.message, e.value.message
        assert target.dbsizes() == {0: 1} and "1 of the backup's keys went in" in e.value.message
