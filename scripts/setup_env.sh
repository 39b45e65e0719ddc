#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv; idempotent and quick when current.
# Usage: scripts/setup_env.sh            (sourced by scripts/demo.sh and scripts/test.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
VENV=${CSUNET_VENV:-.venv}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "napari-csunet needs Python 3.10 or newer ($PY is $("$PY" --version 2>&1))" >&2
  exit 1
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"

stamp="$VENV/.csunet-installed"
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "Installing napari-csunet and its dependencies into $VENV (first run: a few minutes)..."
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi

# a virtual display for napari when there is no screen (Debian: xvfb)
if [ -z "${DISPLAY:-}" ] && ! command -v xvfb-run >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq xvfb xauth >/dev/null
  else
    echo "warning: no display and no xvfb-run; GUI tests and screenshots need one" >&2
  fi
fi
