#!/usr/bin/env bash
# The main job, end to end, on an embedded default: installs what is missing, builds,
# starts a throwaway PostgreSQL on 127.0.0.1 with a small MEV-style database, backs it
# up into a local repository with the mevbackup CLI, restores it into a new database
# and prints the row counts side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh >/dev/null
exec /usr/bin/python3 examples/demo.py --repo "${MEVBACKUP_DEMO_REPO:-$PWD/demo-backups}" --cli build/mevbackup
