"""Few-shot protocols shared by the benchmarks: which images train, which may be used unlabelled,
which score.

The paper's EBC 4-shot (EBC2's four training images) and Super1 1-shot (``spot7_180d_3``, the
paper's Super3 image), and N-shot on any other labelled set: NASA's layout (``train/`` +
``test/``) or ``images/`` + ``masks/`` with an optional ``splits.json``. The N training images of a
set are a seeded choice, so seeds vary the data as well as the initialisation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Protocol", "protocols", "set_protocol", "samples"]

#: the labelled sets of ../shared/data/labelled and their protocol names
LABELLED_SETS = {"tbm-grains": "tbm-4shot", "tem-dislocation-loops": "tem-4shot",
                 "nanocomposite-agglomerates": "nanocomposite-4shot"}


@dataclass(frozen=True)
class Protocol:
    """Images by stem: ``train`` are labelled, ``pool`` may be used unlabelled (never a test
    image), ``test`` scores."""

    name: str
    root: Path
    train_split: str | None  # NASA layout: the split folders; None: images/ + masks/
    test_split: str | None
    train: tuple[str, ...]
    test: tuple[str, ...]
    pool: tuple[str, ...]

    @property
    def unlabelled(self) -> tuple[str, ...]:
        """The pool without the training images: what a user has besides the labels."""
        return tuple(s for s in self.pool if s not in set(self.train))


def _stems(names: Sequence[str]) -> tuple[str, ...]:
    return tuple(Path(n).stem for n in names)


def _nasa_split(root: Path, split: str) -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (root / split).glob("*.*"))) if (root / split).is_dir() else ()


def _choose(stems: Sequence[str], shots: int, seed: int) -> tuple[str, ...]:
    if len(stems) <= shots:
        return tuple(sorted(stems))
    return tuple(sorted(np.random.default_rng(seed).choice(list(stems), shots, replace=False).tolist()))


def set_protocol(root: Path, shots: int, seed: int, name: str | None = None,
                 fixed: Sequence[str] | None = None) -> Protocol:
    """N-shot on one labelled set; ``fixed`` names the training images instead of a seeded choice."""
    root = Path(root)
    name = name or f"{root.name}-{shots}shot"
    if (root / "train").is_dir() and (root / "test").is_dir():  # NASA's layout
        train_pool = _nasa_split(root, "train")
        pool = train_pool + _nasa_split(root, "val")
        train = tuple(fixed) if fixed else _choose(train_pool, shots, seed)
        return Protocol(name, root, "train", "test", train, _nasa_split(root, "test"), pool)
    if not (root / "images").is_dir():
        raise FileNotFoundError(f"{root}: expected NASA's layout (train/, test/) or images/ + masks/")
    every = tuple(sorted(p.stem for p in (root / "images").iterdir() if p.is_file()))
    splits_file = root / "splits.json"
    splits = {k: _stems(v) for k, v in json.loads(splits_file.read_text()).items()} if splits_file.exists() else {}
    labelled = splits.get("train") or next(iter(splits.values()), every)
    train = tuple(fixed) if fixed else _choose(labelled, shots, seed)
    test = splits["test"] if "train" in splits and "test" in splits else tuple(s for s in every if s not in train)
    pool = tuple(s for s in every if s not in set(test))
    return Protocol(name, root, None, None, train, tuple(test), pool)


def protocols(roots: Sequence[Path], seed: int) -> dict[str, Protocol]:
    """The standard protocols whose data is under one of ``roots`` (folders holding EBC2/, Super1/
    or the labelled sets)."""
    out: dict[str, Protocol] = {}
    for root in map(Path, roots):
        if (root / "EBC2").is_dir():
            out["ebc2-4shot"] = set_protocol(root / "EBC2", 4, seed, "ebc2-4shot")
        if (root / "Super1").is_dir():
            out["super1-1shot"] = set_protocol(root / "Super1", 1, seed, "super1-1shot", fixed=("spot7_180d_3",))
        for folder, key in LABELLED_SETS.items():
            if (root / folder).is_dir():
                out[key] = set_protocol(root / folder, 4, seed, key)
    return out


def samples(proto: Protocol, which: str) -> list:
    """The :class:`~napari_csunet.images.datasets.Sample` list of ``train``, ``test``, ``pool`` or
    ``unlabelled`` (the pool spans NASA's train and val folders)."""
    from napari_csunet.images.datasets import find_samples

    names = set(getattr(proto, which))
    if which in ("pool", "unlabelled") and proto.train_split:
        found = [s for sp in ("train", "val") if (proto.root / sp).is_dir() for s in find_samples(proto.root, sp)]
        return [s for s in found if s.image.stem in names]
    split = proto.train_split if which == "train" else proto.test_split
    return find_samples(proto.root, split, names=sorted(names)) if names else []
