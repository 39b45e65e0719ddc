"""Where to correct next: image regions ranked by how unsure the model is there.

The user's scarce resource is time with the brush, so the Correct tab walks them through square
regions in order of the model's uncertainty (1 - max probability, optionally plus the
disagreement between test-time-augmentation views), worst first. A region is done once the user
painted in it or accepted it as predicted; accepted regions become accepted rectangles of the
annotation store, so they train like painted pixels. Numpy only: the GUI, the live update and
``benchmarks/annotation_efficiency.py`` share it.

Uncertainty alone fails at the cold start: a model fine-tuned on two regions of background can
call a whole image background at 98.7 % confidence, so every region looks equally sure and the
queue walks through more background (measured on EBC2: the queue's curve stalled at mIoU ~0.2
while random regions reached 0.46-0.50). Given the image, a region's score therefore adds its
*novelty*: how far its intensity histogram is from the nearest region already labelled (0..1,
weighted by :data:`NOVELTY_WEIGHT`), so the queue also leads to material it has not been shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Region", "CorrectionQueue", "tile_boxes", "rank_regions", "region_features", "novelty",
           "score_with_novelty", "NOVELTY_WEIGHT", "TODO", "PAINTED", "ACCEPTED"]

#: region states: not checked yet, the user painted in it, the user accepted it as predicted
TODO, PAINTED, ACCEPTED = "todo", "painted", "accepted"
STATES = (TODO, PAINTED, ACCEPTED)
#: weight of a region's novelty (0..1) next to its uncertainty score (0..1 - 1/K)
NOVELTY_WEIGHT = 0.5
_BINS = 16


def _histograms(rows: np.ndarray | None) -> np.ndarray:
    """``rows`` as an (n, 16) float32 array of histograms (none: an empty one)."""
    return np.asarray([] if rows is None else rows, np.float32).reshape(-1, _BINS)


@dataclass
class Region:
    """One square of the image: ``box`` is [row0, col0, row1, col1] (end exclusive)."""

    box: tuple[int, int, int, int]
    score: float  # what the queue sorts by: uncertainty, plus novelty when the image is known
    state: str = TODO
    uncertainty: float | None = None  # the uncertainty part of the score (None: the score is all uncertainty)

    @property
    def done(self) -> bool:
        return self.state != TODO

    @property
    def pixels(self) -> int:
        r0, c0, r1, c1 = self.box
        return (r1 - r0) * (c1 - c0)

    @property
    def center(self) -> tuple[float, float]:
        r0, c0, r1, c1 = self.box
        return (r0 + r1) / 2, (c0 + c1) / 2


def tile_boxes(shape: Sequence[int], size: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping ``size``² boxes covering an (H, W) image; the last row/column of boxes is
    clipped at the border (a smaller box) rather than shifted over its neighbour."""
    if size < 1:
        raise ValueError(f"region size must be at least 1 px, got {size}")
    h, w = int(shape[0]), int(shape[1])
    return [(r, c, min(r + size, h), min(c + size, w)) for r in range(0, h, size) for c in range(0, w, size)]


def region_features(image: np.ndarray, boxes: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """(n, 16) intensity histograms of the boxes (sum 1 each), over the image standardised by its own
    mean and spread and clipped at 3 standard deviations (colour: the mean of the channels).

    Every ``step``-th pixel each way (about 64 a side of the smallest box: 4,096 samples per 256²
    region) keeps this to a few ms on the GUI thread even for 4096² images."""
    if np.ndim(image) not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {np.shape(image)}")
    sides = [min(r1 - r0, c1 - c0) for r0, c0, r1, c1 in boxes]
    step = max(1, min(sides, default=1) // 64)
    grey = np.asarray(image)[::step, ::step].astype(np.float32)
    if grey.ndim == 3:
        grey = grey.mean(axis=-1)
    z = (grey - np.nanmean(grey)) / max(float(np.nanstd(grey)), 1e-6)  # NaN pixels fall in bin 0
    bins = np.clip(((z + 3.0) / 6.0 * _BINS).astype(np.int64), 0, _BINS - 1)
    out = np.zeros((len(boxes), _BINS), np.float32)
    for i, (r0, c0, r1, c1) in enumerate(boxes):
        counts = np.bincount(bins[-(-r0 // step):-(-r1 // step), -(-c0 // step):-(-c1 // step)].ravel(),
                             minlength=_BINS)
        out[i] = counts / max(int(counts.sum()), 1)
    return out


def _features_by_box(image: np.ndarray, boxes: Sequence[tuple[int, int, int, int]],
                     shape: Sequence[int]) -> dict[tuple[int, int, int, int], np.ndarray]:
    """:func:`region_features` of ``boxes`` by box, for an image of the uncertainty's ``shape``."""
    if tuple(np.shape(image)[:2]) != tuple(shape):
        raise ValueError(f"image is {np.shape(image)} but uncertainty is {tuple(shape)}")
    return dict(zip(boxes, region_features(image, boxes), strict=True))


def _mostly_done(done: np.ndarray | None, box: tuple[int, int, int, int]) -> bool:
    """Half or more of the region is corrected or accepted: it counts as labelled."""
    r0, c0, r1, c1 = box
    return done is not None and bool(np.mean(done[r0:r1, c0:c1]) >= 0.5)


def novelty(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per row of ``features``: half the L1 distance to the nearest row of ``reference`` (0: the same
    histogram as a labelled region, 1: no intensity in common); 0 when nothing is labelled yet."""
    features, reference = np.asarray(features, np.float32), _histograms(reference)
    if not len(reference):
        return np.zeros(len(features), np.float32)
    return 0.5 * np.abs(features[:, None, :] - reference[None, :, :]).sum(-1).min(1)


def score_with_novelty(regions: Sequence[Region], features: Sequence[np.ndarray], reference: np.ndarray,
                       weight: float = NOVELTY_WEIGHT) -> None:
    """Set each region's score to its uncertainty plus ``weight`` times the :func:`novelty` of its
    histogram (``features``, in the same order) against ``reference``; the first call moves the
    score into :attr:`Region.uncertainty`."""
    for region, nov in zip(regions, novelty(np.asarray(features, np.float32), reference), strict=True):
        if region.uncertainty is None:
            region.uncertainty = region.score
        region.score = region.uncertainty + weight * float(nov)


def rank_regions(uncertainty: np.ndarray, size: int = 256, disagreement: np.ndarray | None = None,
                 done: np.ndarray | None = None, top: float = 0.1, image: np.ndarray | None = None,
                 reference: np.ndarray | None = None, novelty_weight: float = NOVELTY_WEIGHT) -> list[Region]:
    """Regions of ``size``² sorted worst first.

    A region's score is the mean of its most uncertain ``top`` share of pixels (a thin wrong
    boundary matters even in a region that is mostly sure), with ``disagreement`` (0..1, e.g.
    how often TTA views differ from the prediction) added per pixel. Pixels where ``done`` is True
    (already corrected or accepted) count as certain. With ``image``, ``novelty_weight`` times the
    region's :func:`novelty` is added, against ``reference`` (histograms of labelled regions, e.g.
    of other images) and the regions of this image that ``done`` mostly covers.
    """
    u = np.asarray(uncertainty, dtype=np.float32)
    if u.ndim != 2:
        raise ValueError(f"uncertainty must be one (H, W) plane, got shape {u.shape}")
    if disagreement is not None:
        if np.shape(disagreement) != u.shape:
            raise ValueError(f"disagreement is {np.shape(disagreement)} but uncertainty is {u.shape}")
        u = u + np.asarray(disagreement, dtype=np.float32)
    if done is not None:
        if np.shape(done) != u.shape:
            raise ValueError(f"done mask is {np.shape(done)} but uncertainty is {u.shape}")
        u = np.where(done, 0.0, u)
    if not 0 < top <= 1:
        raise ValueError(f"top must be in (0, 1], got {top}")
    boxes = tile_boxes(u.shape, size)
    scores = np.empty(len(boxes), np.float32)
    for i, box in enumerate(boxes):
        values = u[box[0]:box[2], box[1]:box[3]].ravel()
        n = max(1, int(round(top * values.size)))
        scores[i] = np.partition(values, values.size - n)[-n:].mean()
    regions = [Region(box, float(score)) for box, score in zip(boxes, scores, strict=True)]
    if image is not None and novelty_weight > 0:
        features = _features_by_box(image, boxes, u.shape)
        covered = _histograms([features[box] for box in boxes if _mostly_done(done, box)])
        score_with_novelty(regions, list(features.values()), np.concatenate([_histograms(reference), covered]),
                           novelty_weight)
    regions.sort(key=lambda r: -r.score)
    return regions


class CorrectionQueue:
    """Ranked regions of one image, which are done, and which one the user is looking at.

    With ``features`` (the regions' intensity histograms, :func:`region_features`) every region's
    score is its uncertainty plus :data:`NOVELTY_WEIGHT` times its novelty against the done regions
    (and ``reference``, regions labelled elsewhere), rescored each time a region becomes done, so
    the next region is the most useful one *given what has been labelled so far*.
    """

    def __init__(self, regions: Iterable[Region], shape: Sequence[int], size: int,
                 features: dict[tuple[int, int, int, int], np.ndarray] | None = None,
                 reference: np.ndarray | None = None) -> None:
        self.regions = sorted(regions, key=lambda r: -r.score)
        self.shape = (int(shape[0]), int(shape[1]))
        self.size = int(size)
        self.current: int | None = None
        self.features = features
        self.reference = _histograms(reference)
        self._restart = False  # scores changed since the user last moved: Next starts from the top
        self._rescore()

    @classmethod
    def from_uncertainty(cls, uncertainty: np.ndarray, size: int = 256, disagreement: np.ndarray | None = None,
                         done: np.ndarray | None = None, image: np.ndarray | None = None,
                         reference: np.ndarray | None = None) -> CorrectionQueue:
        """A queue ranked by :func:`rank_regions` (plus novelty when ``image`` is given); regions
        mostly covered by ``done`` start as painted."""
        regions = rank_regions(uncertainty, size, disagreement, done)
        boxes = [r.box for r in regions]
        features = None if image is None else _features_by_box(image, boxes, np.shape(uncertainty))
        for region in regions:
            if _mostly_done(done, region.box):
                region.state = PAINTED
        return cls(regions, np.shape(uncertainty), size, features, reference)

    def _rescore(self) -> None:
        """Scores from each region's uncertainty and its novelty against what is done; re-sorted,
        the current region kept."""
        if self.features is None:
            return
        done = _histograms([self.features[r.box] for r in self.regions if r.done])
        score_with_novelty(self.regions, [self.features[r.box] for r in self.regions],
                           np.concatenate([self.reference, done]))
        self._sort()
        self._restart = True

    def _sort(self) -> None:
        """Worst first by score, still pointing at the current region."""
        keep = self.region()
        self.regions.sort(key=lambda r: -r.score)
        self.current = self.regions.index(keep) if keep is not None else None

    def __len__(self) -> int:
        return len(self.regions)

    @property
    def remaining(self) -> int:
        return sum(not r.done for r in self.regions)

    @property
    def checked(self) -> int:
        return len(self.regions) - self.remaining

    def region(self) -> Region | None:
        """The region the user is looking at, if any."""
        return None if self.current is None else self.regions[self.current]

    def next(self) -> Region | None:
        """Move to the most uncertain region not done yet (None when all are done)."""
        todo = [i for i, r in enumerate(self.regions) if not r.done]
        if not todo:
            self.current = None
            return None
        later = [i for i in todo if self.current is None or self._restart or i > self.current]
        self.current = (later or todo)[0]
        self._restart = False
        return self.regions[self.current]

    def mark(self, state: str, index: int | None = None) -> Region:
        """Set a region's state (the current one by default)."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        index = self.current if index is None else index
        if index is None:
            raise ValueError("no current region: call next() first")
        region = self.regions[index]
        region.state = state
        self._rescore()
        return region

    def accept(self, index: int | None = None) -> Region:
        """The user checked the region and its prediction is right: it trains as labelled."""
        return self.mark(ACCEPTED, index)

    def mark_painted(self, changed: np.ndarray, min_pixels: int = 1) -> list[Region]:
        """Regions where at least ``min_pixels`` of ``changed`` (bool, H x W) are True become painted
        (accepted ones stay accepted); returns the regions that changed state."""
        if np.shape(changed) != self.shape:
            raise ValueError(f"changed mask is {np.shape(changed)} but the queue's image is {self.shape}")
        out = []
        for region in self.regions:
            r0, c0, r1, c1 = region.box
            if region.state == TODO and np.count_nonzero(changed[r0:r1, c0:c1]) >= min_pixels:
                region.state = PAINTED
                out.append(region)
        if out:
            self._rescore()
        return out

    def accepted_boxes(self) -> list[list[int]]:
        """Accepted regions as the annotation store's rectangles ([row0, col0, row1, col1])."""
        return [list(r.box) for r in self.regions if r.state == ACCEPTED]

    def rerank(self, uncertainty: np.ndarray, disagreement: np.ndarray | None = None,
               image: np.ndarray | None = None) -> None:
        """New uncertainties from a new prediction (novelty as before; ``image`` adds it to a queue
        made without one); done regions keep their state, the current one is kept if it is still
        to do, else the queue starts again from the top."""
        fresh = {r.box: r.score for r in rank_regions(uncertainty, self.size, disagreement)}
        if set(fresh) != {r.box for r in self.regions}:
            raise ValueError(f"the new uncertainty ({np.shape(uncertainty)}) does not fit this queue's regions")
        if image is not None and self.features is None and np.shape(image)[:2] == self.shape:
            self.features = _features_by_box(image, [r.box for r in self.regions], self.shape)
        for region in self.regions:
            region.score, region.uncertainty = fresh[region.box], None
        if self.region() is not None and self.region().done:
            self.current = None  # the queue starts again from the top
        if self.features is None:
            self._sort()
        else:
            self._rescore()  # adds the novelty, then sorts
        self._restart = False

    def summary(self) -> str:
        """For the status line: how much is left."""
        accepted = sum(r.state == ACCEPTED for r in self.regions)
        return (f"{self.remaining} of {len(self)} regions left to check "
                f"({self.checked - accepted} painted, {accepted} accepted)")
