"""Sample micrographs shipped with the package (NASA benchmark, MIT license: see data/LICENSE-NASA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "data"


def _read(name: str) -> np.ndarray:
    import tifffile

    return tifffile.imread(DATA_DIR / name)


def superalloy() -> list[tuple]:
    """A Ni-based superalloy SEM micrograph (gamma matrix with secondary/tertiary gamma-prime)."""
    return [(_read("super1_spot2_0d_0.tif"), {"name": "superalloy spot2_0d_0"}, "image")]
