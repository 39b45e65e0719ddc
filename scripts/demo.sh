#!/usr/bin/env bash
# Set up the environment and run the main job: napari with the plugin docked on a sample micrograph,
# segmented by the matching starter model (headless without a display: writes overlay, labels, CSV).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup_env.sh
exec .venv/bin/csunet demo "$@"
