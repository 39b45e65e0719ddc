"""Pack the shared data compactly for a lent GPU machine (its working tree travels, 64 MiB at most).

    python scripts/pack_gpu_data.py pretrain OUT_DIR   # unlabelled corpus + NASA train/val images
    python scripts/pack_gpu_data.py labelled OUT_DIR   # NASA Super1/EBC2 (NASA's layout) + two labelled sets

NASA's folders keep their layout (``split/`` + ``split_annot/``); every file becomes a lossless PNG,
the micrographs one channel (the Super images are grey stored as RGB), the masks as they are.
``ti64-sem`` (60 MB of 604-pixel PNGs) is downscaled 2x by exact 2x2 area averaging, as the corpus README did for its other large folders; the corpus files that
overlap the labelled benchmark sets (``nanocomposite-sem/seg_*``, ``mlography-optical``) are left out.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _grey(image: np.ndarray) -> np.ndarray:
    return image[..., 0] if image.ndim == 3 else image


def _read(path: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(path)


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, optimize=True)


def pack_nasa(out: Path) -> None:
    """NASA's layout kept (``split/`` + ``split_annot/``), every file a lossless PNG; images one channel."""
    for path in sorted((SHARED / "nasa").glob("*/*/*.tif")):
        array = np.asarray(Image.open(path)) if path.parent.name.endswith("_annot") else _grey(_read(path))
        _save(array, out / path.relative_to(SHARED / "nasa").with_suffix(".png"))


def pack_pretrain(out: Path) -> None:
    corpus = SHARED / "corpus"
    for path in sorted((corpus / "ti64-sem").glob("*.png")):
        a = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        half = a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        _save(np.round(half).astype(np.uint8), out / "corpus" / "ti64-sem" / path.name)
    for folder, pattern in (("tem-ti-anneal", "*.png"), ("nanocomposite-sem", "orig_*.png")):
        for path in sorted((corpus / folder).glob(pattern)):
            (out / "corpus" / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, out / "corpus" / folder / path.name)
    for split in ("train", "val"):  # never a test split
        for path in sorted((SHARED / "nasa").glob(f"*/{split}/*.tif")):
            _save(_grey(_read(path)), out / "nasa" / f"{path.parts[-3]}-{split}" / f"{path.stem}.png")


def pack_labelled(out: Path) -> None:
    pack_nasa(out)
    for name in ("tbm-grains", "tem-dislocation-loops"):
        shutil.copytree(SHARED / "labelled" / name, out / name, dirs_exist_ok=True)


if __name__ == "__main__":
    kind, dest = sys.argv[1], Path(sys.argv[2])
    {"pretrain": pack_pretrain, "labelled": pack_labelled}[kind](dest)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{dest}: {size / 2**20:.1f} MiB")
