"""The Python bindings: a round trip, errors as exceptions, progress and cancellation."""

import os
import threading

import pytest

import mevbackup


def test_version():
    assert mevbackup.__version__ == mevbackup.library_version()
    assert mevbackup.__version__.count(".") == 2


def test_round_trip(pgenv, repo, newdb):
    pg = pgenv
    seen = []
    with mevbackup.Repository(repo) as r:
        b = r.backup_postgres(pg.conninfo("mev_protection"), progress=seen.append)
        assert isinstance(b, mevbackup.Backup)
        assert b.kind == "postgres" and b.path.startswith("database/mev_protection_")
        assert b.size == (repo / b.path).stat().st_size
        assert seen and seen[-1].done and seen[-1].bytes_out == b.size
        assert [x.id for x in r.list()] == [b.id]
        assert r.find("latest").id == b.id
        target = newdb("py")
        r.restore_postgres("latest", dbname=pg.conninfo(target))
        assert pg.row_counts(target) == pg.row_counts("mev_protection")
        with pytest.raises(mevbackup.NotEmpty) as e:
            r.restore_postgres(b, dbname=pg.conninfo(target))
        assert "not empty" in str(e.value)
        r.restore_postgres(b, dbname=pg.conninfo(target), clean=True)


def test_errors_are_exceptions_with_codes(pgenv, repo):
    pg = pgenv
    with mevbackup.Repository(repo) as r:
        with pytest.raises(mevbackup.NotFound) as e:
            r.backup_postgres(pg.conninfo("nope_db"))
        assert 'database "nope_db" does not exist' in e.value.message
        assert e.value.code == 5
        with pytest.raises(mevbackup.ConnectionFailed) as e:
            r.backup_postgres("host=127.0.0.1 port=1 dbname=x connect_timeout=3")
        assert e.value.retriable
        with pytest.raises(mevbackup.InvalidArgument):
            r.backup_postgres(pg.conninfo("mev_protection"), compression="lz4")
        with pytest.raises(mevbackup.NotFound):
            r.find("latest")
        with pytest.raises(mevbackup.Error):
            r.restore_postgres("nope", dbname=pg.conninfo("x"))
    with pytest.raises(mevbackup.Unsupported):
        mevbackup.Repository("gopher://x/y")


def test_wrong_password_is_authentication_error(pg, repo, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "not-the-password")
    with mevbackup.Repository(repo) as r:
        with pytest.raises(mevbackup.AuthenticationFailed) as e:
            r.backup_postgres(pg.conninfo("mev_protection"))
    assert "not-the-password" not in str(e.value)


def test_exception_in_progress_callback_cancels_and_is_reraised(pgenv, repo, tmp_path, bigdb):
    from test_cli_postgres import _slow_pg_dump
    fake = _slow_pg_dump(tmp_path, pgenv)

    class Stop(Exception):
        pass

    def progress(p):
        if p.bytes_in > 0:
            raise Stop("enough")

    with mevbackup.Repository(repo) as r:
        with pytest.raises(Stop):
            r.backup_postgres(pgenv.conninfo(bigdb), pg_dump=str(fake), progress=progress)
        assert r.list() == []
    leftovers = [p for p in repo.rglob("*") if p.is_file()] if repo.exists() else []
    assert leftovers == []


def test_cancel_from_another_thread(pgenv, repo, tmp_path, bigdb):
    from test_cli_postgres import _slow_pg_dump
    fake = _slow_pg_dump(tmp_path, pgenv)
    with mevbackup.Repository(repo) as r:
        timer = threading.Timer(0.5, r.cancel)
        timer.start()
        with pytest.raises(mevbackup.Cancelled):
            r.backup_postgres(pgenv.conninfo(bigdb), pg_dump=str(fake))
        timer.join()
        assert r.list() == []


def test_log_callback_receives_messages(pgenv, repo):
    lines = []
    with mevbackup.Repository(repo, log=lambda level, msg: lines.append((level, msg))) as r:
        r.backup_postgres(pgenv.conninfo("mev_protection"))
    assert any("dumping database" in m for _, m in lines)
    assert all(pgenv.password not in m for _, m in lines)
