"""The services' own sources and sinks (pg_dump, pg_restore, Redis RDB, tar, extract) in
pipelines of one's own, through the Python bindings and the C API under them: what arrives
is what was there (rows, keys, bytes), and a run that fails leaves the target as it was."""
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from redisserver import RedisServer, same_data  # noqa: E402

import mevbackup  # noqa: E402
from mevbackup import Filter, Sink, Source, Storage, pipeline_run  # noqa: E402

REDIS_PASSWORD = "endpoint-Redis-pw"


def staging_databases(pg):
    return pg.psql("SELECT datname FROM pg_database WHERE datname LIKE '%mevb\\_restore\\_%' ORDER BY 1")


def dump_into_storage(pg, storage, key):
    """pg_dump source -> zstd -> storage object `key`."""
    pipeline_run(Source.pg_dump(pg.conninfo("mev_protection")), [Filter.compressor("zstd")], storage.put(key))


def test_pg_dump_through_storage_restores_into_a_new_database(pgenv, tmp_path, newdb):
    pg = pgenv
    storage = Storage(tmp_path / "store")
    dump_into_storage(pg, storage, "dumps/mev.dump.zst")
    assert storage.stat("dumps/mev.dump.zst").size > 0
    target = newdb("endpoint")
    pipeline_run(storage.get("dumps/mev.dump.zst"), [Filter.decompressor("zstd")],
                 Sink.pg_restore(pg.conninfo(target)))
    assert pg.row_counts(target) == pg.row_counts("mev_protection")
    assert pg.psql("SELECT md5(string_agg(tx_hash || details::text, ',' ORDER BY id)) FROM mev_threats", target) == \
        pg.psql("SELECT md5(string_agg(tx_hash || details::text, ',' ORDER BY id)) FROM mev_threats", "mev_protection")
    assert staging_databases(pg) == ""


@pytest.fixture
def occupied(pgenv, newdb):
    """A target database that already holds rows, and the state to find it in afterwards."""
    pg = pgenv
    name = newdb("occupied")
    pg.psql(f'CREATE DATABASE "{name}"')
    pg.psql("CREATE TABLE keep_me (id int PRIMARY KEY, note text); "
            "INSERT INTO keep_me SELECT i, 'row ' || i FROM generate_series(1, 37) AS i", name)
    return name


def keep_me(pg, name):
    return pg.psql("SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM keep_me", name)


def test_pg_restore_sink_refuses_an_occupied_target_unless_clean(pgenv, occupied):
    with pytest.raises(mevbackup.NotEmpty) as e:
        Sink.pg_restore(pgenv.conninfo(occupied))
    assert f'target database "{occupied}" is not empty' in str(e.value)
    assert staging_databases(pgenv) == ""


def test_pg_restore_sink_source_failing_midway_leaves_the_target(pgenv, occupied, tmp_path):
    pg = pgenv
    before = keep_me(pg, occupied)
    storage = Storage(tmp_path / "store")
    dump_into_storage(pg, storage, "mev.dump.zst")
    sent = []

    def half_then_fail():
        data = bytearray()
        with open(tmp_path / "store" / "mev.dump.zst", "rb") as f:
            data.extend(f.read())
        yield bytes(data[: len(data) // 2])
        sent.append(len(data) // 2)
        raise RuntimeError("the network went away")

    sink = Sink.pg_restore(pg.conninfo(occupied), clean=True)
    assert staging_databases(pg) != ""  # the staging database exists while the sink does
    with pytest.raises(RuntimeError, match="the network went away"):
        pipeline_run(Source.from_iterable(half_then_fail()), [Filter.decompressor("zstd")], sink)
    assert sent, "the source never got to fail"
    assert keep_me(pg, occupied) == before
    assert staging_databases(pg) == ""


def test_pg_restore_sink_corrupt_stream_leaves_the_target(pgenv, occupied, tmp_path):
    pg = pgenv
    before = keep_me(pg, occupied)
    storage = Storage(tmp_path / "store")
    dump_into_storage(pg, storage, "mev.dump.zst")
    data = bytearray((tmp_path / "store" / "mev.dump.zst").read_bytes())
    data[len(data) // 2] ^= 0x5A
    with pytest.raises(mevbackup.Corrupt) as e:
        pipeline_run(Source.from_iterable([bytes(data)]), [Filter.decompressor("zstd")],
                     Sink.pg_restore(pg.conninfo(occupied), clean=True))
    assert "zstd decompressor" in str(e.value)
    assert keep_me(pg, occupied) == before
    assert staging_databases(pg) == ""


def test_pg_restore_sink_names_itself_when_pg_restore_fails(pgenv, occupied):
    pg = pgenv
    before = keep_me(pg, occupied)
    with pytest.raises(mevbackup.RestoreFailed) as e:
        pipeline_run(Source.from_iterable([b"not a dump at all" * 100]), [],
                     Sink.pg_restore(pg.conninfo(occupied), clean=True))
    assert f"sink (pg_restore into {occupied})" in str(e.value)
    assert keep_me(pg, occupied) == before
    assert staging_databases(pg) == ""


def test_pg_restore_sink_freed_unused_drops_its_staging_database(pgenv, occupied):
    sink = Sink.pg_restore(pgenv.conninfo(occupied), clean=True)
    assert staging_databases(pgenv) != ""
    sink.close()
    assert staging_databases(pgenv) == ""
    assert keep_me(pgenv, occupied).startswith("37|")


def test_pg_restore_sink_replaces_an_occupied_target_with_clean(pgenv, occupied):
    pg = pgenv
    pipeline_run(Source.pg_dump(pg.conninfo("mev_protection")), [], Sink.pg_restore(pg.conninfo(occupied), clean=True))
    assert pg.row_counts(occupied) == pg.row_counts("mev_protection")
    assert pg.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'keep_me'", occupied) == "0"


def test_pg_endpoints_never_show_a_password_of_the_conninfo(pg, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    wrong = "Wrong-pg-Pass-481"
    for make in (lambda: Source.pg_dump(pg.conninfo("mev_protection", password=wrong)),
                 lambda: Sink.pg_restore(pg.conninfo("mev_protection", password=wrong), clean=True)):
        with pytest.raises(mevbackup.AuthenticationFailed) as e:
            make()
        assert wrong not in str(e.value) and pg.password not in str(e.value)


def test_pg_dump_source_failure_names_the_database(pgenv):
    with pytest.raises(mevbackup.Error) as e:
        Source.pg_dump(pgenv.conninfo("no_such_db_here"))
    assert "no_such_db_here" in str(e.value)


# ---- Redis -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rds():
    with RedisServer(password=REDIS_PASSWORD) as server:
        server.fill_sample()
        yield server


@pytest.mark.parametrize("mode", ["bgsave", "replication"])
def test_redis_rdb_source_into_offline_sink_loads_in_a_server(rds, tmp_path, mode):
    target = RedisServer()
    try:
        pipeline_run(Source.redis_rdb(rds.url(), password=REDIS_PASSWORD, mode=mode), [],
                     Sink.redis_offline(target.dir))
        rdb = Path(target.dir) / "dump.rdb"
        assert sorted(os.listdir(target.dir)) == ["dump.rdb"]
        r = subprocess.run(["redis-check-rdb", str(rdb)], capture_output=True, text=True)
        assert r.returncode == 0 and "RDB looks OK" in r.stdout, r.stdout + r.stderr
        target.start()
        same_data(rds.snapshot(), target.snapshot())
    finally:
        target.stop()


def test_redis_offline_sink_refuses_a_damaged_rdb_and_keeps_the_old_file(rds, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "dump.rdb").write_bytes(b"the old file")
    rdb = bytearray()
    pipeline_run(Source.redis_rdb(rds.url(), password=REDIS_PASSWORD, mode="replication"), [],
                 Sink.to_callback(rdb.extend))
    # One letter of a key name: the RDB still parses, only its CRC-64 tells.
    at = rdb.index(b"db1:7")
    rdb[at + 2] ^= 0x01
    with pytest.raises(mevbackup.Corrupt) as e:
        pipeline_run(Source.from_iterable([bytes(rdb)]), [], Sink.redis_offline(data_dir))
    assert f"sink (redis RDB into {data_dir}/dump.rdb)" in str(e.value)
    assert sorted(os.listdir(data_dir)) == ["dump.rdb"]
    assert (data_dir / "dump.rdb").read_bytes() == b"the old file"


def test_redis_live_sink_restores_the_keys_into_a_running_server(rds):
    with RedisServer(password="target-pw") as target:
        pipeline_run(Source.redis_rdb(rds.url(), password=REDIS_PASSWORD, mode="replication"), [],
                     Sink.redis_live(target.url(), password="target-pw"))
        same_data(rds.snapshot(), target.snapshot())


def test_redis_live_sink_refuses_a_target_holding_keys_unless_replace(rds):
    with RedisServer() as target:
        target.cli("SET", "str:1", "the target's own")
        target.cli("SET", "only-here", "stays")
        with pytest.raises(mevbackup.NotEmpty) as e:
            Sink.redis_live(target.url())
        assert "already holds 2 keys" in str(e.value)
        assert target.cli("GET", "str:1").strip() == "the target's own"
        pipeline_run(Source.redis_rdb(rds.url(), password=REDIS_PASSWORD, mode="replication"), [],
                     Sink.redis_live(target.url(), replace=True))
        assert target.cli("GET", "str:1").strip() == rds.cli("GET", "str:1").strip()
        assert target.cli("GET", "only-here").strip() == "stays"


def test_redis_rdb_source_wrong_password_never_shows_it(rds):
    with pytest.raises(mevbackup.AuthenticationFailed) as e:
        Source.redis_rdb(rds.url(), password="wrong-Pass-123", mode="replication")
    assert "wrong-Pass-123" not in str(e.value) and REDIS_PASSWORD not in str(e.value)


def test_redis_endpoints_never_show_a_password_of_the_url(rds):
    url = rds.url().replace("redis://", "redis://:Wrong-url-Pass-77@")
    for make in (lambda: Source.redis_rdb(url, mode="replication"), lambda: Sink.redis_live(url)):
        with pytest.raises(mevbackup.AuthenticationFailed) as e:
            make()
        assert "Wrong-url-Pass-77" not in str(e.value)


# ---- files -----------------------------------------------------------------------------


def tree(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode & 0o777)
            else:
                out[rel] = ("file", st.st_mode & 0o777, p.read_bytes())
    return out


def test_files_tar_source_into_extract_sink_gives_the_same_tree(tmp_path):
    base = tmp_path / "base"
    (base / "etc" / "app" / "conf.d").mkdir(parents=True)
    (base / "etc" / "app" / "main.conf").write_text("port = 8080\n")
    (base / "etc" / "app" / "conf.d" / "extra.conf").write_bytes(bytes(range(256)) * 40)
    (base / "etc" / "app" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (base / "etc" / "app" / "run.sh").chmod(0o750)
    (base / "etc" / "app" / "current").symlink_to("main.conf")
    target = tmp_path / "restored"
    pipeline_run(Source.files_tar(["etc"], base_dir=base), [Filter.compressor("gzip"), Filter.decompressor("gzip")],
                 Sink.extract(target))
    assert tree(target) == tree(base)


def test_extract_sink_refuses_a_hostile_tar_and_writes_nothing_outside(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in (("good.txt", b"fine\n"), ("../evil.txt", b"owned\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    target = tmp_path / "inside" / "target"
    target.parent.mkdir()
    with pytest.raises(mevbackup.RestoreFailed) as e:
        pipeline_run(Source.from_iterable([buf.getvalue()]), [], Sink.extract(target))
    assert "../evil.txt" in str(e.value)
    assert not (tmp_path / "inside" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert os.listdir(tmp_path / "inside") == []  # no target, no staging directory left
