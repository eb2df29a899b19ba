"""Configuration files through the CLI and Python: round trips checked with diff -r and
stat, stock tar reading the artifact, secrets kept out of it, and hostile archives
(made here with tarfile) refused without writing anything outside the target."""

import gzip
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

import mevbackup

MARKER = "SECRET-MARKER-7f3a9c"


@pytest.fixture
def fcli(tools):
    def run(*args, cwd=None):
        return subprocess.run([tools["cli"], *map(str, args)], capture_output=True, text=True, cwd=cwd,
                              timeout=120)

    return run


def make_tree(root: Path) -> Path:
    """A service directory like the runbook's, with secrets beside the configuration."""
    (root / "nginx" / "conf.d").mkdir(parents=True)
    (root / "monitoring").mkdir()
    (root / "docker-compose.yml").write_text("services:\n  api:\n    image: mev/api:1.2\n")
    (root / "nginx" / "nginx.conf").write_text("worker_processes 4;\n")
    (root / "nginx" / "conf.d" / "api.conf").write_text("location / { proxy_pass http://api; }\n")
    (root / "monitoring" / "prometheus.yml").write_text("scrape_interval: 15s\n")
    (root / "init-db.sql").write_text("CREATE TABLE t (id int);\n")
    (root / "requirements.txt").write_text("fastapi==0.110\n")
    (root / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    big = root / "data.bin"  # several pipeline chunks and libarchive blocks
    big.write_bytes(os.urandom(700_000) + bytes(300_000))
    (root / "empty.txt").write_bytes(b"")
    os.symlink("nginx/nginx.conf", root / "current.conf")
    os.symlink("../docker-compose.yml", root / "nginx" / "compose-link")
    os.chmod(root / "nginx" / "nginx.conf", 0o640)
    os.chmod(root / "init-db.sql", 0o600)
    os.chmod(root / "nginx" / "conf.d", 0o750)
    os.utime(root / "alembic.ini", (1_600_000_000, 1_600_000_000))
    os.utime(root / "nginx" / "conf.d", (1_600_000_100, 1_600_000_100))
    return root


def add_secrets(root: Path) -> list:
    (root / ".env").write_text(f"DB_PASSWORD={MARKER}\n")
    (root / ".env.production").write_text(f"API_KEY={MARKER}\n")
    (root / "nginx" / "server.key").write_text(f"-----BEGIN PRIVATE KEY-----{MARKER}\n")
    (root / "nginx" / "server.pem").write_text(f"cert {MARKER}\n")
    (root / "id_rsa").write_text(f"{MARKER}\n")
    (root / "secrets").mkdir()
    (root / "secrets" / "db.txt").write_text(f"{MARKER}\n")
    return [".env", ".env.production", "nginx/server.key", "nginx/server.pem", "id_rsa", "secrets"]


def snapshot(root: Path) -> dict:
    """type, mode, size, mtime, owner and link target of everything below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size if not stat.S_ISDIR(st.st_mode)
                        else 0, int(st.st_mtime), st.st_uid, st.st_gid,
                        os.readlink(p) if stat.S_ISLNK(st.st_mode) else None)
    return out


def artifact_of(repo: Path, stdout: str) -> Path:
    m = re.search(r"config/config_\d{8}_\d{6}(_\d+)?\.tar\.gz", stdout)
    assert m, stdout
    return repo / m.group(0)


def member_list(art: Path) -> list:
    """The backup's member list, its own object beside the artifact, checked against the
    manifest's record of it with stock gzip and hashlib."""
    manifest = json.loads(Path(str(art) + ".manifest.json").read_text())
    assert "members" not in manifest["source"]
    rec = manifest["source"]["member_list"]
    raw = Path(str(art) + ".members.json.gz").read_bytes()
    assert len(raw) == rec["size"] and hashlib.sha256(raw).hexdigest() == rec["sha256"]
    members = json.loads(gzip.decompress(raw))
    assert len(members) == rec["count"]
    return members


def test_round_trip_cli_diff_stat_and_stock_tar(fcli, tmp_path):
    src = make_tree(tmp_path / "src")
    repo, out = tmp_path / "repo", tmp_path / "restored"
    r = fcli("backup", "files", "--repo", repo, "--base", src, ".")
    assert r.returncode == 0, r.stderr
    art = artifact_of(repo, r.stdout)
    manifest = json.loads(Path(str(art) + ".manifest.json").read_text())
    assert manifest["kind"] == "files" and manifest["format"] == "tar-pax"
    assert manifest["source"]["base_dir"] == str(src)

    # Stock tar lists exactly the manifest's members.
    listing = subprocess.run(["tar", "tzf", str(art)], capture_output=True, text=True, check=True).stdout.split()
    names = [m["name"] for m in member_list(art)]
    assert [x.rstrip("/") for x in listing] == names
    members = {m["name"]: m for m in member_list(art)}
    assert members["data.bin"]["sha256"] == hashlib.sha256((src / "data.bin").read_bytes()).hexdigest()
    assert members["data.bin"]["size"] == 1_000_000
    assert members["nginx/nginx.conf"]["mode"] == "0640"
    assert members["current.conf"] == {**members["current.conf"], "type": "symlink", "target": "nginx/nginx.conf"}

    r = fcli("restore", "files", "--repo", repo, "--backup", "latest", "--target", out)
    assert r.returncode == 0, r.stderr
    assert subprocess.run(["diff", "-r", "--no-dereference", str(src), str(out)]).returncode == 0
    assert snapshot(out) == snapshot(src)

    # Again into the same target: everything is identical, nothing changes.
    before = snapshot(out)
    r = fcli("restore", "files", "--repo", repo, "--target", out)
    assert r.returncode == 0, r.stderr
    assert snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if ".mevb-" in p.name]  # no staging left behind


def test_stock_tar_extracts_the_artifact(fcli, tmp_path):
    src = make_tree(tmp_path / "src")
    repo, out = tmp_path / "repo", tmp_path / "by-tar"
    r = fcli("backup", "files", "--repo", repo, "--base", src, "docker-compose.yml", "nginx", "current.conf")
    assert r.returncode == 0, r.stderr
    out.mkdir()
    subprocess.run(["tar", "xzpf", str(artifact_of(repo, r.stdout)), "-C", str(out)], check=True)
    assert (out / "nginx" / "conf.d" / "api.conf").read_text() == (src / "nginx" / "conf.d" / "api.conf").read_text()
    assert os.readlink(out / "current.conf") == "nginx/nginx.conf"
    assert stat.S_IMODE((out / "nginx" / "nginx.conf").stat().st_mode) == 0o640


def test_secrets_stay_out_and_are_reported_by_name(fcli, tmp_path):
    src = make_tree(tmp_path / "src")
    secret_names = add_secrets(src)
    repo = tmp_path / "repo"
    # Named explicitly, through a directory and through a glob: still left out.
    r = fcli("backup", "files", "--repo", repo, "--base", src, ".", ".env", "nginx/*", "--exclude", "*.bin")
    assert r.returncode == 0, r.stderr
    art = artifact_of(repo, r.stdout)
    payload = gzip.decompress(art.read_bytes())
    assert MARKER.encode() not in payload
    assert b"data.bin" not in payload
    manifest = json.loads(Path(str(art) + ".manifest.json").read_text())
    assert sorted(manifest["source"]["excluded"]) == sorted(secret_names + ["data.bin"])
    for n in secret_names:
        assert n in r.stderr  # reported by name ...
    assert MARKER not in r.stderr + r.stdout  # ... never by content
    assert MARKER not in Path(str(art) + ".manifest.json").read_text()

    # --include-secrets takes them (the user asked for it).
    r = fcli("backup", "files", "--repo", repo, "--base", src, "--include-secrets", ".env", "secrets")
    assert r.returncode == 0, r.stderr
    payload = gzip.decompress(artifact_of(repo, r.stdout).read_bytes())
    assert payload.count(MARKER.encode()) == 2


def test_missing_paths_are_errors_unless_ignored(fcli, tmp_path):
    src = make_tree(tmp_path / "src")
    repo = tmp_path / "repo"
    r = fcli("backup", "files", "--repo", repo, "--base", src, "docker-compose.yml", "nginx/missing.conf")
    assert r.returncode == 1
    assert "nginx/missing.conf" in r.stderr and "does not exist" in r.stderr
    assert not (repo / "config").exists() or not list((repo / "config").iterdir())
    r = fcli("backup", "files", "--repo", repo, "--base", src, "no-such-*.yml")
    assert r.returncode == 1 and "no-such-*.yml" in r.stderr
    r = fcli("backup", "files", "--repo", repo, "--base", src, "--ignore-missing", "docker-compose.yml",
             "nginx/missing.conf")
    assert r.returncode == 0, r.stderr
    manifest = json.loads(Path(str(artifact_of(repo, r.stdout)) + ".manifest.json").read_text())
    assert manifest["source"]["missing"] == ["nginx/missing.conf"]
    assert "nginx/missing.conf" in r.stderr
    r = fcli("backup", "files", "--repo", repo, "--base", src, "../outside")
    assert r.returncode == 1 and "leaves the base directory" in r.stderr
    r = fcli("backup", "files", "--repo", repo, "--base", src)
    assert r.returncode == 2  # usage: no PATH


def test_relative_paths_default_to_the_current_directory(fcli, tmp_path):
    src = make_tree(tmp_path / "src")
    repo = tmp_path / "repo"
    r = fcli("backup", "files", "--repo", repo, "docker-compose.yml", "monitoring/prometheus.yml", cwd=src)
    assert r.returncode == 0, r.stderr
    names = subprocess.run(["tar", "tzf", str(artifact_of(repo, r.stdout))], capture_output=True, text=True,
                           check=True).stdout.split()
    assert names == ["docker-compose.yml", "monitoring/prometheus.yml"]


def test_dry_run_only_and_conflicts(fcli, tmp_path):
    src = make_tree(tmp_path / "src")
    repo, out = tmp_path / "repo", tmp_path / "out"
    assert fcli("backup", "files", "--repo", repo, "--base", src, ".").returncode == 0

    r = fcli("restore", "files", "--repo", repo, "--target", out, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "create    nginx/nginx.conf" in r.stdout and "create    data.bin" in r.stdout
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".mevb-" in p.name]

    r = fcli("restore", "files", "--repo", repo, "--target", out, "--only", "nginx", "--only", "*.yml")
    assert r.returncode == 0, r.stderr
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert got == sorted(["nginx", "nginx/nginx.conf", "nginx/conf.d", "nginx/conf.d/api.conf",
                          "nginx/compose-link", "docker-compose.yml", "monitoring",
                          "monitoring/prometheus.yml"])
    r = fcli("restore", "files", "--repo", repo, "--target", out, "--only", "nope*")
    assert r.returncode == 1 and "nope*" in r.stderr

    # An existing file that differs: refused, and nothing at all changes.
    (out / "docker-compose.yml").write_text("edited locally\n")
    before = snapshot(out)
    r = fcli("restore", "files", "--repo", repo, "--target", out)
    assert r.returncode == 1
    assert "docker-compose.yml" in r.stderr and "--overwrite" in r.stderr
    assert snapshot(out) == before
    r = fcli("restore", "files", "--repo", repo, "--target", out, "--dry-run")
    assert r.returncode == 0 and "conflict  docker-compose.yml" in r.stdout
    assert "unchanged nginx/nginx.conf" in r.stdout and "create    data.bin" in r.stdout
    assert snapshot(out) == before
    r = fcli("restore", "files", "--repo", repo, "--target", out, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert "replace   docker-compose.yml" in r.stdout
    assert subprocess.run(["diff", "-r", "--no-dereference", str(src), str(out)]).returncode == 0


def test_python_round_trip_and_errors(tmp_path):
    src = make_tree(tmp_path / "src")
    add_secrets(src)
    with mevbackup.Repository(tmp_path / "repo") as r:
        seen = []
        b = r.backup_files(["."], base=src, progress=seen.append)
        assert b.kind == "files" and b.path.startswith("config/config_") and b.path.endswith(".tar.gz")
        assert "secrets" in b.manifest["source"]["excluded"]
        assert seen and seen[-1].done
        assert r.find("latest", kind="files").id == b.id
        actions = r.restore_files(b, target=tmp_path / "out", dry_run=True)
        assert {a.action for a in actions} == {"create"} and not (tmp_path / "out").exists()
        actions = r.restore_files("latest", target=tmp_path / "out")
        assert {a.name for a in actions} == {m["name"] for m in member_list(tmp_path / "repo" / b.path)}
        assert not (tmp_path / "out" / ".env").exists()
        (tmp_path / "out" / "requirements.txt").write_text("changed\n")
        with pytest.raises(mevbackup.AlreadyExists) as e:
            r.restore_files(b, target=tmp_path / "out")
        assert "requirements.txt" in e.value.message
        with pytest.raises(mevbackup.NotFound):
            r.backup_files(["nope.yml"], base=src)
        with pytest.raises(mevbackup.InvalidArgument):
            r.backup_files([], base=src)


def test_special_modes_are_dropped_unless_kept(fcli, tmp_path):
    src = tmp_path / "src"
    (src / "shared").mkdir(parents=True)
    (src / "bin").write_text("#!/bin/sh\n")
    (src / "shared" / "notes").write_text("n\n")
    os.chmod(src / "bin", 0o4755)
    os.chmod(src / "shared" / "notes", 0o666)
    os.chmod(src / "shared", 0o2777)
    repo = tmp_path / "repo"
    with mevbackup.Repository(repo) as r:
        b = r.backup_files(["."], base=src)
        r.restore_files(b, target=tmp_path / "plain")
        r.restore_files(b, target=tmp_path / "kept", keep_special_modes=True)
    mode = lambda p: stat.S_IMODE(os.lstat(p).st_mode)
    assert (mode(tmp_path / "plain" / "bin"), mode(tmp_path / "plain" / "shared"),
            mode(tmp_path / "plain" / "shared" / "notes")) == (0o755, 0o775, 0o664)
    assert (mode(tmp_path / "kept" / "bin"), mode(tmp_path / "kept" / "shared"),
            mode(tmp_path / "kept" / "shared" / "notes")) == (0o4755, 0o2777, 0o666)
    r = fcli("restore", "files", "--repo", repo, "--target", tmp_path / "cli-plain")
    assert r.returncode == 0, r.stderr
    assert mode(tmp_path / "cli-plain" / "bin") == 0o755
    r = fcli("restore", "files", "--repo", repo, "--target", tmp_path / "cli-kept", "--keep-special-modes")
    assert r.returncode == 0, r.stderr
    assert mode(tmp_path / "cli-kept" / "bin") == 0o4755


# ---- hostile archives -----------------------------------------------------------------


def plant(repo: Path, tar_bytes: bytes, fcli, tmp_path) -> str:
    """Stores `tar_bytes` as a files backup with a valid manifest (checksums right,
    no member list), as an attacker with write access to the repository could."""
    seed = tmp_path / "seed"
    seed.mkdir(exist_ok=True)
    (seed / "x").write_text("x")
    r = fcli("backup", "files", "--repo", repo, "--base", seed, "--prefix", "hostile", "x")
    assert r.returncode == 0, r.stderr
    art = artifact_of_prefix(repo, r.stdout)
    data = gzip.compress(tar_bytes)
    art.write_bytes(data)
    mpath = Path(str(art) + ".manifest.json")
    m = json.loads(mpath.read_text())
    m.update(size=len(data), sha256=hashlib.sha256(data).hexdigest(), payload_size=len(tar_bytes),
             payload_sha256=hashlib.sha256(tar_bytes).hexdigest())
    m["source"] = {"base_dir": "/nowhere"}
    mpath.write_text(json.dumps(m))
    return m["id"]


def artifact_of_prefix(repo: Path, stdout: str) -> Path:
    m = re.search(r"config/hostile_\d{8}_\d{6}(_\d+)?\.tar\.gz", stdout)
    assert m, stdout
    return repo / m.group(0)


def tar_of(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for kind, name, arg in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "file":
                data = arg.encode()
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                t.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = arg
                t.addfile(info)
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = arg
                t.addfile(info)
    return buf.getvalue()


def hostile_cases(outside: Path):
    return {
        "dotdot": [("file", "ok.txt", "fine"), ("file", "../escaped.txt", "pwned")],
        "dotdot-deep": [("dir", "a", None), ("file", "a/../../escaped.txt", "pwned")],
        "absolute": [("file", str(outside / "abs.txt"), "pwned")],
        "symlink-absolute-then-file": [("symlink", "link", str(outside)), ("file", "link/through.txt", "pwned")],
        "symlink-relative-then-file": [("symlink", "link", "../outside"), ("file", "link/through.txt", "pwned")],
        "symlink-inside-then-file": [("dir", "d", None), ("symlink", "d/l", "."), ("file", "d/l/x.txt", "pwned")],
        "symlink-escape-only": [("symlink", "up", "../../outside/victim.txt")],
        "hardlink-outside-absolute": [("hardlink", "hl", str(outside / "victim.txt"))],
        "hardlink-outside-dotdot": [("hardlink", "hl", "../outside/victim.txt")],
        "hardlink-to-nothing": [("hardlink", "hl", "never-seen.txt")],
        "duplicate-replaces-file-with-symlink": [("file", "a.txt", "x"), ("symlink", "a.txt", "../outside")],
    }


@pytest.mark.parametrize("case", sorted(hostile_cases(Path("/x")).keys()))
def test_hostile_archives_are_refused_and_nothing_escapes(fcli, tmp_path, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("original\n")
    repo = tmp_path / "repo"
    ident = plant(repo, tar_of(*hostile_cases(outside)[case]), fcli, tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("keep\n")

    def world():
        return {str(p.relative_to(tmp_path)): (p.is_symlink(), p.read_bytes() if p.is_file() and not p.is_symlink()
                                               else None)
                for p in tmp_path.rglob("*") if "repo" not in p.parts and "seed" not in p.parts}

    before = world()
    for extra in ([], ["--dry-run"]):
        r = fcli("restore", "files", "--repo", repo, "--backup", ident, "--target", target, *extra)
        assert r.returncode == 1, (case, r.stdout, r.stderr)
        assert "refusing archive member" in r.stderr, r.stderr
        assert world() == before  # nothing written anywhere: not outside, not in the target
    # The same through a target that does not exist yet (its whole tree would be moved in).
    r = fcli("restore", "files", "--repo", repo, "--backup", ident, "--target", tmp_path / "fresh")
    assert r.returncode == 1 and not (tmp_path / "fresh").exists()
    assert (outside / "victim.txt").read_text() == "original\n"
    assert not (tmp_path / "escaped.txt").exists()


def test_symlink_in_target_is_not_followed(fcli, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = tmp_path / "repo"
    ident = plant(repo, tar_of(("dir", "nginx", None), ("file", "nginx/nginx.conf", "x")), fcli, tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "nginx")
    r = fcli("restore", "files", "--repo", repo, "--backup", ident, "--target", target)
    assert r.returncode == 1 and "symlink" in r.stderr
    assert list(outside.iterdir()) == []


def test_corrupt_artifact_leaves_the_target_untouched(fcli, tmp_path):
    src = make_tree(tmp_path / "src")
    repo, out = tmp_path / "repo", tmp_path / "out"
    r = fcli("backup", "files", "--repo", repo, "--base", src, ".")
    art = artifact_of(repo, r.stdout)
    payload = bytearray(gzip.decompress(art.read_bytes()))
    i = payload.find(b"worker_processes")
    payload[i] ^= 1  # same size, other bytes: only the checksums can tell
    art.write_bytes(gzip.compress(bytes(payload)))
    r = fcli("restore", "files", "--repo", repo, "--target", out)
    assert r.returncode == 1 and ("SHA-256" in r.stderr or "bytes" in r.stderr), r.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".mevb-" in p.name]


def test_links_a_restore_would_refuse_fail_the_backup(fcli, tmp_path):
    src = make_tree(tmp_path / "src")
    os.symlink("/etc/hostname", src / "nginx" / "abs-link")
    repo = tmp_path / "repo"
    r = fcli("backup", "files", "--repo", repo, "--base", src, ".")
    assert r.returncode == 1
    assert "nginx/abs-link" in r.stderr and "--exclude" in r.stderr
    assert not (repo / "config").exists() or not list((repo / "config").iterdir())
    r = fcli("backup", "files", "--repo", repo, "--base", src, "--exclude", "abs-link", ".")
    assert r.returncode == 0, r.stderr


def test_archive_made_by_stock_tar_restores(fcli, tmp_path):
    """Names as GNU tar writes them ("./", the root entry, hard links) are accepted."""
    src = make_tree(tmp_path / "src")
    os.link(src / "requirements.txt", src / "requirements-copy.txt")
    tar_bytes = subprocess.run(["tar", "-C", str(src), "-cf", "-", "."], capture_output=True, check=True).stdout
    repo, out = tmp_path / "repo", tmp_path / "out"
    ident = plant(repo, tar_bytes, fcli, tmp_path)
    r = fcli("restore", "files", "--repo", repo, "--backup", ident, "--target", out)
    assert r.returncode == 0, r.stderr
    assert subprocess.run(["diff", "-r", "--no-dereference", str(src), str(out)]).returncode == 0
    assert os.stat(out / "requirements.txt").st_ino == os.stat(out / "requirements-copy.txt").st_ino


# ---- the member list, an object of its own --------------------------------------------


def long_tree(root: Path, count: int) -> Path:
    """`count` files under long directory names: a member list of several MiB."""
    for d in range(count // 500):
        sub = root / (f"service-{d:03d}-" + "configuration-directory-" * 8)
        sub.mkdir(parents=True)
        for i in range(500):
            (sub / (f"setting-{i:04d}-" + "x" * 150 + ".conf")).write_text(f"{d}.{i}\n")
    return root


def test_a_big_tree_keeps_a_small_manifest_and_stays_listed(fcli, tmp_path):
    src = long_tree(tmp_path / "src", 20_000)
    repo, out, mirror = tmp_path / "repo", tmp_path / "out", tmp_path / "mirror"
    r = fcli("backup", "files", "--repo", repo, "--base", src, ".")
    assert r.returncode == 0, r.stderr
    art = artifact_of(repo, r.stdout)
    manifest_path = Path(str(art) + ".manifest.json")
    assert manifest_path.stat().st_size < 16_384  # whatever the number of members
    members = member_list(art)
    assert len(members) == 20_000 + 40  # the files and their directories
    assert sum(len(m["name"]) for m in members) > 5_000_000
    ident = json.loads(manifest_path.read_text())["id"]

    r = fcli("list", "--repo", repo, "--json")
    assert r.returncode == 0 and ident in r.stdout, r.stderr
    r = fcli("verify", "--repo", repo, "--backup", "latest", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "member list" in r.stdout
    r = fcli("restore", "files", "--repo", repo, "--backup", "latest", "--target", out)
    assert r.returncode == 0, r.stderr
    assert subprocess.run(["diff", "-r", str(src), str(out)]).returncode == 0

    # A copy carries the member list, and restores from the copy.
    r = fcli("sync", "--from", repo, "--to", mirror)
    assert r.returncode == 0, r.stderr
    rel = art.relative_to(repo)
    assert (mirror / (str(rel) + ".members.json.gz")).read_bytes() == Path(str(art) + ".members.json.gz").read_bytes()
    r = fcli("restore", "files", "--repo", mirror, "--backup", ident, "--target", tmp_path / "out2", "--dry-run")
    assert r.returncode == 0, r.stderr


def test_prune_takes_the_member_list_with_its_backup_and_counts_it_nowhere(fcli, tmp_path):
    src = make_tree(tmp_path / "src")
    repo = tmp_path / "repo"
    arts = []
    for _ in range(2):
        r = fcli("backup", "files", "--repo", repo, "--base", src, ".")
        assert r.returncode == 0, r.stderr
        arts.append(artifact_of(repo, r.stdout))
    r = fcli("check", "--repo", repo, "--max-age", "1h", "--json")
    assert json.loads(r.stdout)["incomplete"] == 0, r.stdout  # a member list is no leftover
    r = fcli("prune", "--repo", repo, "--keep-last", "1", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["foreign"] == 0
    left = sorted(p.name for p in (repo / "config").iterdir())
    assert left == sorted(arts[1].name + suffix for suffix in ("", ".manifest.json", ".members.json.gz"))


def test_a_damaged_or_missing_member_list_fails_restore_and_verify(fcli, tmp_path):
    src = make_tree(tmp_path / "src")
    repo, out = tmp_path / "repo", tmp_path / "out"
    r = fcli("backup", "files", "--repo", repo, "--base", src, ".")
    assert r.returncode == 0, r.stderr
    lst = Path(str(artifact_of(repo, r.stdout)) + ".members.json.gz")
    good = lst.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0x01
    for content, message in ((bytes(damaged), "the member list"), (None, "is missing")):
        if content is None:
            lst.unlink()
        else:
            lst.write_bytes(content)
        r = fcli("restore", "files", "--repo", repo, "--backup", "latest", "--target", out)
        assert r.returncode != 0 and message in r.stderr and lst.name in r.stderr, r.stderr
        assert not out.exists()
        r = fcli("verify", "--repo", repo, "--backup", "latest")
        assert r.returncode != 0, r.stdout
    # Put back, the backup restores again.
    lst.write_bytes(good)
    r = fcli("restore", "files", "--repo", repo, "--backup", "latest", "--target", out)
    assert r.returncode == 0, r.stderr


def test_a_full_disk_fails_the_restore_and_leaves_the_target_as_it_was(fcli, tools, tmp_path):
    """The target's filesystem fills up mid-restore (a 1 MiB tmpfs, in a mount namespace of
    its own): libarchive only warns about the failed write, and would leave a file of the
    right size with a hole; the restore must fail with no_space, naming the file, and leave
    the target as it was, with no staging directory beside it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "small.conf").write_text("a = 1\n")
    (src / "big.bin").write_bytes(os.urandom(3 << 20))  # random: gzip cannot shrink it
    repo = tmp_path / "repo"
    r = fcli("backup", "files", "--repo", repo, "--base", src, ".")
    assert r.returncode == 0, r.stderr
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (f'mount -t tmpfs -o size=1m tmpfs "{disk}" && mkdir "{disk}/t" && echo keep > "{disk}/t/old.txt" && '
              f'"$0" restore files --repo "{repo}" --target "{disk}/t" --overwrite; echo "rc=$?"; '
              f'echo "entries:"; ls -A "{disk}"; echo "target:"; ls -A "{disk}/t"; cat "{disk}/t/old.txt"')
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, tools["cli"]],
                       capture_output=True, text=True, timeout=120)
    out = r.stdout.split("\n")
    assert "rc=0" not in out, r.stdout + r.stderr
    assert "No space left on device" in r.stderr and "big.bin" in r.stderr, r.stderr
    entries = out[out.index("entries:") + 1:out.index("target:")]
    assert entries == ["t"], r.stdout  # no staging directory left beside the target
    target = out[out.index("target:") + 1:]
    assert target[:2] == ["old.txt", "keep"], r.stdout
