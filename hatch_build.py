"""Build hook: ``napari.yaml`` at the repository's top level is the one manifest; the package gets it.

Why: npe2 reads the entry point ``napari_csunet:napari.yaml`` from the package's folder. A wheel gets
the file force-included there. An editable install imports the package from ``src/``, so the hook
writes the file there at every (re)install: an untracked, git-ignored build output, like a compiled
file. ``scripts/setup_env.sh`` reinstalls when the manifest changes and ``tests/test_manifest.py``
fails on a stale one, so it cannot drift unnoticed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

MANIFEST = "napari.yaml"
IN_PACKAGE = "napari_csunet/napari.yaml"


class ManifestHook(BuildHookInterface):
    """Put the top-level manifest where npe2 looks for it, for wheel and editable builds."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        source = Path(self.root) / MANIFEST
        if version == "editable":
            shutil.copyfile(source, Path(self.root) / "src" / IN_PACKAGE)
        else:
            build_data["force_include"][str(source)] = IN_PACKAGE
