"""`csunet demo` without a display writes the overlay, the labels and the phase table."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_csunet.cli.demo import has_display
from napari_csunet.cli.main import main


@pytest.mark.parametrize(("sample", "classes"), [("superalloy", {"matrix", "secondary", "tertiary"})])
def test_headless_demo_writes_overlay_labels_and_csv(tmp_path: Path, sample: str, classes: set[str], capsys) -> None:
    assert main(["demo", "--headless", "--sample", sample, "--out", str(tmp_path), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    overlay, labels_file = sorted(tmp_path.glob("*_overlay.png")), sorted(tmp_path.glob("*_labels.tif"))
    assert len(overlay) == 1 and len(labels_file) == 1 and str(tmp_path / "summary.csv") in printed
    labels = tifffile.imread(labels_file[0])
    assert labels.min() >= 1 and labels.max() <= 3
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert {r["class"] for r in rows} == classes
    fractions = np.array([float(r["area_fraction"]) for r in rows])
    assert fractions.sum() == pytest.approx(1.0)
    # a real segmentation of the superalloy sample: secondary gamma-prime covers about half the area
    by_class = {r["class"]: float(r["area_fraction"]) for r in rows}
    assert 0.4 < by_class["secondary"] < 0.6 and 0.005 < by_class["tertiary"] < 0.1


def test_demo_without_display_falls_back_to_headless(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert not has_display()
    assert main(["demo", "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert "No display found" in capsys.readouterr().out


def test_demo_with_an_unknown_model_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not found"):
        main(["demo", "--headless", "--model", "no-such-model", "--out", str(tmp_path)])
