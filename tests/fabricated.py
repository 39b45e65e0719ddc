"""Fabricated labelled folders in the layouts users bring (NASA's ``<split>/`` + ``<split>_annot/``).

The classes are grey levels of a smooth random field, so a small network learns them in a few
hundred steps; sizes are deliberately not multiples of 256, so padding and tiling are exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from scipy.ndimage import gaussian_filter


def label_field(shape: tuple[int, int], classes: int, seed: int) -> np.ndarray:
    """Labels 0..classes-1 from a smoothed noise field cut at its quantiles (every class present)."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.normal(size=shape), sigma=min(shape) / 16)
    edges = np.quantile(field, np.linspace(0, 1, classes + 1)[1:-1])
    return np.digitize(field, edges).astype(np.uint8)


def micrograph(labels: np.ndarray, classes: int, seed: int) -> np.ndarray:
    """A grey uint8 image whose brightness encodes the class, plus noise and an offset per image."""
    rng = np.random.default_rng(seed + 1000)
    levels = np.linspace(40, 215, classes)[labels] + rng.integers(-20, 21)
    return np.clip(levels + rng.normal(0, 8, labels.shape), 0, 255).astype(np.uint8)


def write_nasa_folder(root: Path, classes: int = 5, splits: dict[str, int] | None = None,
                      shape: tuple[int, int] = (300, 280)) -> Path:
    """NASA's layout with label maps 0..classes-1 (0 is a class there) and no dataset.json."""
    splits = splits or {"train": 2, "val": 2}
    seed = 0
    for split, count in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}_annot").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            seed += 1
            labels = label_field(shape, classes, seed)
            tifffile.imwrite(root / split / f"{split}{i}.tif", micrograph(labels, classes, seed))
            tifffile.imwrite(root / f"{split}_annot" / f"{split}{i}.tif", labels)
    return root


def tiny_model_file(folder: Path, num_classes: int = 3) -> Path:
    """A csunet-tiny model file with random weights: the superalloy classes (3), else c0..c{K-1}."""
    from napari_csunet.images.datasets import SUPER_CLASSES
    from napari_csunet.models import build_model, get_preset
    from napari_csunet.models.modelfile import ModelInfo, save_model_file

    config = get_preset("csunet-tiny").config.with_classes(num_classes)
    names = list(SUPER_CLASSES.names[:num_classes]) if num_classes <= 3 else [f"c{i}" for i in range(num_classes)]
    info = ModelInfo(config, names, preset="csunet-tiny", name=f"tiny{num_classes}")
    return save_model_file(folder / f"tiny{num_classes}.safetensors", build_model(config), info)
