"""Sample micrographs shipped with the package (NASA benchmark, MIT license: see data/LICENSE-NASA.md).

The images and their labels are separate samples, so a new user can segment a real micrograph
first and compare with NASA's ground truth afterwards. Labels follow the project's convention
(classes 1..K), with the dataset's class names and colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..images.datasets import EBC_CLASSES, SUPER_CLASSES, ClassSpec
from .layerdata import labels_layer_data

__all__ = ["DATA_DIR", "superalloy", "superalloy_labels", "ebc", "ebc_labels"]

DATA_DIR = Path(__file__).parents[1] / "data"
_SUPER = "super1_spot2_0d_0"
_EBC = "ebc2_040617-2_S127-2-0015"


def _read(name: str) -> np.ndarray:
    import tifffile

    return tifffile.imread(DATA_DIR / f"{name}.tif")


def _image(stem: str, title: str) -> list[tuple]:
    return [(_read(stem), {"name": title}, "image")]


def _labels(stem: str, spec: ClassSpec, title: str) -> list[tuple]:
    return [labels_layer_data(_read(f"{stem}_labels"), spec.names, spec.colors, f"{title} labels (NASA)")]


def superalloy() -> list[tuple]:
    """A Ni-based superalloy SEM micrograph (gamma matrix, secondary and tertiary gamma-prime)."""
    return _image(_SUPER, "superalloy spot2_0d_0")


def superalloy_labels() -> list[tuple]:
    """NASA's ground truth for the superalloy sample: matrix / secondary / tertiary."""
    return _labels(_SUPER, SUPER_CLASSES, "superalloy spot2_0d_0")


def ebc() -> list[tuple]:
    """An environmental barrier coating (EBC) cross-section after steam oxidation."""
    return _image(_EBC, "EBC 040617-2_S127-2-0015")


def ebc_labels() -> list[tuple]:
    """NASA's ground truth for the EBC sample: background / oxide / crack."""
    return _labels(_EBC, EBC_CLASSES, "EBC 040617-2_S127-2-0015")
