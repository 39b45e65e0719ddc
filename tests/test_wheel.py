"""The wheel stands alone: built from the tree, installed into a fresh venv, used from a folder with
no repository around it (no network: the dependencies come from this environment by a .pth file)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _fresh_venv_with_wheel(tmp: Path) -> Path:
    """A venv without pip or the repository: the wheel, plus this environment's packages as deps."""
    pytest.importorskip("hatchling")
    subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp / "dist")],
                   cwd=ROOT, check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # a path in a .pth file is not a site dir: the editable install's own .pth hooks stay inactive
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--no-compile", "-q", str(wheel)], check=True, capture_output=True)
    return python.parent


def _data_root(tmp: Path, data_dir: Path) -> Path:
    """Super1 in NASA's layout with super3's one training image (a real Super1 micrograph)."""
    src = data_dir / "nasa" / "Super1"
    root = tmp / "data"
    for split, name in (("train", "spot7_180d_3"), ("val", "spot1_0d_0")):
        (root / "Super1" / split).mkdir(parents=True)
        (root / "Super1" / f"{split}_annot").mkdir(parents=True)
        shutil.copy(src / "val" / "spot1_0d_0.tif", root / "Super1" / split / f"{name}.tif")
        shutil.copy(src / "val_annot" / "spot1_0d_0_mask.tif", root / "Super1" / f"{split}_annot" / f"{name}_mask.tif")
    return root


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_lists_models_runs_the_demo_trains_recipes_and_validates(tmp_path: Path, data_dir: Path) -> None:
    bin_dir = _fresh_venv_with_wheel(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CSUNET_DATA_ROOT")}

    def run(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([str(bin_dir / "csunet"), *args], cwd=work, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    where = subprocess.run([str(bin_dir / "python"), "-c", "import napari_csunet, csunet_train; "
                            "print(napari_csunet.__file__); print(csunet_train.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(tmp_path / "venv") for p in where), where
    listed = json.loads(run("models", "--json", "--no-params").stdout)
    assert {"starter-superalloy", "starter-ebc"} <= {m["name"] for m in listed["model_files"]}
    run("demo", "--headless", "--out", "demo", "--device", "cpu")
    assert (work / "demo" / "summary.csv").is_file()
    refused = subprocess.run([str(bin_dir / "csunet"), "train", "--recipe", "super3"], cwd=work, env=env,
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "--data-root" in refused.stdout + refused.stderr
    root = str(_data_root(tmp_path, data_dir))
    run("train", "--recipe", "super3", "--data-root", root, "--steps", "3",
        "--preset", "csunet-tiny", "--weights", "cnn=,swin=", "--batch-size", "1", "--num-workers", "0",
        "--device", "cpu")
    assert (work / "runs" / "super3.safetensors").is_file()  # outside a checkout: under the current folder
    # a starter recipe starts from the shipped micro-tiny by name, and its model is the user's own
    run("train", "--recipe", "starter-superalloy", "--data-root", root, "--steps", "3", "--batch-size", "1",
        "--num-workers", "0", "--device", "cpu", "--out", "starter.safetensors")
    assert (work / "starter.safetensors").is_file()
    validated = subprocess.run([str(bin_dir / "python"), "-m", "npe2", "validate", "napari-csunet"], cwd=work, env=env,
                               capture_output=True, text=True)
    assert validated.returncode == 0, validated.stdout + validated.stderr
