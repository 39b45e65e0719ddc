"""Pixel size from every metadata flavour, written the way the instruments write it (fabricated)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_csunet.images.pixelsize import (
    PixelSize,
    calibrate,
    read_pixel_size,
    recall_calibration,
    remember_calibration,
    to_um,
)

IMG = np.zeros((16, 20), np.uint8)


def _imagej(p: Path) -> None:
    tifffile.imwrite(p, IMG, imagej=True, resolution=(1 / 0.25, 1 / 0.25), metadata={"unit": "um"})


def _imagej_micron_escape(p: Path) -> None:  # ImageJ itself writes "unit=\u00B5m" with a literal escape
    tifffile.imwrite(p, IMG, imagej=True, resolution=(1 / 0.5, 1 / 0.5), metadata={"unit": "\\u00B5m"})


def _ome(p: Path) -> None:
    tifffile.imwrite(p, IMG, ome=True, metadata={"axes": "YX", "PhysicalSizeX": 12.5, "PhysicalSizeXUnit": "nm",
                                                "PhysicalSizeY": 25.0, "PhysicalSizeYUnit": "nm"})


def _fei(p: Path) -> None:
    text = "[User]\r\nDate=11/27/2026\r\n[Scan]\r\nPixelWidth=4.1e-09\r\nPixelHeight=4.1e-09\r\n[Beam]\r\nHV=5000\r\n"
    tifffile.imwrite(p, IMG, extratags=[(34682, "s", 0, text, True)])


def _zeiss(p: Path) -> None:
    text = "0\r\nAP_PIXEL_SIZE\r\nPixel Size = 7.8 nm\r\nAP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = 7.8 nm\r\n"
    tifffile.imwrite(p, IMG, extratags=[(34118, "s", 0, text, True)])


def _tescan(p: Path) -> None:
    text = b"\x00\x00[MAIN]\r\nDevice=MIRA3\r\nPixelSizeX=2.0e-08\r\nPixelSizeY=2.0e-08\r\n[SEM]\r\nHV=15000\r\n"
    tifffile.imwrite(p, IMG, extratags=[(50431, 1, len(text), text, True)])


def _cm_resolution(p: Path) -> None:
    tifffile.imwrite(p, IMG, resolution=(2000.0, 2000.0), resolutionunit="CENTIMETER")  # 5 µm


def _jeol(p: Path) -> None:
    tifffile.imwrite(p, IMG)
    p.with_suffix(".txt").write_text("$CM_FORMAT JEOL/SEM\n$CM_MAG 5000\n$$SM_MICRON_BAR 120\n$$SM_MICRON_MARKER 3um\n")


def _hitachi(p: Path) -> None:
    tifffile.imwrite(p, IMG)
    p.with_suffix(".txt").write_text("[SemImageFile]\nInstructName=SU8230\nPixelSize=9.921875\nMagnification=10000\n")


@pytest.mark.parametrize(("write", "x_um", "y_um", "source"), [
    (_imagej, 0.25, 0.25, "ImageJ"),
    (_imagej_micron_escape, 0.5, 0.5, "ImageJ"),
    (_ome, 0.0125, 0.025, "OME"),
    (_fei, 0.0041, 0.0041, "FEI"),
    (_zeiss, 0.0078, 0.0078, "Zeiss"),
    (_tescan, 0.02, 0.02, "TESCAN"),
    (_cm_resolution, 5.0, 5.0, "TIFF resolution"),
    (_jeol, 0.025, 0.025, "JEOL"),
    (_hitachi, 0.009921875, 0.009921875, "Hitachi"),
])
def test_pixel_size_from_each_flavour(tmp_path, write, x_um, y_um, source):
    path = tmp_path / "micrograph.tif"
    write(path)
    found = read_pixel_size(path)
    assert found is not None, source
    assert math.isclose(found.x_um, x_um, rel_tol=1e-6) and math.isclose(found.y_um, y_um, rel_tol=1e-6)
    assert source in found.source


@pytest.mark.parametrize("kwargs", [{}, {"resolution": (72.0, 72.0), "resolutionunit": "INCH"},
                                    {"resolution": (1.0, 1.0), "resolutionunit": "NONE"}])
def test_no_pixel_size_when_the_file_says_nothing_physical(tmp_path, kwargs):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, IMG, **kwargs)
    assert read_pixel_size(path) is None


def test_damaged_metadata_warns_and_falls_back_to_the_sidecar(tmp_path):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, IMG, ome=True)
    raw = path.read_bytes().replace(b"<Pixels", b"<Pix<els")  # broken OME-XML, same length
    path.write_bytes(raw)
    path.with_suffix(".txt").write_text("PixelSize=2.0\n")
    with pytest.warns(UserWarning, match="bad.tif"):
        found = read_pixel_size(path)
    assert found is not None and math.isclose(found.x_um, 0.002)


@pytest.mark.parametrize(("value", "unit", "um"), [(1, "mm", 1000), (250, "nm", 0.25), (2, "µm", 2),
                                                   (3, "micron", 3), (10, "Å", 0.001), (1e-6, "m", 1)])
def test_units(value, unit, um):
    assert math.isclose(to_um(value, unit), um)


def test_unknown_unit_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="unknown length unit"):
        to_um(1, "furlong")
    with pytest.raises(ValueError, match="positive"):
        PixelSize(0.0, 1.0, "x")
    with pytest.raises(ValueError, match="line"):
        calibrate(0, 10)


def test_calibration_from_a_scale_bar_is_remembered_per_image(tmp_path):
    size = calibrate(200.0, 10.0, "µm")
    assert math.isclose(size.x_um, 0.05) and "calibrated" in size.source
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    remember_calibration(a, size)
    assert recall_calibration(a) == size
    assert recall_calibration(b) is None


@pytest.mark.parametrize(("meta", "expected"), [
    ({"pixel_size_um": 0.004}, 0.004),
    ({"scale": (0.5, 0.5), "units": ("micrometer", "micrometer")}, 0.5),  # a napari layer in µm
    ({"scale": (2.0, 2.0), "units": ("pixel", "pixel")}, None),
    ({}, None),
])
def test_label_files_keep_the_pixel_size(tmp_path, meta, expected):
    from napari_csunet.plugin.writer import write_labels

    (path,) = write_labels(str(tmp_path / "x_labels.tif"), np.ones((8, 8), np.uint8), meta)
    found = read_pixel_size(path)
    assert (found is None) if expected is None else math.isclose(found.x_um, expected, rel_tol=1e-6)


def test_reopened_labels_carry_their_scale(tmp_path):
    from napari_csunet.plugin.reader import read_labels
    from napari_csunet.plugin.writer import write_labels

    (path,) = write_labels(str(tmp_path / "y_labels.tif"), np.ones((8, 8), np.uint8), {"pixel_size_um": 0.25})
    ((_, kwargs, _),) = read_labels(path)
    assert kwargs["scale"] == pytest.approx((0.25, 0.25)) and kwargs["units"] == ("um", "um")
    (plain,) = write_labels(str(tmp_path / "z_labels.tif"), np.ones((8, 8), np.uint8), {})
    assert "scale" not in read_labels(plain)[0][1]
