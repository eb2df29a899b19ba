"""The drill's report as its readers see it: promtool accepts the textfile, and Chromium
renders the page (timeline, history) into a screenshot that is neither blank nor grey."""

import json
import os
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import _built

PROMTOOL = "/usr/bin/promtool"
CHROMIUM = shutil.which("chromium")
WINDOW = (1200, 1600)

GREEN = (0x2F, 0x9E, 0x44)
RED = (0xE0, 0x31, 0x31)


def _at(start: datetime, seconds: float) -> str:
    return (start + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def drill_report(start: datetime, ok: bool, seconds: float, message: str = "") -> dict:
    """A report of plan mev-protection's drill, shaped as the drill writes it."""
    checks = [
        {"check": "table public.mev_threats rows", "ok": True, "detail": "2000 = 2000"},
        {"check": "query SELECT COUNT(*) FROM transaction_protections", "ok": ok,
         "detail": "500 = 500" if ok else "499 != 500"},
    ]
    pg = seconds * 0.6
    steps = [
        {"name": "cleanup", "status": "ok", "started_at": _at(start, 0), "seconds": 0.3},
        {"name": "set", "status": "ok", "started_at": _at(start, 0.3), "seconds": 0.7},
        {"name": "postgres.main", "status": "ok" if ok else "failed", "started_at": _at(start, 1),
         "seconds": pg, "message": message, "detail": {"checks": checks}},
        {"name": "redis.cache", "status": "ok" if ok else "skipped", "started_at": _at(start, 1 + pg),
         "seconds": seconds * 0.2 if ok else 0},
        {"name": "files.config", "status": "ok" if ok else "skipped", "started_at": _at(start, 1 + pg),
         "seconds": seconds * 0.1 if ok else 0},
        {"name": "scratch cleanup", "status": "ok", "started_at": _at(start, seconds - 1), "seconds": 0.8},
    ]
    set_time = start - timedelta(hours=2)
    return {
        "operation": "drill", "plan": "mev-protection",
        "set": "mev-protection_" + set_time.strftime("%Y%m%d_%H%M%S"),
        "ok": ok, "status": "ok" if ok else "corrupt",
        "message": "backup set restored and checked" if ok else message,
        "started_at": _at(start, 0), "finished_at": _at(start, seconds), "seconds": seconds,
        "steps": steps, "rto_seconds": 60, "rpo_seconds": 86400,
        "set_started_at": _at(set_time, 0), "set_age_seconds": 7200.0,
        "rto_ok": seconds <= 60, "rpo_ok": True, "checks_ok": ok,
    }


@pytest.fixture(scope="module")
def report_tool():
    return _built("MEVBACKUP_DRILL_REPORT_TOOL", "mevb_drill_report_tool")


def write(tool: str, directory, report: dict, tmp_path) -> dict:
    src = tmp_path / "report-in.json"
    src.write_text(json.dumps(report))
    r = subprocess.run([tool, str(src), str(directory)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def drills(report_tool, tmp_path):
    """Three drills into one directory: passed, failed, then the current one (failed,
    with markup in its message); returns the files of the last."""
    directory = tmp_path / "drills"
    day = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
    write(report_tool, directory, drill_report(day, True, 38.5), tmp_path)
    write(report_tool, directory, drill_report(day + timedelta(days=1), False, 21.0, "check failed"), tmp_path)
    current = drill_report(day + timedelta(days=2), False, 44.2, "<script>alert(1)</script> 499 != 500")
    return write(report_tool, directory, current, tmp_path)


def test_the_textfile_passes_promtool_and_keeps_the_last_success(drills):
    prom = open(drills["prometheus"]).read()
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=prom, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout + r.stderr == ""  # no lint finding either
    first_finish = int(datetime(2026, 12, 1, 3, 0, 38, tzinfo=timezone.utc).timestamp())
    assert f'mevbackup_drill_last_success_timestamp_seconds{{plan="mev-protection"}} {first_finish}\n' in prom
    assert 'mevbackup_drill_success{plan="mev-protection"} 0\n' in prom
    assert 'mevbackup_drill_step_success{plan="mev-protection",step="postgres.main"} 0\n' in prom
    assert drills["history"] == 2 and drills["skipped"] == 0


def test_the_page_is_self_contained(drills):
    html = open(drills["html"]).read()
    for ref in ("http:", "https:", "ftp:", "file:", "//", "src=", "href=", "url(", "@import", "<script", "<link"):
        assert ref not in html, ref
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "1 of the last 3 drills passed" in html


def _screenshot(html_path: str, tmp_path) -> str:
    assert CHROMIUM, "chromium is not installed: scripts/install-deps.sh installs it"
    out = tmp_path / "report.png"
    profile = tmp_path / "chromium-profile"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
        "--disable-extensions", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars",
        "--force-device-scale-factor=1", f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--screenshot={out}", "file://" + os.path.abspath(html_path),
    ]
    env = dict(os.environ, HOME=str(tmp_path))  # nothing of the user's profile or caches
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.exists(), f"no screenshot after {elapsed:.1f} s: {r.stderr[-2000:]}"
    return str(out)


def _near(pixel, color, tolerance=24):
    return all(abs(p - c) <= tolerance for p, c in zip(pixel, color))


def test_chromium_renders_the_page_with_its_bars(drills, tmp_path):
    from PIL import Image

    with Image.open(_screenshot(drills["html"], tmp_path)) as im:
        assert im.size == WINDOW
        rgb = im.convert("RGB")
        # Every 4th pixel of every 4th row: a 300 x 400 sample, enough for shares.
        pixels = [rgb.getpixel((x, y)) for y in range(0, WINDOW[1], 4) for x in range(0, WINDOW[0], 4)]
    background = max(set(pixels), key=pixels.count)
    drawn = [p for p in pixels if p != background and p != (255, 255, 255)]
    green = sum(1 for p in pixels if _near(p, GREEN))
    red = sum(1 for p in pixels if _near(p, RED) or _near(p, (0xC9, 0x2A, 0x2A)))
    assert len(drawn) > len(pixels) // 20, f"only {len(drawn)} of {len(pixels)} pixels drawn"
    assert green > 200, f"{green} green pixels: the passed steps and drills"
    assert red > 200, f"{red} red pixels: the banner, the failed step and drills"
    assert len(set(pixels)) > 50  # text, bars and lines, not a few flat fills
