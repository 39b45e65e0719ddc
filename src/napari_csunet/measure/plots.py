"""PNG plots of the measurements, drawn with matplotlib's Agg canvas (no pyplot, no GUI backend).

One drawing for the Inspect tab (shown as a picture) and the HTML report, so both show the same
thing. Safe on a worker thread: every call builds its own Figure. Size distributions use
logarithmic bins, since particle sizes in micrographs span decades; fractions are drawn with
their 95 % intervals.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..safetext import shown

__all__ = ["size_histogram_png", "fractions_png", "log_bins", "measurement_with_plots"]

_DARK = {"figure": "#262930", "text": "#d6d6d6", "grid": "#50545c"}
_LIGHT = {"figure": "#ffffff", "text": "#222222", "grid": "#d0d0d0"}


def log_bins(values: np.ndarray, per_decade: int = 8) -> np.ndarray:
    """Bin edges evenly spaced in log10 covering the positive ``values`` (at least one bin)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if not v.size:
        return np.array([1.0, 10.0])
    lo, hi = np.floor(np.log10(v.min()) * per_decade), np.ceil(np.log10(v.max()) * per_decade)
    return 10.0 ** (np.arange(lo, max(hi, lo + 1) + 1) / per_decade)


def _figure(size: tuple[float, float], dark: bool) -> tuple[Any, Any, dict[str, str]]:
    from matplotlib.figure import Figure

    theme = _DARK if dark else _LIGHT
    fig = Figure(figsize=size, dpi=100, facecolor=theme["figure"], layout="constrained")
    ax = fig.add_subplot()
    ax.set_facecolor(theme["figure"])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color(theme["grid"])
    ax.tick_params(colors=theme["text"], labelsize=8)
    ax.grid(True, color=theme["grid"], linewidth=0.5, alpha=0.6)
    ax.set_axisbelow(True)
    return fig, ax, theme


def _plain_log_ticks(ax: Any) -> None:
    """Ticks at 1, 2, 5 x 10^n written as plain numbers (0.02, 0.05, 0.1 ...), no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor=fig.get_facecolor())
    return buffer.getvalue()


def _literal(name: str) -> str:
    """A class name drawn as written: ``$`` would start TeX math (and a bad formula fails the plot)."""
    return shown(name).replace("$", r"\$")


def size_histogram_png(diameters: Mapping[str, np.ndarray], colors: Mapping[str, str], unit: str = "µm",
                       size: tuple[float, float] = (4.2, 2.6), dark: bool = False,
                       quantity: str = "equivalent diameter") -> bytes:
    """Histogram (counts, log-spaced bins) of each class's ``quantity`` (in ``unit``; "" for a ratio)."""
    fig, ax, theme = _figure(size, dark)
    everything = np.concatenate([np.asarray(v, float) for v in diameters.values()] or [np.zeros(0)])
    bins = log_bins(everything)
    drawn = False
    for name, values in diameters.items():
        values = np.asarray(values, float)
        values = values[np.isfinite(values) & (values > 0)]
        if values.size:
            ax.hist(values, bins=bins, histtype="stepfilled", alpha=0.35, color=colors.get(name, "#888888"))
            ax.hist(values, bins=bins, histtype="step", linewidth=1.5, color=colors.get(name, "#888888"),
                    label=f"{_literal(name)} (n={values.size})")
            drawn = True
    ax.set_xscale("log")
    _plain_log_ticks(ax)
    ax.set_xlabel(f"{quantity} ({unit})" if unit else quantity, color=theme["text"], fontsize=9)
    ax.set_ylabel("particles", color=theme["text"], fontsize=9)
    if drawn:
        ax.legend(fontsize=8, frameon=False, labelcolor=theme["text"])
    else:
        ax.text(0.5, 0.5, "no particles", transform=ax.transAxes, ha="center", color=theme["text"])
    return _png(fig)


def fractions_png(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str], low_key: str = "fraction_ci_low",
                  high_key: str = "fraction_ci_high", value_key: str = "area_fraction",
                  size: tuple[float, float] = (4.2, 1.9), dark: bool = False) -> bytes:
    """Horizontal bars of the area fractions (%) with their 95 % intervals as error bars."""
    fig, ax, theme = _figure(size, dark)
    names = [str(r["class"]) for r in rows][::-1]
    values = np.array([100.0 * r[value_key] for r in rows])[::-1]
    low = np.array([100.0 * (r.get(low_key) if r.get(low_key) is not None else r[value_key]) for r in rows])[::-1]
    high = np.array([100.0 * (r.get(high_key) if r.get(high_key) is not None else r[value_key]) for r in rows])[::-1]
    y = np.arange(len(names))
    ax.barh(y, values, color=[colors.get(n, "#888888") for n in names], height=0.6)
    ax.errorbar(values, y, xerr=np.vstack([np.clip(values - low, 0, None), np.clip(high - values, 0, None)]),
                fmt="none", ecolor=theme["text"], capsize=3, linewidth=1)
    for yi, v, hi in zip(y, values, high, strict=True):
        ax.text(max(v, hi) + 1.0, yi, f"{v:.1f} %", va="center", color=theme["text"], fontsize=8)
    ax.set_yticks(y, [_literal(n) for n in names])
    ax.set_xlim(0, 110)
    ax.set_xlabel("area fraction (%) with 95 % interval", color=theme["text"], fontsize=9)
    return _png(fig)


def measurement_with_plots(labels: np.ndarray, names: Sequence[str], colors: Sequence[str], pixel_size: Any,
                           databar: Any, matrix: str | None, min_area: int) -> tuple[Any, bytes, bytes]:
    """The Inspect tab's work: :func:`napari_csunet.measure.measurements.measure` and its two plots (dark, to
    sit in napari's dock), in one call that a child process can run (see :mod:`napari_csunet.loop.child_process`)."""
    from .measurements import measure

    m = measure(labels, names, pixel_size, databar, matrix, min_area)
    by_name = dict(zip(names, colors, strict=False))
    diameters = m.distribution("eq_diameter_um" if pixel_size is not None else "eq_diameter_px")
    return (m, fractions_png(m.rows, by_name, size=(4.4, 1.8), dark=True),
            size_histogram_png(diameters, by_name, "µm" if pixel_size is not None else "px", size=(4.4, 2.5), dark=True))
