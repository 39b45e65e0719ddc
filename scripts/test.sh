#!/usr/bin/env bash
# Set up the environment and run the whole test suite (GUI tests on a virtual display).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup_env.sh
run=()
[ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null 2>&1 && run=(xvfb-run -a -s "-screen 0 1600x1000x24")
exec "${run[@]}" .venv/bin/python -m pytest "$@"
