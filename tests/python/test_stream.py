"""The stream layer from the outside: the compose examples (C and Python) round-trip the
caller's bytes through zstd and an S3 endpoint (s3rver behind the SigV4-checking proxy);
a user's own kind put through the stream layer is listed, verified, pruned and synced by
the CLI like the built-in kinds; Python sources, filters and sinks fail cleanly."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from s3server import KEY, SECRET, S3rver, VerifyingProxy  # noqa: E402

import mevbackup  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "streams"


def _compose_binary() -> str:
    path = os.environ.get("MEVBACKUP_C_COMPOSE")
    if path:
        return path
    for build in ("build", "build-meson"):
        cand = ROOT / build / "mevb_example_compose"
        if cand.exists():
            return str(cand)
    raise RuntimeError("mevb_example_compose not built; set MEVBACKUP_C_COMPOSE")


def _cxx_compose_binary() -> str:
    path = os.environ.get("MEVBACKUP_CXX_COMPOSE")
    if path:
        return path
    for build in ("build", "build-meson"):
        cand = ROOT / build / "mevb_example_compose_cpp"
        if cand.exists():
            return str(cand)
    raise RuntimeError("mevb_example_compose_cpp not built; set MEVBACKUP_CXX_COMPOSE")


@pytest.fixture(scope="module")
def s3():
    server = S3rver([BUCKET]).start()
    proxy = VerifyingProxy(server).start()
    try:
        yield SimpleNamespace(server=server, proxy=proxy)
    finally:
        proxy.stop()
        server.stop()


@pytest.fixture
def s3env(s3):
    """The credentials reach the programs through the environment only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": s3.proxy.endpoint,
                "AWS_REGION": "us-east-1"})
    return env


def _storage(s3, prefix):
    return mevbackup.Storage(f"s3://{BUCKET}/{prefix}", endpoint_url=s3.proxy.endpoint, region="us-east-1",
                             access_key_id=KEY, secret_access_key=SECRET)


def test_c_compose_example_round_trips_through_zstd_and_s3(s3, s3env):
    # 12 MB of payload: more than one multipart part before compression.
    r = subprocess.run([_compose_binary(), f"s3://{BUCKET}/c", "12000000"], env=s3env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "12000000 bytes -> zstd -> compose/payload.bin.zst" in r.stdout and "identical" in r.stdout, r.stdout
    with _storage(s3, "c") as st:
        info = st.stat("compose/payload.bin.zst")
        assert 0 < info.size < 12000000 // 4  # compressed, and really stored
        assert f"({info.size} bytes stored)" in r.stdout
        with st.get("compose/payload.bin.zst") as src:
            head = []
            with mevbackup.Sink.to_callback(head.append) as sink:
                mevbackup.pipeline_run(src, [], sink)
        assert b"".join(head)[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    # Run again: the example replaces its own object and still finds the bytes identical.
    r = subprocess.run([_compose_binary(), f"s3://{BUCKET}/c", "1000"], env=s3env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "1000 bytes" in r.stdout, r.stderr


def test_c_compose_example_fails_clearly_without_credentials(s3, s3env):
    env = dict(s3env, AWS_SECRET_ACCESS_KEY="wrong")
    r = subprocess.run([_compose_binary(), f"s3://{BUCKET}/c-denied", "1000"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1
    assert "compose: " in r.stderr and "wrong" not in r.stderr, r.stderr


def test_cxx_compose_example_round_trips_through_zstd_and_s3(s3, s3env):
    # The C++ API (mevbackup.hpp) over the same C ABI: 12 MB, more than one multipart part.
    r = subprocess.run([_cxx_compose_binary(), f"s3://{BUCKET}/cpp", "12000000"], env=s3env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "12000000 bytes -> zstd -> compose/payload-cpp.bin.zst" in r.stdout and "identical" in r.stdout, r.stdout
    with _storage(s3, "cpp") as st:
        assert [o.key for o in st.list("compose/")] == ["compose/payload-cpp.bin.zst"]
        info = st.stat("compose/payload-cpp.bin.zst")
        assert 0 < info.size < 12000000 // 4
        assert f"({info.size} bytes stored)" in r.stdout
        with st.get("compose/payload-cpp.bin.zst") as src:
            head = []
            with mevbackup.Sink.to_callback(head.append) as sink:
                mevbackup.pipeline_run(src, [], sink)
        assert b"".join(head)[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    # Run again: the example replaces its own object and still finds the bytes identical.
    r = subprocess.run([_cxx_compose_binary(), f"s3://{BUCKET}/cpp", "1000"], env=s3env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "1000 bytes" in r.stdout, r.stderr


def test_cxx_compose_example_fails_clearly_without_credentials(s3, s3env):
    env = dict(s3env, AWS_SECRET_ACCESS_KEY="wrong-secret-value")
    r = subprocess.run([_cxx_compose_binary(), f"s3://{BUCKET}/cpp-denied", "1000"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith("compose: ") and "wrong-secret-value" not in r.stderr, r.stderr
    assert "identical" not in r.stdout


def test_python_compose_example_round_trips_through_zstd_and_s3(s3, s3env):
    # Ahead of what the tests run with: a sanitizer build's tests/sanitize stays on the path.
    env = dict(s3env, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "bindings" / "python"),
                                                             s3env.get("PYTHONPATH", "")) if p))
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "python" / "compose.py"), f"s3://{BUCKET}/py",
                        "7000000"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "7000000 bytes -> zstd -> compose/payload-py.bin.zst" in r.stdout and "identical" in r.stdout, r.stdout
    with _storage(s3, "py") as st:
        assert [o.key for o in st.list("compose/")] == ["compose/payload-py.bin.zst"]


def _cli(*args):
    cli = os.environ.get("MEVBACKUP_CLI") or str(ROOT / "build" / "mevbackup")
    return subprocess.run([cli, *map(str, args)], capture_output=True, text=True, timeout=300)


def _export(n: int) -> bytes:
    return b"".join(json.dumps({"order": i, "state": "protected"}).encode() + b"\n" for i in range(n))


def test_a_user_kind_is_listed_verified_pruned_and_synced_like_built_in_kinds(tmp_path):
    repo_dir, copy_dir = tmp_path / "repo", tmp_path / "copy"
    older, newer = _export(20000), _export(30000)
    with mevbackup.Repository(repo_dir) as repo:
        first = repo.put_artifact(mevbackup.Source.from_iterable([older[:5000], older[5000:]]), kind="export",
                                  name_prefix="service", compression="zstd", format="jsonl", extension=".jsonl")
        second = repo.put_artifact(mevbackup.Source.from_iterable(iter([newer])), kind="export",
                                   name_prefix="service", extension=".jsonl")
    assert first.path.startswith("export/service_") and first.path.endswith(".jsonl.zst")
    assert second.path.endswith(".jsonl.gz") and second.compression == "gzip"
    assert (repo_dir / first.path).is_file() and (repo_dir / (first.path + ".manifest.json")).is_file()

    listing = json.loads(_cli("list", "--repo", repo_dir, "--json").stdout)
    assert [(b["id"], b["kind"]) for b in listing] == [(first.id, "export"), (second.id, "export")]
    only = json.loads(_cli("list", "--repo", repo_dir, "--kind", "export", "--json").stdout)
    assert len(only) == 2

    r = _cli("verify", "--repo", repo_dir, "--backup", "all")
    assert r.returncode == 0, r.stdout + r.stderr
    assert first.id in r.stdout and second.id in r.stdout

    r = _cli("check", "--repo", repo_dir, "--kind", "export", "--max-age", "1h")
    assert r.returncode == 0, r.stdout + r.stderr  # fresh: Nagios OK

    r = _cli("prune", "--repo", repo_dir, "--keep-last", "1", "--kind", "export")
    assert r.returncode == 0, r.stderr
    assert not (repo_dir / first.path).exists() and not (repo_dir / (first.path + ".manifest.json")).exists()
    assert (repo_dir / second.path).is_file()

    r = _cli("sync", "--from", repo_dir, "--to", copy_dir)
    assert r.returncode == 0, r.stderr
    assert [b["id"] for b in json.loads(_cli("list", "--repo", copy_dir, "--json").stdout)] == [second.id]
    with mevbackup.Repository(copy_dir) as copy:
        out = bytearray()
        copy.get_artifact(second.id, mevbackup.Sink.to_callback(out.extend), kind="export")
    assert bytes(out) == newer

    # A changed byte in the user kind's artifact is found by verify.
    art = repo_dir / second.path
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 0x40
    art.write_bytes(bytes(data))
    r = _cli("verify", "--repo", repo_dir, "--backup", "all")
    assert r.returncode != 0
    assert second.id in r.stdout + r.stderr


def test_user_kind_names_are_checked(tmp_path):
    with mevbackup.Repository(tmp_path / "repo") as repo:
        for bad in ("Export", "database", "wal", "9x", "a/b"):
            with pytest.raises(mevbackup.InvalidArgument, match="kind"):
                repo.put_artifact(mevbackup.Source.from_iterable([b"x"]), kind=bad, name_prefix="s")
    assert not (tmp_path / "repo" / "database").exists()


def test_python_sources_filters_and_sinks(tmp_path):
    data = os.urandom(300000)
    target = tmp_path / "out.gz"
    with mevbackup.Source.from_iterable(data[i:i + 4096] for i in range(0, len(data), 4096)) as src, \
            mevbackup.Filter.observer() as seen, mevbackup.Filter.compressor("gzip", 6) as gz, \
            mevbackup.Sink.to_path(target) as sink:
        mevbackup.pipeline_run(src, [seen, gz], sink)
        assert seen.bytes == len(data) and seen.sha256 == hashlib.sha256(data).hexdigest()
    import gzip
    assert gzip.decompress(target.read_bytes()) == data

    # The file is never replaced unless asked; a consumed source cannot run again.
    with mevbackup.Source.from_iterable([b"other"]) as src, mevbackup.Sink.to_path(target) as sink:
        with pytest.raises(mevbackup.AlreadyExists, match="not overwritten"):
            mevbackup.pipeline_run(src, [], sink)
        with pytest.raises(mevbackup.InvalidArgument, match="already used"):
            mevbackup.pipeline_run(src, [], sink)
    assert gzip.decompress(target.read_bytes()) == data

    # A file object as the sink, a path as the source.
    with open(tmp_path / "copy", "wb") as f:
        with mevbackup.Source.from_path(target) as src, mevbackup.Filter.decompressor("gzip") as gunzip, \
                mevbackup.Sink.to_file(f) as sink:
            mevbackup.pipeline_run(src, [gunzip], sink)
    assert (tmp_path / "copy").read_bytes() == data


def test_python_callback_errors_fail_the_run_and_commit_nothing(tmp_path):
    class Boom(Exception):
        pass

    def chunks():
        yield b"a" * 100000
        raise Boom("the export broke")

    target = tmp_path / "never"
    with mevbackup.Source.from_iterable(chunks()) as src, mevbackup.Sink.to_path(target) as sink:
        with pytest.raises(Boom, match="the export broke"):
            mevbackup.pipeline_run(src, [], sink)
    assert not target.exists() and list(tmp_path.iterdir()) == []

    events = []

    def write(chunk):
        events.append("write")
        raise Boom("disk on fire")

    with mevbackup.Source.from_iterable([b"x" * 10]) as src, \
            mevbackup.Sink.to_callback(write, lambda: events.append("commit"), lambda: events.append("abort")) as sink:
        with pytest.raises(Boom, match="disk on fire"):
            mevbackup.pipeline_run(src, [], sink)
    assert events == ["write", "abort"]

    def endless():
        while True:
            yield b"z" * 65536

    polls = [0]

    def cancel():
        polls[0] += 1
        return polls[0] > 3

    with mevbackup.Source.from_iterable(endless()) as src, mevbackup.Sink.to_path(target) as sink:
        with pytest.raises(mevbackup.Cancelled, match="streaming: cancelled by the cancel callback"):
            mevbackup.pipeline_run(src, [], sink, cancel=cancel, stage="streaming")
    assert not target.exists()

    # Wrong magic: gzip bytes into a zstd decompressor.
    import gzip
    with mevbackup.Source.from_iterable([gzip.compress(b"hello" * 1000)]) as src, \
            mevbackup.Filter.decompressor("zstd") as unzstd, mevbackup.Sink.to_path(target) as sink:
        with pytest.raises(mevbackup.Corrupt, match=r"filter 0 \(zstd decompressor\)"):
            mevbackup.pipeline_run(src, [unzstd], sink)
    assert not target.exists()


def test_local_storage_from_python(tmp_path):
    with mevbackup.Storage(tmp_path / "store") as st:
        with mevbackup.Source.from_iterable([b"one", b"two"]) as src, st.put("dir/a.txt") as sink:
            mevbackup.pipeline_run(src, [], sink)
        assert (tmp_path / "store" / "dir" / "a.txt").read_bytes() == b"onetwo"
        [obj] = st.list("dir/")
        assert (obj.key, obj.size) == ("dir/a.txt", 6) and obj.mtime == st.stat("dir/a.txt").mtime
        with pytest.raises(mevbackup.NotFound, match="dir/b.txt"):
            st.stat("dir/b.txt")
        with pytest.raises(mevbackup.InvalidArgument):
            st.put("../escape")
        st.remove("dir/a.txt")
        assert st.list("") == []


def test_every_c_example_in_the_c_api_doc_compiles(tmp_path):
    import re
    import shutil
    text = (ROOT / "docs" / "c-api.md").read_text()
    blocks = re.findall(r"```c\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/c-api.md has no C example"
    cc = shutil.which("cc")
    assert cc, "no C compiler"
    for i, code in enumerate(blocks):
        src = tmp_path / f"doc_example_{i}.c"
        src.write_text(code)
        r = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I", str(ROOT / "capi"),
                            "-c", str(src), "-o", str(tmp_path / f"doc_example_{i}.o")],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"example {i} of docs/c-api.md:\n{code}\n{r.stderr}"


def test_every_cxx_example_in_the_c_api_doc_compiles(tmp_path):
    import re
    import shutil
    text = (ROOT / "docs" / "c-api.md").read_text()
    blocks = re.findall(r"```cpp\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/c-api.md has no C++ example"
    cxx = shutil.which("c++")
    assert cxx, "no C++ compiler"
    for i, code in enumerate(blocks):
        src = tmp_path / f"doc_example_{i}.cpp"
        src.write_text(code)
        r = subprocess.run([cxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I", str(ROOT / "capi"),
                            "-c", str(src), "-o", str(tmp_path / f"doc_example_{i}.o")],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"C++ example {i} of docs/c-api.md:\n{code}\n{r.stderr}"
