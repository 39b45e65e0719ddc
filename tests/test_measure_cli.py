"""`csunet segment` measures in physical units, leaves the data bar out and writes the HTML report."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_csunet.cli.main import main
from napari_csunet.images.pixelsize import read_pixel_size

FEI_NM = 4.1  # pixel width the fabricated FEI file states


@pytest.fixture()
def sem_folder(tmp_path, sem_image) -> Path:
    """An FEI SEM file with a 60-row data bar, and a bar-free ImageJ-calibrated crop."""
    folder = tmp_path / "in"
    folder.mkdir()
    fei = f"[User]\r\nDate=11/27/2026\r\n[Scan]\r\nPixelWidth={FEI_NM}e-09\r\nPixelHeight={FEI_NM}e-09\r\n"
    tifffile.imwrite(folder / "sem.tif", sem_image[300:, :256], extratags=[(34682, "s", 0, fei, True)])
    tifffile.imwrite(folder / "plain.tif", sem_image[:192, 256:], imagej=True, resolution=(4.0, 4.0),
                     metadata={"unit": "um"})
    return folder


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_units_databar_and_report(sem_folder, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(sem_folder), "--model", str(model_file), "--out", str(out), "--tile", "256",
               "--report", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["segmented"] == 2
    by_name = {Path(r["input"]).name: r for r in result["images"]}
    assert by_name["sem.tif"]["databar"] == {"side": "bottom", "rows": 60} and by_name["plain.tif"]["databar"] is None
    assert math.isclose(by_name["sem.tif"]["pixel_size_um"], FEI_NM / 1000) and by_name["plain.tif"]["pixel_size_um"] == 0.25
    labels = tifffile.imread(out / "sem_labels.tif")
    assert labels.shape == (272, 256) and (labels[-60:] == 0).all() and (labels[:-60] > 0).all()
    assert math.isclose(read_pixel_size(out / "sem_labels.tif").x_um, FEI_NM / 1000)  # kept in the labels file

    rows = _csv(out / "summary.csv")
    sem = [r for r in rows if r["image"] == "sem.tif"]
    assert {r["analysed_px"] for r in sem} == {str(212 * 256)} and {r["databar_rows"] for r in sem} == {"60"}
    assert sum(float(r["area_fraction"]) for r in sem) == pytest.approx(1.0)
    assert sum(int(r["pixels"]) for r in sem) == 212 * 256  # the bar is in no class
    for r in rows:
        size = float(r["pixel_size_um"])
        for px, um, power in (("mean_eq_diameter_px", "mean_eq_diameter_um", 1), ("mean_area_px", "mean_area_um2", 2),
                              ("mean_intercept_px", "mean_intercept_um", 1)):
            if r[px]:
                assert float(r[um]) == pytest.approx(float(r[px]) * size ** power, rel=1e-9)
    particles = _csv(out / "particles.csv")
    assert particles, "a random model still finds regions"
    for p in particles:
        size = FEI_NM / 1000 if p["image"] == "sem.tif" else 0.25
        assert float(p["eq_diameter_um"]) == pytest.approx(float(p["eq_diameter_px"]) * size, rel=1e-9)
        assert float(p["area_px"]) >= 9
    folder = _csv(out / "folder.csv")
    assert [r["images"] for r in folder] == ["2"] * 3
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 4 + 3 * 2  # folder: fractions, ⌀, Feret, aspect; per image 3
    assert "FEI/Thermo metadata" in page and "60 rows at the bottom, left out" in page and "ImageJ metadata" in page


def test_pixel_size_option_and_no_databar(sem_folder, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(sem_folder / "sem.tif"), "--model", str(model_file), "--out", str(out), "--tile", "256",
               "--pixel-size", "0.02", "--no-databar", "--min-size", "1", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["images"][0]["pixel_size_um"] == 0.02 and result["images"][0]["databar"] is None
    assert (tifffile.imread(out / "sem_labels.tif") > 0).all()
    rows = _csv(out / "summary.csv")
    assert {r["pixel_size_source"] for r in rows} == {"given on the command line"} and {r["min_area_px"] for r in rows} == {"1"}
    assert not (out / "report.html").exists()
    assert np.isclose(sum(float(r["area_fraction"]) for r in rows), 1.0)


@pytest.mark.parametrize(("extra", "message"), [(["--matrix", "gamma"], "is not one of the model's classes"),
                                                (["--pixel-size", "-1"], "must be a positive number")])
def test_bad_measurement_options_are_one_clear_line(sem_folder, model_file, tmp_path, capsys, extra, message):
    args = ["segment", str(sem_folder), "--model", str(model_file), "--out", str(tmp_path / "o"), *extra]
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse refuses the value itself
        rc = exc.code
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o" / "summary.csv").exists()
