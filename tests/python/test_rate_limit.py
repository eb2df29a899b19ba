"""--max-rate: every command's bandwidth limit, a throttle on the stored bytes of uploads
and downloads (and the Python and C filter)."""
import os
import subprocess
import time

import mevbackup


def run(tools, *args):
    return subprocess.run([tools["cli"], *map(str, args)], capture_output=True, text=True, timeout=120)


def test_backup_and_restore_hold_the_rate(tools, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "blob.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # incompressible: ~3 MiB stored
    repo = tmp_path / "repo"
    t0 = time.monotonic()
    r = run(tools, "backup", "files", "--repo", repo, "--base", src, "--include-secrets", "--max-rate", "1MiB/s",
            "blob.bin")
    up = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert up >= 2.6, up  # 3 MiB at 1 MiB/s, less one bucket (a tenth of a second)
    t0 = time.monotonic()
    r = run(tools, "restore", "files", "--repo", repo, "--target", tmp_path / "out", "--max-rate", "2MiB/s")
    down = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert down >= 1.3, down
    assert (tmp_path / "out" / "blob.bin").read_bytes() == (src / "blob.bin").read_bytes()


def test_bad_rates_are_usage_errors_naming_the_value(tools, tmp_path):
    for bad in ("0", "fast", "-5MiB/s"):
        r = run(tools, "list", "--repo", tmp_path, "--max-rate", bad)
        assert r.returncode == 2 and bad in r.stderr and "rate" in r.stderr, r.stderr


def test_python_throttle_filter_and_repository_rate(tmp_path):
    assert mevbackup.parse_rate("20MiB/s") == 20 * 1048576
    data = os.urandom(600 * 1024)
    got = []
    t0 = time.monotonic()
    with mevbackup.Source.from_iterable([data]) as src, mevbackup.Filter.throttle("1MiB/s") as th, \
            mevbackup.Sink.to_callback(got.append) as sink:
        mevbackup.pipeline_run(src, [th], sink)
    assert time.monotonic() - t0 >= 0.45
    assert b"".join(got) == data
    try:
        mevbackup.parse_rate("fast")
        raise AssertionError("accepted")
    except mevbackup.Error as e:
        assert "fast" in str(e)
