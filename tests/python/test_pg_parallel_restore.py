"""The default logical restore: several sessions, each reading the artifact in its own
streamed pass, no staged copy of the dump. What comes back must be the source exactly:
tables and their rows, sequences, large objects, materialized views, constraints and
indexes, names that need quoting; and a failed pass must leave the target untouched."""

import os
import re
import signal
import subprocess
import time

import pytest


SOURCE = "mev_many"


@pytest.fixture(scope="module")
def many(pg):
    """More tables than sessions, of very different sizes, and every kind of item that
    has a place in the data or post-data section."""
    pg.psql(f'CREATE DATABASE "{SOURCE}"')
    tables = "".join(
        f"CREATE TABLE t{i} (id int PRIMARY KEY, v text NOT NULL);"
        f"INSERT INTO t{i} SELECT g, repeat(md5(g::text), {1 + i % 4}) FROM generate_series(1, {50 + 700 * i}) g;"
        for i in range(9))
    pg.psql(tables + """
        CREATE SCHEMA "Odd Schema";
        CREATE TABLE "Odd Schema"."order items" ("Item Id" bigserial PRIMARY KEY, "qty;" int CHECK ("qty;" > 0),
                                                 note text);
        INSERT INTO "Odd Schema"."order items" ("qty;", note)
            SELECT 1 + g % 7, CASE WHEN g % 5 = 0 THEN NULL ELSE E'tab\\there ' || g END
            FROM generate_series(1, 3000) g;
        CREATE TABLE parent (id int PRIMARY KEY, name text UNIQUE);
        CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent(id) ON DELETE CASCADE,
                            amount numeric(20, 8), at timestamptz, tags text[], doc jsonb);
        INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 500) g;
        INSERT INTO child SELECT g, 1 + g % 500, g / 3.0, '2026-01-01'::timestamptz + g * interval '1 minute',
                                 ARRAY['a', g::text], jsonb_build_object('g', g, 'odd', g % 2 = 1)
            FROM generate_series(1, 20000) g;
        CREATE INDEX child_at ON child (at DESC);
        CREATE SEQUENCE counter START 100 INCREMENT 7;
        SELECT nextval('counter') FROM generate_series(1, 5);
        CREATE TABLE events (id int, at date NOT NULL) PARTITION BY RANGE (at);
        CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        INSERT INTO events SELECT g, '2025-06-01'::date + g FROM generate_series(1, 400) g;
        CREATE TABLE gen (a int, b int GENERATED ALWAYS AS (a * 2) STORED);
        INSERT INTO gen (a) SELECT generate_series(1, 100);
        CREATE TABLE empty_one (x int);
        COMMENT ON TABLE child IS 'child rows; comments come back too';
        COMMENT ON COLUMN "Odd Schema"."order items"."qty;" IS 'a column comment';
        CREATE MATERIALIZED VIEW child_totals AS SELECT parent_id, sum(amount) AS total FROM child GROUP BY 1;
        CREATE UNIQUE INDEX ON child_totals (parent_id);
        CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.v := NEW.v; RETURN NEW; END$$;
        CREATE TRIGGER t0_touch BEFORE INSERT ON t0 FOR EACH ROW EXECUTE FUNCTION touch();
        SELECT lo_from_bytea(424242, convert_to(repeat('large object ', 1000), 'UTF8'));
        SELECT lo_from_bytea(424243, '\\x00ff00ff'::bytea);
        ANALYZE;
    """, SOURCE)
    return SOURCE


def dump(pg, db):
    """The database as plain SQL, with pg_dump's per-run lines taken out."""
    r = subprocess.run([f"{pg.bindir}/pg_dump", "-d", pg.conninfo(db)],
                       capture_output=True, text=True, env=pg.env(), check=True)
    return "\n".join(line for line in r.stdout.splitlines()
                     if not line.startswith(("--", "\\restrict", "\\unrestrict")))


def matview_state(pg, db):
    return pg.psql("SELECT ispopulated, (SELECT count(*) FROM child_totals), "
                   "(SELECT sum(total) FROM child_totals) FROM pg_matviews WHERE matviewname = 'child_totals'", db)


def backup(cli, pg, repo, db):
    r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo(db))
    assert r.returncode == 0, r.stderr
    return repo / re.search(r"database/\S+\.dump\.gz", r.stdout).group(0)


def no_staging_left(pg, target):
    """No staging database of this target's restore is left (other tests may leave theirs)."""
    return pg.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '{target[:30]}_mevb_restore_%'") == "0"


@pytest.mark.parametrize("jobs", ["3", "1", None])
def test_restore_in_sessions_brings_back_the_source_exactly(pg, cli, repo, newdb, many, tmp_path, jobs):
    backup(cli, pg, repo, many)
    target = newdb("par")
    staging = tmp_path / "staging"
    staging.mkdir()
    args = ["restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target), "--verbose",
            "--staging-dir", staging]
    if jobs:
        args += ["--jobs", jobs]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    sessions = re.search(r"in (\d+) sessions", r.stderr)
    if jobs == "1":
        assert sessions is None, r.stderr
    else:
        assert sessions and int(sessions.group(1)) >= (3 if jobs else 2), r.stderr
    # The default never stages a copy of the dump: the staging dir held only small lists.
    assert "needs a seekable file" not in r.stderr
    assert list(staging.iterdir()) == []
    assert dump(pg, target) == dump(pg, many)
    assert matview_state(pg, target) == matview_state(pg, many)
    assert pg.psql("SELECT last_value, is_called FROM counter", target) == "128|t"
    assert pg.psql("SELECT count(*) FROM pg_largeobject_metadata WHERE oid IN (424242, 424243)", target) == "2"
    assert no_staging_left(pg, target)


def test_a_failing_session_leaves_the_target_untouched(pg, cli, repo, newdb, many):
    path = backup(cli, pg, repo, many)
    target = newdb("par_fail")
    pg.psql(f'CREATE DATABASE "{target}"')
    pg.psql("CREATE TABLE keep (x int); INSERT INTO keep VALUES (7)", target)
    data = bytearray(path.read_bytes())
    data[int(len(data) * 0.7)] ^= 0x10  # in the data: the table of contents reads fine
    path.write_bytes(bytes(data))
    r = cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target), "--clean", "--jobs", "3")
    assert r.returncode == 1
    assert re.search(r"corrupt|SHA-256|does not match|pg_restore", r.stderr), r.stderr
    assert pg.psql("SELECT x FROM keep", target) == "7"
    assert no_staging_left(pg, target)


def test_pg_restore_args_that_choose_items_make_it_one_stream(pg, cli, repo, newdb, many):
    backup(cli, pg, repo, many)
    target = newdb("par_args")
    r = cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target), "--jobs", "3", "--verbose",
            "--pg-restore-arg=--section=pre-data", "--pg-restore-arg=--section=data")
    assert r.returncode == 0, r.stderr
    assert "one stream" in r.stderr and not re.search(r"in \d+ sessions", r.stderr), r.stderr
    assert pg.psql("SELECT count(*) FROM child", target) == "20000"
    # No post-data section: the index was not made.
    assert pg.psql("SELECT count(*) FROM pg_indexes WHERE indexname = 'child_at'", target) == "0"


def test_stage_restores_from_one_private_file_and_removes_it(pg, cli, repo, newdb, many, tmp_path):
    backup(cli, pg, repo, many)
    staging = tmp_path / "staging"
    staging.mkdir()
    target = newdb("par_stage")
    r = cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target), "--stage", "--jobs", "2",
            "--staging-dir", staging, "--verbose")
    assert r.returncode == 0, r.stderr
    assert "needs a seekable file" in r.stderr and str(staging) in r.stderr
    assert list(staging.iterdir()) == []
    assert dump(pg, target) == dump(pg, many)


def test_jobs_out_of_range_is_a_usage_error(cli, repo, pg):
    for bad in ("-1", "65", "x"):
        r = cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo("nowhere"), "--jobs", bad)
        assert r.returncode == 2 and "--jobs" in r.stderr, (bad, r.stderr)


def test_python_restore_in_sessions(pgenv, repo, newdb, many):
    import mevbackup

    logs = []
    with mevbackup.Repository(repo, log=lambda level, msg: logs.append(msg)) as r:
        b = r.backup_postgres(pgenv.conninfo(many))
        target = newdb("par_py")
        r.restore_postgres(b, dbname=pgenv.conninfo(target), jobs=2)
        assert any("in 2 sessions" in m for m in logs), logs
        assert dump(pgenv, target) == dump(pgenv, many)
        with pytest.raises(mevbackup.Error):
            r.restore_postgres(b, dbname=pgenv.conninfo(newdb("par_py_bad")), jobs=-1)


@pytest.mark.parametrize("schema", ["", "CREATE TABLE only_schema (x int PRIMARY KEY);"])
def test_a_database_without_data_restores_in_sessions(pg, cli, repo, newdb, schema):
    source = newdb("par_nodata_src")
    pg.psql(f'CREATE DATABASE "{source}"')
    if schema:
        pg.psql(schema, source)
    backup(cli, pg, repo, source)
    target = newdb("par_nodata")
    r = cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target), "--jobs", "3")
    assert r.returncode == 0, r.stderr
    assert dump(pg, target) == dump(pg, source)
    assert no_staging_left(pg, target)


def test_a_killed_restore_in_sessions_leaves_no_file_and_its_staging_database_goes_next_time(
        pg, tools, repo, newdb, many, tmp_path, cli):
    """Killed while its sessions load: the table of contents and the lists had no names, so
    nothing is left in the staging dir; the next restore drops the staging database."""
    backup(cli, pg, repo, many)
    target = newdb("par_killed")
    staging = tmp_path / "staging"
    staging.mkdir()
    marker = tmp_path / "loading"
    slow = tmp_path / "pg_restore_slow"
    slow.write_text(f"""#!/bin/bash
case " $* " in
  *" --section=data "*) touch {marker}; sleep 60 & wait ;;
  *) exec {pg.bindir}/pg_restore "$@" ;;
esac
""")
    slow.chmod(0o755)
    p = subprocess.Popen([tools["cli"], "restore", "postgres", "--repo", str(repo), "--dbname", pg.conninfo(target),
                          "--jobs", "2", "--staging-dir", str(staging), "--pg-restore", str(slow)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=pg.env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), p.communicate(timeout=30)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=30)
    assert list(staging.iterdir()) == []
    assert not no_staging_left(pg, target)  # the killed run's staging database is still there
    r = cli("restore", "postgres", "--repo", repo, "--dbname", pg.conninfo(target), "--staging-dir", staging)
    assert r.returncode == 0, r.stderr
    assert no_staging_left(pg, target)
    assert dump(pg, target) == dump(pg, many)
