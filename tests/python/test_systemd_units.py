"""The systemd units of examples/cli/systemd, configured as the install configures them
(ExecStart= naming the CLI, here the built one), pass `systemd-analyze verify` without a
warning; the run timer fires daily at the runbook's time, the drill timer monthly, as the
cron lines of docs/operations.md do; and the failure unit hands the failed unit's name to
/etc/mevbackup/on-failure."""
import os
import re
import shlex
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "examples" / "cli" / "systemd"
PLAN = "mev-protection"
RUN, DRILL = f"mevbackup-run@{PLAN}", f"mevbackup-drill@{PLAN}"
FAILURE = f"mevbackup-failure@{RUN}.service.service"
INSTANCES = [f"{RUN}.service", f"{RUN}.timer", f"{DRILL}.service", f"{DRILL}.timer", FAILURE]
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def configure(dest: Path, bindir: Path) -> Path:
    """The units as `cmake --install` and meson install them, with @BINDIR@ = bindir."""
    dest.mkdir(parents=True)
    for src in SOURCES.iterdir():
        if src.name == "meson.build":
            continue
        name = src.name[:-3] if src.name.endswith(".in") else src.name
        (dest / name).write_text(src.read_text().replace("@BINDIR@", str(bindir)))
    return dest


@pytest.fixture
def units(tmp_path, tools):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mevbackup").symlink_to(os.path.abspath(tools["cli"]))
    # Documentation=man:mevbackup(1) is checked too: the page the build installs.
    man1 = tmp_path / "man" / "man1"
    man1.mkdir(parents=True)
    with open(man1 / "mevbackup.1", "w") as page:
        subprocess.run([tools["cli"], "--help-man"], stdout=page, check=True, timeout=60)
    return configure(tmp_path / "units", bindir)


def verify(unit_dir: Path, *names: str):
    """systemd-analyze verify's exit status and the lines of its output about our units."""
    env = dict(os.environ, MANPATH=str(unit_dir.parent / "man"), SYSTEMD_LOG_COLOR="0")
    r = subprocess.run([ANALYZE, "verify", *(str(unit_dir / n) for n in names)], env=env,
                       capture_output=True, text=True, timeout=300)
    about_us = [line for line in (r.stdout + r.stderr).splitlines() if "mevbackup" in line]
    return r.returncode, about_us


def test_systemd_analyze_is_there():
    # Debian's systemd package ships it; without it these tests would prove nothing.
    assert os.access(ANALYZE, os.X_OK), "systemd-analyze not found (package systemd)"


def test_the_units_verify_without_a_warning(units):
    assert verify(units, *INSTANCES) == (0, [])


def test_the_services_run_the_cli_on_the_plan_of_their_instance(units):
    run = (units / "mevbackup-run@.service").read_text()
    drill = (units / "mevbackup-drill@.service").read_text()
    cli = units.parent / "bin" / "mevbackup"
    assert f"\nExecStart={cli} run --plan /etc/mevbackup/%i.toml\n" in run
    assert f"\nExecStart={cli} drill --plan /etc/mevbackup/%i.toml --report /var/lib/mevbackup/drill/%i\n" in drill
    assert "\nStateDirectory=mevbackup/drill/%i\n" in drill
    for text in (run, drill):
        assert "\nType=oneshot\n" in text
        assert "\nOnFailure=mevbackup-failure@%n.service\n" in text
        assert "\nEnvironmentFile=-/etc/mevbackup/%i.env\n" in text


@pytest.mark.parametrize("broken", [
    pytest.param(("mevbackup-run@.timer", "\nPersistent=", "\nPersistant=", "Unknown key 'Persistant'"), id="misspelt-key"),
    pytest.param(("mevbackup-drill@.timer", "\nOnCalendar=*-*-01", "\nOnCalendar=*-*-41", "Failed to parse calendar"), id="bad-calendar"),
    pytest.param(("mevbackup-run@.service", "/mevbackup run", "/mevbackupp run", "is not executable"), id="missing-binary"),
    pytest.param(("mevbackup-failure@.service", "\nType=oneshot", "\nType=oneshoot", "Failed to parse service type"), id="bad-value"),
])
def test_a_broken_unit_is_caught(units, broken):
    # The check above can fail: each of these mistakes shows in what it looks at.
    name, old, new, message = broken
    text = (units / name).read_text()
    assert old in text
    (units / name).write_text(text.replace(old, new, 1))
    rc, about_us = verify(units, *INSTANCES)
    assert rc != 0 or about_us, (rc, about_us)
    assert any(message in line for line in about_us), about_us


def on_calendar(unit_dir: Path, timer: str) -> str:
    values = re.findall(r"^OnCalendar=(.+)$", (unit_dir / timer).read_text(), re.M)
    assert len(values) == 1, values
    return values[0]


def elapses(expr: str, n: int, base: str = "2027-01-15 12:00:00"):
    """The next n times the calendar expression elapses after base, in UTC."""
    r = subprocess.run([ANALYZE, "calendar", f"--iterations={n}", f"--base-time={base}", expr],
                       env=dict(os.environ, TZ="UTC"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    times = re.findall(r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", r.stdout)
    assert len(times) == n, r.stdout
    return [datetime.strptime(t, "%Y-%m-%d %H:%M:%S") for t in times]


def test_the_run_timer_fires_daily_at_the_runbooks_time(units):
    times = elapses(on_calendar(units, "mevbackup-run@.timer"), 40)
    assert {t.time().isoformat() for t in times} == {"02:00:00"}
    assert {b - a for a, b in zip(times, times[1:])} == {timedelta(days=1)}


def test_the_drill_timer_fires_monthly_after_the_backup(units):
    times = elapses(on_calendar(units, "mevbackup-drill@.timer"), 13)
    gaps = [(b - a).days for a, b in zip(times, times[1:])]
    assert all(28 <= g <= 31 for g in gaps), gaps
    assert len({(t.year, t.month) for t in times}) == 13
    assert all(t.time().isoformat() > "02:00:00" for t in times)


def test_both_timers_catch_up_after_downtime(units):
    for timer in ("mevbackup-run@.timer", "mevbackup-drill@.timer"):
        text = (units / timer).read_text()
        assert "\nPersistent=true\n" in text, timer
        assert "\nWantedBy=timers.target\n" in text, timer


def plan_crontab():
    """{command: (minute, hour, day of month, month, weekday)} of the cron equivalent in docs/operations.md."""
    text = (ROOT / "docs" / "operations.md").read_text()
    block = re.search(r"<!-- plan-crontab:begin -->\n```cron\n(.*?)```\n<!-- plan-crontab:end -->", text, re.S)
    assert block, "docs/operations.md lacks the plan crontab markers"
    jobs = {}
    for line in block.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 5)
        assert "%" not in fields[5], f"cron turns % into a newline: {line!r}"
        jobs[fields[5]] = tuple(fields[:5])
    return jobs


def test_the_cron_lines_of_the_docs_keep_the_timers_schedule(units):
    jobs = plan_crontab()
    run = next(s for c, s in jobs.items() if f"mevbackup run --plan /etc/mevbackup/{PLAN}.toml" in c)
    drill = next(s for c, s in jobs.items() if f"mevbackup drill --plan /etc/mevbackup/{PLAN}.toml" in c)
    first_run = elapses(on_calendar(units, "mevbackup-run@.timer"), 1)[0]
    first_drill = elapses(on_calendar(units, "mevbackup-drill@.timer"), 1)[0]
    assert run == (str(first_run.minute), str(first_run.hour), "*", "*", "*")
    assert drill == (str(first_drill.minute), str(first_drill.hour), str(first_drill.day), "*", "*")


def failure_command(unit_dir: Path, failed: str, hook: Path):
    """The failure unit's ExecStart= as systemd runs it for the failed unit (specifier and
    $$ resolved), with the hook at a path of the test's own."""
    line = re.search(r"^ExecStart=(.+)$", (unit_dir / "mevbackup-failure@.service").read_text(), re.M).group(1)
    assert "/etc/mevbackup/on-failure" in line
    line = line.replace("/etc/mevbackup/on-failure", str(hook))
    return [arg.replace("$$", "$").replace("%i", failed) for arg in shlex.split(line)]


def test_the_failure_unit_hands_the_failed_unit_to_the_hook(units, tmp_path):
    hook, out = tmp_path / "on-failure", tmp_path / "hook.out"
    failed = f"{RUN}.service"
    env = dict(os.environ, MONITOR_SERVICE_RESULT="exit-code", MONITOR_EXIT_STATUS="11")
    # No hook: the failure is logged and the unit succeeds.
    r = subprocess.run(failure_command(units, failed, hook), env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{failed} failed (exit-code, status 11); see journalctl -u {failed}\n"
    # A file that is not executable is no hook either.
    hook.write_text(f'#!/bin/sh\necho "$1 $MONITOR_EXIT_STATUS" > {out}\nexit 3\n')
    r = subprocess.run(failure_command(units, failed, hook), env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not out.exists(), r.stderr
    # An executable hook gets the unit's name and systemd's MONITOR_* variables; its exit
    # status is the unit's.
    hook.chmod(0o700)
    r = subprocess.run(failure_command(units, failed, hook), env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert out.read_text() == f"{failed} 11\n"
