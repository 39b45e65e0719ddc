"""The SEM data bar: the instrument's strip of text and scale bar under (or over) the micrograph.

It is not material, so it is left out of segmentation and of every statistic (label 0, "not
analysed"). Detection relies on what every instrument's bar has and a micrograph has not: full-
width rows of one exact grey value (the bar's background, margins or separator line), touching
the image edge, followed by rows that are still mostly that value (text and scale bar on it).
Exact equality is deliberate: a dark or saturated region of a real micrograph is noisy and never
flat to the grey level (NASA's EBC cross-sections reach 53 % of a row at most), while a bar is.
A JPEG-compressed bar keeps a few exactly flat rows (its margins); its text rows are allowed to
differ from the background by a little. When a bar is missed, set it by hand (``DataBar``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

__all__ = ["DataBar", "detect_databar", "clear_databar", "predict_outside", "row_axis"]

#: a row is "flat" when at least this share of its pixels has one exact value
FLAT = 0.9
#: a row belongs to the bar when at least this share is the bar's background value
ON_BAR = 0.25
#: rows at the very image edge that may be junk before the bar starts
EDGE_ROWS = 3
#: text rows may differ from the bar's background by this share of the image's grey range (JPEG)
TOLERANCE = 0.008
#: columns looked at in a row (wider images are subsampled)
_COLUMNS = 4096


@dataclass(frozen=True)
class DataBar:
    """``rows`` image rows at the ``side`` edge are the instrument's strip."""

    side: Literal["bottom", "top"]
    rows: int

    def __post_init__(self) -> None:
        if self.side not in ("bottom", "top"):
            raise ValueError(f"a data bar is at the 'bottom' or the 'top', not {self.side!r}")
        if int(self.rows) < 0:
            raise ValueError(f"a data bar has a non-negative number of rows, not {self.rows}")

    def bar_rows(self, height: int) -> slice:
        """The rows of the bar in an image of ``height`` rows."""
        rows = min(int(self.rows), height)
        return slice(height - rows, height) if self.side == "bottom" else slice(0, rows)

    def analysed_rows(self, height: int) -> slice:
        """The rows of material (everything but the bar)."""
        rows = min(int(self.rows), height)
        return slice(0, height - rows) if self.side == "bottom" else slice(rows, height)

    def boundary(self, height: int) -> int:
        """The row index of the edge between material and bar (for drawing it)."""
        return height - min(int(self.rows), height) if self.side == "bottom" else min(int(self.rows), height)

    def to_dict(self) -> dict[str, Any]:
        return {"side": self.side, "rows": int(self.rows)}


def row_axis(ndim: int, channels_last: bool) -> int:
    """Axis of the image rows: (H, W) and (H, W, C) -> 0; (Z, H, W), (C, H, W), (Z, H, W, C) -> 1."""
    return 0 if ndim == 2 or (ndim == 3 and channels_last) else 1


def _is_channels_last(image: np.ndarray) -> bool:
    return image.ndim == 3 and image.shape[-1] in (3, 4) and image.shape[0] > 4


def _first_plane(image: np.ndarray) -> np.ndarray:
    """A view of one 2D plane, channels kept: (H, W) or (H, W, C); the first slice of a stack."""
    image = np.asarray(image)
    while image.ndim > 3 or (image.ndim == 3 and not _is_channels_last(image)):
        image = image[0]
    return image


def _grey(rows: np.ndarray) -> np.ndarray:
    """Rows of a plane as grey values: channels averaged (exactness survives), else as stored."""
    return rows[..., :3].mean(axis=-1, dtype=np.float32) if rows.ndim == 3 else rows


def _mode(row: np.ndarray) -> tuple[float, float]:
    """(most common exact value, its share of the row)."""
    values, counts = np.unique(row, return_counts=True)
    i = int(counts.argmax())
    return float(values[i]), float(counts[i]) / row.size


def _bar_at_start(rows: np.ndarray, zone: int, min_rows: int, tol: float) -> int:
    """Height of a bar at the start of ``rows`` (row 0 = the image edge), 0 when there is none.

    Up to :data:`EDGE_ROWS` rows of junk at the very edge (a resampling or compression seam) are
    taken into the bar; the text rows may be within ``tol`` of the background (JPEG noise).
    """
    modes = [_mode(r) for r in rows[:zone]]
    flat = [v for v, share in modes if share >= FLAT]
    if len(flat) < 2:
        return 0
    values, counts = np.unique(flat, return_counts=True)
    background = values[counts.argmax()]
    on_bar = np.array([np.count_nonzero(np.abs(r.astype(np.float32) - background) <= tol) / r.size
                       for r in rows[:zone]])  # row by row: a large image is never copied whole
    bar_like = (on_bar >= ON_BAR) | (np.array([s for _, s in modes]) >= FLAT)
    skip = next((i for i in range(EDGE_ROWS + 1) if bar_like[i]), None) if zone > EDGE_ROWS else None
    if skip is None:
        return 0
    height = skip + (int(np.argmin(bar_like[skip:])) if not bar_like[skip:].all() else zone)
    if height - skip < min_rows or height >= zone or sum(s >= FLAT for _, s in modes[skip:height]) < 2:
        return 0  # too thin, or it never ends (no micrograph above it), or hardly any flat row
    return height if on_bar[skip:height].mean() >= 0.6 else 0


def detect_databar(image: np.ndarray, max_fraction: float = 0.35) -> DataBar | None:
    """The data bar at the bottom (looked for first) or top of a micrograph; None when there is none.

    ``max_fraction``: the tallest strip taken for a bar, as a share of the image height.
    """
    plane = _first_plane(image)
    if plane.shape[0] < 32:
        return None
    height = plane.shape[0]
    zone = max(int(height * max_fraction), 1)
    min_rows = max(6, int(0.02 * height))
    step = max(1, plane.shape[1] // _COLUMNS)  # every k-th column of a wide image: same shares, faster
    edges = {"bottom": _grey(plane[:-zone - 1:-1, ::step]), "top": _grey(plane[:zone, ::step])}
    tol = TOLERANCE * float(max(e.max() for e in edges.values()) - min(e.min() for e in edges.values()))
    for side, rows in edges.items():
        found = _bar_at_start(rows, zone, min_rows, tol)
        if found:
            return DataBar(side, found)
    return None


def clear_databar(labels: np.ndarray, bar: DataBar | None) -> np.ndarray:
    """A copy of (H, W) or (Z, H, W) labels with the bar's rows set to 0 (not analysed)."""
    out = np.array(labels, copy=True)
    if bar is not None and bar.rows:
        index = [slice(None)] * out.ndim
        index[out.ndim - 2] = bar.bar_rows(out.shape[-2])
        out[tuple(index)] = 0
    return out


def _pad_rows(array: np.ndarray | None, bar: DataBar, height: int) -> np.ndarray | None:
    if array is None:
        return None
    pad = [(0, 0)] * array.ndim
    rows = height - array.shape[-2]
    pad[array.ndim - 2] = (0, rows) if bar.side == "bottom" else (rows, 0)
    return np.pad(array, pad)


def predict_outside(predict: Callable[[np.ndarray], Any], image: np.ndarray, bar: DataBar | None) -> Any:
    """Run ``predict`` on the material only, then pad the outputs with 0 over the bar.

    ``predict`` returns a :class:`~napari_csunet.engine.predictor.Prediction` (labels, probs, uncertainty
    with the image rows on their second-to-last axis); the bar never reaches the model, so its black
    and white pixels do not skew the image's normalisation either.
    """
    image = np.asarray(image)
    if bar is None or not bar.rows:
        return predict(image)
    axis = row_axis(image.ndim, _is_channels_last(image))
    height = image.shape[axis]
    keep = bar.analysed_rows(height)
    if keep.stop - keep.start < 1:
        raise ValueError(f"the data bar ({bar.rows} rows) covers the whole image ({height} rows)")
    index = [slice(None)] * image.ndim
    index[axis] = keep
    pred = predict(image[tuple(index)])
    return replace(pred, labels=_pad_rows(pred.labels, bar, height), probs=_pad_rows(pred.probs, bar, height),
                   uncertainty=_pad_rows(pred.uncertainty, bar, height))
