"""The package installs, starts cheaply, and its CLI answers from a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _manifest_lookups() -> list[str]:
    """Code that imports each module the manifest names and looks its name up (the widgets aside: _qt)."""
    commands = yaml.safe_load((ROOT / "napari.yaml").read_text())["contributions"]["commands"]
    names = [c["python_name"].split(":") for c in commands if "._qt." not in c["python_name"]]
    return [f"import {module} as m; m.{attr}" for module, attr in names]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import napari_csunet",
        "import napari_csunet.models.registry, napari_csunet.models.modelfile, napari_csunet.models.catalog",
        "import napari_csunet.engine, napari_csunet.images, napari_csunet.measure, napari_csunet.loop, "
        "napari_csunet.cli, napari_csunet.plugin, napari_csunet.weights",
        "import napari_csunet.cli.main; napari_csunet.cli.main.build_parser()",
        "from npe2 import PluginManager; pm = PluginManager(); pm.discover(include_npe1=False); "
        "assert pm.get_manifest('napari-csunet')",
        *_manifest_lookups(),
    ],
)
def test_importing_the_plugin_imports_neither_torch_nor_qt(code: str) -> None:
    loaded = _modules_after(code)
    heavy = {m for m in loaded
             if m.split(".")[0] in {"torch", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "timm", "napari"}}
    assert not heavy, f"{code!r} imported {sorted(heavy)[:5]}"


def test_manifest_validates() -> None:
    out = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-csunet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_models_json_lists_presets_with_parameter_counts() -> None:
    out = subprocess.run([sys.executable, "-m", "napari_csunet.cli.main", "models", "--json"],
                         capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    by_name = {p["name"]: p for p in data["presets"]}
    assert {"csunet-r50-swint", "csunet-r50-swint-orig", "csunet-effb4-swint", "csunet-effb4-swint-orig",
            "unet-r50", "swinunet-t", "csunet-tiny"} <= set(by_name)
    assert 53.5e6 < by_name["csunet-r50-swint"]["params"] < 59.1e6
    assert "microlite" in by_name["csunet-r50-swint"]["swin_sources"]


def test_wheel_ships_manifest_backend_and_data(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert zipfile.ZipFile(wheel).read("napari_csunet/napari.yaml") == (ROOT / "napari.yaml").read_bytes()
    assert "csunet_train/__init__.py" in names and "csunet_train/recipes/super3.yaml" in names
    assert any(n.startswith("napari_csunet/data/") and n.endswith(".tif") for n in names)
    assert not any(n.startswith("training/") or n.endswith("/__init__.py") and n.startswith("training") for n in names)
