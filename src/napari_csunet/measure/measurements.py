"""Measurements a materials scientist can publish: physical units, intervals, size distributions.

Per class of a label image (0 = not analysed: unlabelled or the SEM data bar): the area fraction
with a 95 % interval from a block bootstrap over tiles, particles (8-connected regions of at least
``min_area`` px; scikit-image ``regionprops_table``) with their number density, equivalent
diameter, maximum Feret diameter and aspect ratio, and the mean lineal intercept with the ASTM E112
grain size number it implies. The matrix class (named so, else the largest; or as told) is not
counted as particles, nor is any other *continuous* phase (a layer, a network: most of it one region
across the image, :class:`PhaseShape`), which gets its area fraction, mean intercept and connectivity
instead: "11 particles of 6 px" of a coating layer would be a number without a meaning. Particles
cut by the image edge (or the data bar) are left out of the size distribution and of the count
shown with it (:func:`sized_particles`, one rule for both), since their size is unknown, and count
half in the number density. Lengths in µm
are the pixel values times the pixel size (the geometric mean of width and height for
non-square pixels); without a pixel size the µm columns are empty and only "px" numbers exist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..images.databar import DataBar
from ..images.pixelsize import PixelSize

__all__ = ["FIELDS", "PARTICLE_FIELDS", "DEFAULT_MIN_AREA", "particle_table", "sized_particles", "phase_shape",
           "PhaseShape", "CONTINUOUS_SHARE", "block_bootstrap_ci",
           "between_images_ci", "mean_intercept", "astm_grain_size", "measure", "Measurement", "FOLDER_FIELDS",
           "folder_summary", "calibration_for", "default_matrix", "MATRIX_NAMES"]

#: the smallest particle counted by default: 3 x 3 px, below which a segmentation resolves nothing
DEFAULT_MIN_AREA = 9
#: columns of a per-class row, in CSV order (units in the names; empty when unknown)
FIELDS = ("class", "label", "role", "role_reason", "pixels", "area_fraction", "fraction_ci_low", "fraction_ci_high",
          "connectivity", "particles", "particles_sized", "density_per_mm2", "mean_area_px", "mean_area_um2", "mean_eq_diameter_px",
          "mean_eq_diameter_um", "median_eq_diameter_px", "median_eq_diameter_um", "mean_feret_max_um",
          "mean_aspect_ratio", "mean_intercept_px", "mean_intercept_um", "astm_grain_size",
          "pixel_size_um", "pixel_size_source", "analysed_px", "databar_rows", "min_area_px")
#: columns of the per-particle table
PARTICLE_FIELDS = ("class", "label", "area_px", "area_um2", "eq_diameter_px", "eq_diameter_um", "feret_max_px",
                   "feret_max_um", "aspect_ratio", "touches_edge")
_PROPS = ("label", "area", "equivalent_diameter_area", "feret_diameter_max", "axis_major_length",
          "axis_minor_length", "bbox")


def _planes(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "ui" or labels.ndim not in (2, 3):
        raise ValueError(f"labels must be a 2D or 3D integer array, got {labels.dtype} {labels.shape}")
    return labels.reshape((-1,) + labels.shape[-2:])


def particle_table(mask: np.ndarray, min_area: int = DEFAULT_MIN_AREA,
                   pixel_size: PixelSize | None = None) -> dict[str, np.ndarray]:
    """Per-particle columns (:data:`PARTICLE_FIELDS` but class/label) of a 2D or stacked boolean mask."""
    from skimage.measure import label, regionprops_table

    parts: list[dict[str, np.ndarray]] = []
    for plane in np.asarray(mask, dtype=bool).reshape((-1,) + np.shape(mask)[-2:]):
        regions = label(plane, connectivity=2)
        keep = np.bincount(regions.ravel()) >= max(int(min_area), 1)
        keep[0] = False
        regions = np.where(keep[regions], regions, 0)
        if keep.any():
            t = regionprops_table(regions, properties=_PROPS)
            h, w = plane.shape
            edge = (t["bbox-0"] == 0) | (t["bbox-1"] == 0) | (t["bbox-2"] == h) | (t["bbox-3"] == w)
            parts.append({"area_px": t["area"].astype(np.float64), "eq_diameter_px": t["equivalent_diameter_area"],
                          "feret_max_px": t["feret_diameter_max"],
                          "aspect_ratio": t["axis_major_length"] / np.maximum(t["axis_minor_length"], 1.0),
                          "touches_edge": edge})
    keys = ("area_px", "eq_diameter_px", "feret_max_px", "aspect_ratio", "touches_edge")
    out = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, bool if k == "touches_edge" else float)
           for k in keys}
    um, um2 = (pixel_size.mean_um, pixel_size.area_um2) if pixel_size else (math.nan, math.nan)
    out.update(area_um2=out["area_px"] * um2, eq_diameter_um=out["eq_diameter_px"] * um,
               feret_max_um=out["feret_max_px"] * um)
    return out


def sized_particles(table: dict[str, np.ndarray]) -> np.ndarray:
    """Which particles of a :func:`particle_table` have a known size (not cut by an edge): the ones
    the size distribution, the mean sizes and the count shown beside them are of."""
    return ~np.asarray(table["touches_edge"], dtype=bool)


#: a phase whose largest region holds at least this share of its area, across at least this share of
#: the image's width or height, is continuous (a layer, a network, a matrix), not particles
CONTINUOUS_SHARE = 0.5


class PhaseShape:
    """How a phase lies in the image: ``connectivity`` (its largest 8-connected region's share of its
    area) and ``extent`` (that region's length over the image's, along its longer direction)."""

    def __init__(self, connectivity: float, extent: float) -> None:
        self.connectivity, self.extent = connectivity, extent

    @property
    def continuous(self) -> bool:
        """Mostly one region that runs across the image: a layer or a network, not particles (whose
        largest one is a small share, or small). Measured on the superalloy and EBC samples' labels:
        γ' (22 % in one region) and cracks (44 %) are particles, the oxide layer (73 %, 73 %) is not."""
        return self.connectivity >= CONTINUOUS_SHARE and self.extent >= CONTINUOUS_SHARE

    def reason(self) -> str:
        return (f"{self.connectivity:.0%} of it is one region across {self.extent:.0%} of the image: "
                "a continuous phase, not particles")


def phase_shape(mask: np.ndarray) -> PhaseShape:
    """The :class:`PhaseShape` of a 2D or stacked boolean mask (8-connected regions)."""
    from scipy.ndimage import find_objects
    from skimage.measure import label

    total, largest, extent = 0, 0, 0.0
    for plane in np.asarray(mask, dtype=bool).reshape((-1,) + np.shape(mask)[-2:]):
        regions = label(plane, connectivity=2)
        sizes = np.bincount(regions.ravel())
        sizes[0] = 0
        total += int(sizes.sum())
        if sizes.size > 1 and sizes.max() > largest:
            largest = int(sizes.max())
            rows, cols = find_objects((regions == sizes.argmax()).astype(np.uint8))[0]
            extent = max((rows.stop - rows.start) / plane.shape[0], (cols.stop - cols.start) / plane.shape[1])
    return PhaseShape(largest / total if total else 0.0, extent)


def block_bootstrap_ci(labels: np.ndarray, num_classes: int, blocks: int = 8, resamples: int = 1000,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95 % percentile interval of each class's area fraction, resampling ``blocks`` x ``blocks`` tiles.

    Tiles rather than pixels because neighbouring pixels are not independent: a pixel bootstrap
    would give intervals far too narrow. Tiles with no labelled pixel carry no weight.
    """
    counts = []
    for plane in _planes(labels):
        h, w = plane.shape
        by, bx = max(h // blocks, 1), max(w // blocks, 1)
        rows, cols = np.arange(h)[:, None] // by, np.arange(w)[None, :] // bx
        tile = np.minimum(rows, blocks - 1) * blocks + np.minimum(cols, blocks - 1)
        flat = tile.ravel() * (num_classes + 1) + plane.ravel().astype(np.int64)
        counts.append(np.bincount(flat, minlength=blocks * blocks * (num_classes + 1)).reshape(-1, num_classes + 1))
    per_tile = np.concatenate(counts)[:, 1:].astype(np.float64)
    per_tile = per_tile[per_tile.sum(1) > 0]
    if len(per_tile) < 2:
        nan = np.full(num_classes, np.nan)
        return nan, nan
    pick = np.random.default_rng(seed).integers(0, len(per_tile), size=(resamples, len(per_tile)))
    sums = per_tile[pick].sum(axis=1)
    fractions = sums / sums.sum(axis=1, keepdims=True)
    low, high = np.percentile(fractions, (2.5, 97.5), axis=0)
    return low, high


def between_images_ci(fractions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high): Student-t 95 % interval of the mean fraction over images ((N, K) array).

    With one image there is no between-image spread: the bounds are NaN.
    """
    from scipy.stats import t

    f = np.asarray(fractions, dtype=np.float64)
    mean = f.mean(axis=0)
    if len(f) < 2:
        return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    half = t.ppf(0.975, len(f) - 1) * f.std(axis=0, ddof=1) / math.sqrt(len(f))
    return mean, mean - half, mean + half


def mean_intercept(mask: np.ndarray) -> float | None:
    """Mean lineal intercept (chord length) of a phase in px along all rows and columns.

    Heyn's method on a grid of every row and column: the test-line length inside the phase over
    the number of intercepts, an intercept cut by the image edge counting one half (ASTM E112).
    """
    inside, intercepts = 0.0, 0.0
    for plane in np.asarray(mask, dtype=bool).reshape((-1,) + np.shape(mask)[-2:]):
        for lines in (plane, plane.T):
            starts = np.count_nonzero(lines[:, 1:] & ~lines[:, :-1]) + np.count_nonzero(lines[:, 0])
            cut = np.count_nonzero(lines[:, 0]) + np.count_nonzero(lines[:, -1])
            whole = np.count_nonzero(lines.all(axis=1))  # one chord cut at both ends: still a half
            inside += np.count_nonzero(lines)
            intercepts += starts - 0.5 * cut + 0.5 * whole
    return inside / intercepts if intercepts > 0 else None


def astm_grain_size(intercept_um: float | None) -> float | None:
    """ASTM E112 grain size number G from the mean lineal intercept: G = -6.6439 log10(l/mm) - 3.288."""
    if intercept_um is None or not intercept_um > 0:
        return None
    return -6.643856 * math.log10(intercept_um / 1000.0) - 3.288


#: class names taken for the matrix without being told (before "the largest class")
MATRIX_NAMES = ("matrix", "background", "bulk", "host")


def default_matrix(class_names: Sequence[str], counts: np.ndarray) -> int:
    """Index of the matrix: a class named like one (:data:`MATRIX_NAMES`), else the largest class.

    By name first so that the matrix stays the same class over a folder even where a precipitate
    happens to cover more of one image than the matrix does.
    """
    lowered = [str(n).strip().lower() for n in class_names]
    named = next((lowered.index(n) for n in MATRIX_NAMES if n in lowered), None)
    return named if named is not None else int(np.argmax(counts))


def _stat(values: np.ndarray, fn: Any = np.mean) -> float | None:
    values = values[np.isfinite(values)]
    return float(fn(values)) if values.size else None


def _scaled(value: float | None, factor: float | None) -> float | None:
    return None if value is None or factor is None else value * factor


class Measurement:
    """The measurements of one label image: per-class rows (:data:`FIELDS`) and particle tables."""

    def __init__(self, rows: list[dict[str, Any]], particles: dict[str, dict[str, np.ndarray]]) -> None:
        self.rows, self.particles = rows, particles

    def distribution(self, column: str) -> dict[str, np.ndarray]:
        """Per class, one particle column (e.g. ``eq_diameter_um``) of the particles not cut by an edge."""
        return {cls: t[column][sized_particles(t)] for cls, t in self.particles.items()}

    def particle_rows(self) -> list[dict[str, Any]]:
        """One dict per particle (:data:`PARTICLE_FIELDS`), for a CSV."""
        out = []
        for row in self.rows:
            table = self.particles.get(row["class"])
            if not table:
                continue
            for i in range(len(table["area_px"])):
                out.append({"class": row["class"], "label": row["label"],
                            **{k: _plain(table[k][i]) for k in PARTICLE_FIELDS[2:]}})
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    value = float(value)
    return None if math.isnan(value) else value


def measure(labels: np.ndarray, class_names: Sequence[str], pixel_size: PixelSize | None = None,
            databar: DataBar | None = None, matrix: str | None = None,
            min_area: int = DEFAULT_MIN_AREA) -> Measurement:
    """All per-class numbers of a (H, W) or (Z, H, W) label image; the data bar's rows are left out."""
    planes = _planes(labels)
    k = len(class_names)
    if planes.size and int(planes.max()) > k:
        raise ValueError(f"labels go up to {int(planes.max())} but there are {k} classes {list(class_names)}")
    if databar is not None:
        planes = planes[:, databar.analysed_rows(planes.shape[1])]
    counts = np.bincount(planes.ravel(), minlength=k + 1)[1:]
    analysed = int(counts.sum())
    fractions = counts / analysed if analysed else np.zeros(k)
    low, high = block_bootstrap_ci(planes, k)
    if matrix is not None and matrix not in class_names:
        raise ValueError(f"matrix class {matrix!r} is not one of {list(class_names)}")
    matrix_index = list(class_names).index(matrix) if matrix is not None else default_matrix(class_names, counts)
    why_matrix = ("as chosen" if matrix is not None else "by its name"
                  if str(class_names[matrix_index]).strip().lower() in MATRIX_NAMES else "the largest class") if k else ""
    um = pixel_size.mean_um if pixel_size else None
    area_mm2 = analysed * pixel_size.area_um2 * 1e-6 if pixel_size else None
    rows, tables = [], {}
    for i, name in enumerate(class_names):
        row: dict[str, Any] = {
            "class": name, "label": i + 1, "role": "matrix" if i == matrix_index else "particles",
            "pixels": int(counts[i]), "area_fraction": float(fractions[i]),
            "fraction_ci_low": _plain(low[i]), "fraction_ci_high": _plain(high[i]),
            "pixel_size_um": um, "pixel_size_source": pixel_size.source if pixel_size else "none (px only)",
            "analysed_px": analysed, "databar_rows": databar.rows if databar else 0, "min_area_px": int(min_area),
        }
        intercept = mean_intercept(planes == i + 1) if counts[i] else None
        row.update(mean_intercept_px=intercept, mean_intercept_um=_scaled(intercept, um),
                   astm_grain_size=astm_grain_size(_scaled(intercept, um)))
        if counts[i]:
            shape = phase_shape(planes == i + 1)
            row["connectivity"] = shape.connectivity
            if i == matrix_index:
                row["role_reason"] = f"matrix ({why_matrix}): no particle statistics"
            elif shape.continuous:
                row.update(role="continuous", role_reason=shape.reason())
            else:
                row.update(_particle_stats(particle_table(planes == i + 1, min_area, pixel_size), pixel_size, area_mm2))
                tables[name] = row.pop("table")
        rows.append({key: row.get(key) for key in FIELDS})
    return Measurement(rows, tables)


def _particle_stats(table: dict[str, np.ndarray], pixel_size: PixelSize | None,
                    area_mm2: float | None) -> dict[str, Any]:
    """A particle class's row entries (and its ``table``): sizes of the sized particles only."""
    sized = sized_particles(table)
    whole = {key: v[sized] for key, v in table.items()}
    um = pixel_size.mean_um if pixel_size else None
    weight = float(sized.sum() + 0.5 * (~sized).sum())
    out = {"table": table, "role_reason": "", "particles": int(len(table["area_px"])), "particles_sized": int(sized.sum()),
           "density_per_mm2": weight / area_mm2 if area_mm2 else None,
           "mean_area_px": _stat(whole["area_px"]), "mean_eq_diameter_px": _stat(whole["eq_diameter_px"]),
           "median_eq_diameter_px": _stat(whole["eq_diameter_px"], np.median),
           "mean_aspect_ratio": _stat(whole["aspect_ratio"]),
           "mean_feret_max_um": _stat(whole["feret_max_um"]) if pixel_size else None}
    out.update(mean_area_um2=_scaled(out["mean_area_px"], pixel_size.area_um2 if pixel_size else None),
               mean_eq_diameter_um=_scaled(out["mean_eq_diameter_px"], um),
               median_eq_diameter_um=_scaled(out["median_eq_diameter_px"], um))
    return out


#: columns of :func:`folder_summary` rows
FOLDER_FIELDS = ("class", "images", "area_fraction_mean", "area_fraction_ci_low", "area_fraction_ci_high",
                 "particles", "density_per_mm2_mean", "mean_eq_diameter_px", "mean_eq_diameter_um")


def _weighted(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    pairs = [(r[key], r["particles"] or 0) for r in rows if r.get(key) is not None and r.get("particles")]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


def folder_summary(per_image: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per class over a folder's images: mean fraction with its between-image 95 % interval, etc.

    Diameters are the images' means weighted by their particle counts; densities a plain mean.
    """
    if not per_image:
        return []
    names = [r["class"] for r in per_image[0]]
    fractions = np.array([[r["area_fraction"] for r in rows] for rows in per_image])
    mean, low, high = between_images_ci(fractions)
    out = []
    for i, name in enumerate(names):
        rows = [image_rows[i] for image_rows in per_image]
        densities = [r["density_per_mm2"] for r in rows if r.get("density_per_mm2") is not None]
        counted = [r["particles"] for r in rows if r.get("particles") is not None]
        out.append({"class": name, "images": len(rows), "area_fraction_mean": float(mean[i]),
                    "area_fraction_ci_low": _plain(low[i]), "area_fraction_ci_high": _plain(high[i]),
                    "particles": sum(counted) if counted else None,
                    "density_per_mm2_mean": float(np.mean(densities)) if densities else None,
                    "mean_eq_diameter_px": _weighted(rows, "mean_eq_diameter_px"),
                    "mean_eq_diameter_um": _weighted(rows, "mean_eq_diameter_um")})
    return out


def calibration_for(path: str | Path | None, image: np.ndarray, pixel_size_um: float | None = None,
                    find_databar: bool = True) -> tuple[PixelSize | None, DataBar | None]:
    """(pixel size, data bar) of an image: a given size, else the file's metadata, else a calibration."""
    from ..images.databar import detect_databar
    from ..images.pixelsize import read_pixel_size, recall_calibration

    if pixel_size_um is not None:
        size: PixelSize | None = PixelSize(pixel_size_um, pixel_size_um, "given on the command line")
    elif path is not None:
        size = read_pixel_size(path) or recall_calibration(path)
    else:
        size = None
    return size, detect_databar(image) if find_databar else None
