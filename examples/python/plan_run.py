"""Runs a whole-service plan in process, the way a service would from its scheduler: every
source backed up, the backup set written, each step printed with its duration, and the
set read back from the repository.

    python3 plan_run.py PLAN.toml

Passwords come from where the plan's sources look for them (PGPASSWORD or a passfile,
password_file keys, MEVBACKUP_REDIS_PASSWORD), never from the command line. Exits 0 when
the run succeeded and its set is complete, 1 otherwise (the failed step printed, the
error on stderr).
"""
from __future__ import annotations

import sys
from typing import List

import mevbackup


def print_steps(report: mevbackup.PlanReport) -> None:
    for s in report.steps:
        print(f"{s.status:<8} {s.name:<24} {s.seconds:6.1f} s  {s.message}")


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} PLAN.toml", file=sys.stderr)
        return 2
    try:
        with mevbackup.Plan(argv[1]) as plan:
            report = plan.run()
            print_steps(report)
            latest = next(s for s in plan.sets() if s.id == report.set_id)
    except mevbackup.Error as e:
        if e.report is not None:
            print_steps(e.report)
        print(f"plan_run.py: {e.message} ({type(e).__name__})", file=sys.stderr)
        return 1
    state = "complete" if latest.complete else "INCOMPLETE: " + latest.problem
    print(f"set {latest.id}: {len(latest.members)} members, {state}")
    return 0 if latest.complete else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
