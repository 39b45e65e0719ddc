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
want=$(cat pyproject.toml napari.yaml hatch_build.py | sha256sum | cut -d' ' -f1)  # the install copies the manifest
# the editable install writes src/napari_csunet/napari.yaml from napari.yaml (hatch_build.py): a
# checkout that removed or changed it reinstalls too
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! cmp -s napari.yaml src/napari_csunet/napari.yaml; then
  echo "Installing napari-csunet and its dependencies into $VENV (first run: a few minutes)..."
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev,export]'
  echo "$want" > "$stamp"
fi

# Qt's xcb platform libraries, and a virtual display for napari when there is no screen (Debian)
qt_libs="libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xkb1 libxcb-shape0
  libxcb-randr0 libxcb-cursor0 libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 libdbus-1-3"
want_pkgs="$qt_libs"
[ -z "${DISPLAY:-}" ] && want_pkgs="$want_pkgs xvfb xauth"
if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  missing=""
  for p in $want_pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    echo "Installing Debian packages for Qt/napari:$missing"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
elif [ -z "${DISPLAY:-}" ] && ! command -v xvfb-run >/dev/null 2>&1; then
  echo "warning: no display and no xvfb-run; GUI tests and screenshots need one" >&2
fi
