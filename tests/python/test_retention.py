"""RetentionPolicy.apply (mevb_retention_apply, no repository) decides as `mevbackup prune`
does over a real repository, and bad input is refused with a message naming it."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path

import pytest

import mevbackup
from mevbackup import Decision, RetentionItem, RetentionPolicy

NOW = "2026-11-27T05:00:00Z"


def _run(tools, *args, at=None):
    env = dict(os.environ, TZ="UTC")
    cmd = [tools["cli"], *map(str, args)]
    if at:
        # The wall clock starts at `at` (UTC) and runs on; monotonic time stays real.
        env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        env["ASAN_OPTIONS"] = ":".join(o for o in (env.get("ASAN_OPTIONS", ""), "verify_asan_link_order=0") if o)
        cmd = ["faketime", "-m", "-f", f"@{at}"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def _backup(tools, repo, src, at, prefix="config"):
    r = _run(tools, "backup", "files", "--repo", repo, "--base", src, "--prefix", prefix, "--json", "app.conf",
             at=at)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["id"]


def _flip_a_byte(repo: Path, backup_id: str) -> None:
    path = repo / mevbackup.Repository(repo).find(backup_id, kind="files").path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_the_policy_decides_as_prune_does_over_a_repository(tools, tmp_path):
    repo = tmp_path / "repo"
    src = tmp_path / "etc"
    src.mkdir()
    (src / "app.conf").write_text("listen = 127.0.0.1\n")
    times = ["2025-06-10 04:00:00", "2026-09-15 04:00:00", "2026-10-03 04:00:00", "2026-10-20 04:00:00",
             "2026-11-20 04:00:00", "2026-11-24 04:00:00", "2026-11-25 10:00:00", "2026-11-25 12:00:00",
             "2026-11-26 04:00:00", "2026-11-27 03:00:00",
             "2026-11-28 04:00:00"]  # after now: a host with a wrong clock
    ids = {t: _backup(tools, repo, src, t) for t in times}
    other = _backup(tools, repo, src, "2026-11-01 04:00:00", prefix="other")
    verified = {i: "never" for i in ids.values()}
    verified[other] = "never"

    def verify(backup_id: str) -> None:
        _run(tools, "verify", "--repo", repo, "--backup", backup_id)

    verify(ids["2026-11-24 04:00:00"])
    verified[ids["2026-11-24 04:00:00"]] = "ok"
    verify(ids["2026-11-25 12:00:00"])  # good once, then damaged: ever-ok
    _flip_a_byte(repo, ids["2026-11-25 12:00:00"])
    verify(ids["2026-11-25 12:00:00"])
    verified[ids["2026-11-25 12:00:00"]] = "ever-ok"
    _flip_a_byte(repo, ids["2026-11-26 04:00:00"])  # damaged before any verification: failed
    verify(ids["2026-11-26 04:00:00"])
    verified[ids["2026-11-26 04:00:00"]] = "failed"
    # Leftovers of interrupted runs (the local storage's temporary names), one past the
    # grace period and one within it, and a file mevbackup did not write.
    old_tmp = repo / "config" / ".config_20261120_040000.tar.gz.tmp-0a1b2c3d"
    new_tmp = repo / "config" / ".config_20261127_043000.tar.gz.tmp-4e5f6a7b"
    for path, stored in ((old_tmp, "2026-11-25T00:00:00Z"), (new_tmp, "2026-11-27T04:30:00Z")):
        path.write_bytes(b"partial")
        os.utime(path, (_epoch(stored), _epoch(stored)))
    (repo / "config" / "notes.txt").write_text("the operator's\n")

    rules = dict(keep_last=2, keep_daily=3, keep_monthly=3, keep_yearly=1)
    r = _run(tools, "prune", "--repo", repo, "--keep-last", 2, "--keep-daily", 3, "--keep-monthly", 3,
             "--keep-yearly", 1, "--now", NOW, "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    by_prune = {d["id"]: (d["action"], d["reason"]) for d in json.loads(r.stdout)["decisions"] if not d["foreign"]}

    items = []
    for b in mevbackup.Repository(repo).list():
        m = b.manifest
        items.append(RetentionItem(id=b.id, kind=b.kind, source=b.source_name, created=m["started_at"],
                                   finished=m.get("finished_at") or None, verified=verified[b.id]))
    for path in (old_tmp, new_tmp):
        items.append(RetentionItem(id=str(path.relative_to(repo)), created=int(path.stat().st_mtime),
                                   incomplete=True))
    decisions = RetentionPolicy(**rules).apply(items, NOW)
    assert [d.id for d in decisions] == [i.id for i in items]
    by_policy = {d.id: ("keep" if d.keep else "delete", d.reason) for d in decisions}
    assert by_policy == by_prune

    # And the decisions are the ones the rules call for, not merely the same ones.
    assert by_policy[ids["2026-11-26 04:00:00"]] == ("delete", "failed verification")
    assert by_policy[ids["2026-11-25 12:00:00"]][1].startswith("newest backup that ever verified good")
    assert by_policy[ids["2026-11-25 10:00:00"]] == ("keep", "one of the last 2; daily 2026-11-25")
    assert by_policy[ids["2026-11-24 04:00:00"]] == ("keep", "newest verified-good backup; daily 2026-11-24")
    assert by_policy[ids["2026-11-20 04:00:00"]] == ("delete", "matches no keep rule")
    assert by_policy[ids["2026-10-03 04:00:00"]] == ("delete", "matches no keep rule")
    assert by_policy[ids["2026-09-15 04:00:00"]] == ("keep", "monthly 2026-09")
    assert by_policy[ids["2025-06-10 04:00:00"]] == ("delete", "matches no keep rule")
    assert "wrong clock" in by_policy[ids["2026-11-28 04:00:00"]][1]
    assert by_policy[other] == ("keep", "one of the last 2; daily 2026-11-01; monthly 2026-11; yearly 2026")
    assert by_policy[str(old_tmp.relative_to(repo))][0] == "delete"
    assert by_policy[str(new_tmp.relative_to(repo))][0] == "keep"
    inc = [d for d in decisions if d.incomplete]
    assert [d.id for d in inc] == [str(old_tmp.relative_to(repo)), str(new_tmp.relative_to(repo))]


def test_times_as_text_epoch_or_datetime_decide_alike():
    utc = datetime.timezone.utc
    at = [datetime.datetime(2026, 11, d, h, tzinfo=utc) for d, h in ((20, 4), (25, 6), (26, 4))]  # 47 h before now
    policy = RetentionPolicy(keep_last=1, keep_days=2)
    as_text = policy.apply([RetentionItem(f"b{i}", t.isoformat(), "files", "etc") for i, t in enumerate(at)], NOW)
    as_epoch = policy.apply([RetentionItem(f"b{i}", int(t.timestamp()), "files", "etc") for i, t in enumerate(at)],
                            int(_epoch(NOW)))
    as_datetime = policy.apply([RetentionItem(f"b{i}", t, "files", "etc") for i, t in enumerate(at)],
                               datetime.datetime(2026, 11, 27, 5, tzinfo=utc))
    assert as_text == as_epoch == as_datetime
    assert as_text == [Decision("b0", False, "matches no keep rule"),
                       Decision("b1", True, "within 2 days"),
                       Decision("b2", True, "one of the last 1; within 2 days")]


def test_bad_input_is_refused_naming_it():
    policy = RetentionPolicy()
    good = RetentionItem("a", "2026-11-25T04:00:00Z")
    with pytest.raises(mevbackup.InvalidArgument, match=r'item 1 \("b"\): created "last tuesday" is not an RFC 3339'):
        policy.apply([good, RetentionItem("b", "last tuesday")], NOW)
    with pytest.raises(mevbackup.InvalidArgument, match=r'item 0 \("naive"\): created .* has no time zone'):
        policy.apply([RetentionItem("naive", datetime.datetime(2026, 11, 25))], NOW)
    with pytest.raises(mevbackup.InvalidArgument, match=r"item 0: the id must not be NULL or empty"):
        policy.apply([RetentionItem("", "2026-11-25T04:00:00Z")], NOW)
    with pytest.raises(mevbackup.InvalidArgument, match=r"keep-last must be at least 1"):
        RetentionPolicy(keep_last=0).apply([good], NOW)
    with pytest.raises(mevbackup.InvalidArgument, match=r'now "tomorrow"'):
        policy.apply([good], "tomorrow")
    with pytest.raises(ValueError, match=r"item 0 \('a'\): verified 'yes' is not one of never, ok, failed, ever-ok"):
        policy.apply([RetentionItem("a", "2026-11-25T04:00:00Z", verified="yes")], NOW)
    with pytest.raises(TypeError):
        policy.apply([RetentionItem("a", 1.5)], NOW)  # type: ignore[arg-type]
    assert policy.apply([], NOW) == []
