"""A restored PostgreSQL database is the source database: its encoding, collation, ctype,
locale provider, ICU locale, ALTER DATABASE ... SET settings and comment come back, names
in any server encoding are backed up, and what the target server cannot honour fails the
restore (or, when allowed, is reported)."""

import json
import subprocess
from pathlib import Path

import pytest

import mevbackup


def q(pg, sql, db="postgres"):
    """psql with a UTF-8 client, whatever the database's encoding."""
    r = subprocess.run([f"{pg.bindir}/psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                        "-d", pg.conninfo(db, client_encoding="UTF8"), "-c", sql],
                       capture_output=True, text=True, env=pg.env(), timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def properties(pg, db):
    row = q(pg, "SELECT pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider, "
                "coalesce(daticulocale, '-'), coalesce(shobj_description(oid, 'pg_database'), '-') "
                f"FROM pg_database WHERE datname = '{db}'")
    assert row, f"database {db} does not exist"
    return row.split("|")


def settings(pg, db):
    out = q(pg, "SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                f"WHERE d.datname = '{db}' AND s.setrole = 0")
    return sorted(out.splitlines())


def round_trip(pg, repo, src, target, **restore):
    with mevbackup.Repository(repo) as r:
        b = r.backup_postgres(pg.conninfo(src))
        r.restore_postgres(b, dbname=pg.conninfo(target), **restore)
    return b


def manifest_path(repo, b):
    return Path(repo) / (b.path + ".manifest.json")


def test_latin1_database_with_non_ascii_names_and_settings_round_trips(pgenv, repo, newdb):
    pg = pgenv
    src, target = newdb("latin1"), newdb("latin1_back")
    q(pg, f"CREATE DATABASE {src} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    q(pg, """CREATE SCHEMA app;
             CREATE TABLE "café_crème" (id int PRIMARY KEY, "naïveté" text);
             INSERT INTO "café_crème" VALUES (1, 'Ça déjà vu'), (2, 'ñ ü ß ø');""", src)
    q(pg, f"""ALTER DATABASE {src} SET work_mem = '7MB';
              ALTER DATABASE {src} SET search_path = "$user", app, public;
              ALTER DATABASE {src} SET bytea_output = 'escape';
              ALTER DATABASE {src} SET default_text_search_config = 'pg_catalog.french';
              COMMENT ON DATABASE {src} IS 'Données clients';""")
    b = round_trip(pg, repo, src, target)
    assert [t["table"] for t in b.manifest["source"]["tables"]] == ["café_crème"]
    assert properties(pg, target) == properties(pg, src) == ["LATIN1", "C", "C", "c", "-", "Données clients"]
    assert settings(pg, target) == settings(pg, src)
    assert len(settings(pg, src)) == 4
    # A new session to the restored database gets the source's settings.
    assert q(pg, "SHOW work_mem", target) == "7MB"
    assert q(pg, "SHOW search_path", target) == '"$user", app, public'
    assert q(pg, "SHOW bytea_output", target) == "escape"
    assert q(pg, "SHOW default_text_search_config", target) == "pg_catalog.french"
    assert q(pg, 'SELECT * FROM "café_crème" ORDER BY 1', target) == q(pg, 'SELECT * FROM "café_crème" ORDER BY 1', src)
    assert "ñ ü ß ø" in q(pg, 'SELECT "naïveté" FROM "café_crème" WHERE id = 2', target)


def test_icu_database_keeps_its_provider_locale_and_order(pgenv, repo, newdb):
    pg = pgenv
    src, target = newdb("icu"), newdb("icu_back")
    q(pg, f"CREATE DATABASE {src} ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LOCALE 'C' "
          "TEMPLATE template0")
    q(pg, "CREATE TABLE words (w text); INSERT INTO words VALUES ('b'), ('Z'), ('ä'), ('a'), ('z'), ('B');", src)
    round_trip(pg, repo, src, target)
    assert properties(pg, target) == properties(pg, src) == ["UTF8", "C", "C", "i", "de-DE", "-"]
    order = q(pg, "SELECT string_agg(w, ' ' ORDER BY w) FROM words", target)
    assert order == q(pg, "SELECT string_agg(w, ' ' ORDER BY w) FROM words", src) == "a ä b B z Z"
    # The test can tell: byte order differs.
    assert q(pg, "SELECT string_agg(w, ' ' ORDER BY w COLLATE \"C\") FROM words", target) != order


def test_c_utf8_collated_database_without_comment_comes_back_so(pgenv, repo, newdb):
    pg = pgenv
    src, target = newdb("cutf8"), newdb("cutf8_back")
    q(pg, f"CREATE DATABASE {src} ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0")
    q(pg, "CREATE TABLE t (x int); INSERT INTO t VALUES (1);", src)
    round_trip(pg, repo, src, target)
    # No comment at the source: none on the restored database either (not the staging mark).
    assert properties(pg, target) == properties(pg, src) == ["UTF8", "C.UTF-8", "C.UTF-8", "c", "-", "-"]
    assert settings(pg, target) == []


def test_clean_restore_replaces_the_targets_comment_with_the_sources(pgenv, repo, newdb):
    pg = pgenv
    src, target = newdb("cmt"), newdb("cmt_back")
    q(pg, f"CREATE DATABASE {src}")
    q(pg, f"COMMENT ON DATABASE {src} IS 'source comment'")
    q(pg, "CREATE TABLE t (x int);", src)
    q(pg, f"CREATE DATABASE {target}")
    q(pg, f"COMMENT ON DATABASE {target} IS 'old target'")
    q(pg, "CREATE TABLE old (x int);", target)
    round_trip(pg, repo, src, target, clean=True)
    assert properties(pg, target)[5] == "source comment"
    assert q(pg, "SELECT count(*) FROM pg_class WHERE relname = 'old'", target) == "0"


def test_property_the_target_cannot_honour_fails_unless_allowed(pgenv, repo, newdb):
    pg = pgenv
    src, target = newdb("lost"), newdb("lost_back")
    q(pg, f"CREATE DATABASE {src} ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0")
    q(pg, "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2);", src)
    q(pg, f"ALTER DATABASE {src} SET work_mem = '5MB'")
    lines = []
    with mevbackup.Repository(repo, log=lambda level, msg: lines.append(msg)) as r:
        b = r.backup_postgres(pg.conninfo(src))
        # As if the source's locale were missing on the target server.
        mp = manifest_path(repo, b)
        m = json.loads(mp.read_text())
        m["source"]["database_properties"]["collate"] = "xx_NOWHERE.UTF-8"
        mp.write_text(json.dumps(m))
        with pytest.raises(mevbackup.RestoreFailed) as e:
            r.restore_postgres(b.id, dbname=pg.conninfo(target))
        assert "xx_NOWHERE.UTF-8" in str(e.value) and target in str(e.value)
        assert q(pg, f"SELECT count(*) FROM pg_database WHERE datname LIKE '{target}%'") == "0"
        r.restore_postgres(b.id, dbname=pg.conninfo(target), allow_property_loss=True)
    assert any("restored without the source's" in x and "xx_NOWHERE.UTF-8" in x for x in lines), lines
    assert q(pg, "SELECT count(*) FROM t", target) == "2"
    assert q(pg, "SHOW work_mem", target) == "5MB"  # what could be honoured was


def test_backup_without_recorded_properties_restores_with_a_warning(pgenv, repo, newdb):
    pg = pgenv
    src, target = newdb("old"), newdb("old_back")
    q(pg, f"CREATE DATABASE {src}")
    q(pg, "CREATE TABLE t (x int); INSERT INTO t VALUES (1);", src)
    lines = []
    with mevbackup.Repository(repo, log=lambda level, msg: lines.append(msg)) as r:
        b = r.backup_postgres(pg.conninfo(src))
        mp = manifest_path(repo, b)
        m = json.loads(mp.read_text())
        del m["source"]["database_properties"]
        mp.write_text(json.dumps(m))
        r.restore_postgres(b.id, dbname=pg.conninfo(target))
    assert any("records no database properties" in x for x in lines), lines
    assert q(pg, "SELECT count(*) FROM t", target) == "1"
    assert properties(pg, target)[5] == "-"  # not the staging mark


def test_backup_warns_of_inherited_column_order_and_records_materialized_views(pgenv, repo, newdb):
    pg = pgenv
    src, target = newdb("inh"), newdb("inh_back")
    q(pg, f"CREATE DATABASE {src}")
    q(pg, """CREATE TABLE parent (a int);
             CREATE TABLE child (b text, a int);
             ALTER TABLE child INHERIT parent;
             CREATE TABLE plain_child (c int) INHERITS (parent);
             INSERT INTO child VALUES ('x', 1);
             CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM parent;
             CREATE MATERIALIZED VIEW mv_empty AS SELECT 1 AS one WITH NO DATA;""", src)
    lines = []
    with mevbackup.Repository(repo, log=lambda level, msg: lines.append(msg)) as r:
        b = r.backup_postgres(pg.conninfo(src))
        r.restore_postgres(b, dbname=pg.conninfo(target))
    assert b.manifest["source"]["column_order_changes"] == [{"schema": "public", "table": "child"}]
    assert any("public.child has columns of its own before inherited ones" in x for x in lines), lines
    assert b.manifest["source"]["materialized_views"] == [
        {"schema": "public", "view": "mv", "populated": True},
        {"schema": "public", "view": "mv_empty", "populated": False}]
    # What the warning announced: the restored table has the inherited column first.
    order = "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute " \
            "WHERE attrelid = 'child'::regclass AND attnum > 0"
    assert q(pg, order, src) == "b,a"
    assert q(pg, order, target) == "a,b"
