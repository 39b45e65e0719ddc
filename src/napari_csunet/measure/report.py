"""A self-contained HTML report of a batch: tables, plots and overlay thumbnails in one file.

Everything is inline (PNG as data URIs, CSS in the page), so the report can be mailed or attached
to a lab notebook as it is. It states where every number comes from: the model, the pixel size and
its source per image, the data bar left out, the minimum particle size and the matrix class.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..safetext import csv_row
from .plots import fractions_png, size_histogram_png

__all__ = ["thumbnail_png", "report_html", "write_report", "image_entry", "batch_tables", "write_batch_tables",
           "statistics_csv"]

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1280px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{padding:.25em .6em;border-bottom:1px solid #e4e4e4;
text-align:right;white-space:nowrap}th{background:#f3f3f3;white-space:normal}td:first-child,th:first-child{text-align:left}
.row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}.note{color:#666;font-size:.85em}
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em;border-radius:2px}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;font-size:.9em}dt{color:#666}"""

#: (key, heading, format) of the per-image table; "{u}" is the length unit
_IMAGE_COLUMNS = (("class", "class", "{}"), ("role", "role", "{}"), ("area_fraction", "area %", "pct"),
                  ("ci", "95 % interval (%)", "{}"), ("particles", "particles", "{:,}"),
                  ("density_per_mm2", "per mm²", "{:,.0f}"), ("mean_eq_diameter", "mean ⌀ ({u})", "{:.3g}"),
                  ("median_eq_diameter", "median ⌀ ({u})", "{:.3g}"), ("mean_feret_max_um", "Feret max (µm)", "{:.3g}"),
                  ("mean_aspect_ratio", "aspect", "{:.2f}"), ("mean_intercept", "mean intercept ({u})", "{:.3g}"),
                  ("astm_grain_size", "ASTM G", "{:.1f}"))
_FOLDER_COLUMNS = (("class", "class", "{}"), ("images", "images", "{}"), ("area_fraction_mean", "mean area %", "pct"),
                   ("ci", "95 % interval between images (%)", "{}"), ("particles", "particles", "{:,}"),
                   ("density_per_mm2_mean", "per mm² (mean)", "{:,.0f}"), ("mean_eq_diameter", "mean ⌀ ({u})", "{:.3g}"))


def thumbnail_png(rgb: np.ndarray, max_side: int = 320) -> bytes:
    """A small PNG of an RGB (or grey) uint8 picture, longest side ``max_side``."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(rgb))
    picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if fmt == "pct":
        return f"{100 * value:.2f}"
    return html.escape(fmt.format(value))


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]], unit: str,
           colors: Mapping[str, str], low: str, high: str) -> str:
    suffix = "um" if unit == "µm" else "px"
    head = "".join(f"<th>{html.escape(h.format(u=unit))}</th>" for _, h, _ in columns)
    body = []
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            if key == "ci":
                a, b = row.get(low), row.get(high)
                text = "—" if a is None or b is None else f"{100 * a:.2f} – {100 * b:.2f}"
            elif key == "class":
                swatch = f'<span class="swatch" style="background:{html.escape(colors.get(row[key], "#888"))}"></span>'
                text = swatch + html.escape(str(row[key]))
            else:
                text = _cell(row.get(f"{key}_{suffix}", row.get(key)), fmt)
            cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def image_entry(name: str, measurement: Any, pixel_size: Any, databar: Any, overlay_rgb: np.ndarray | None) -> dict:
    """What the report keeps of one image: its rows, particle size/shape distributions, provenance, thumbnail."""
    unit = "µm" if pixel_size is not None else "px"
    suffix = "um" if pixel_size is not None else "px"
    shapes = {q: measurement.distribution(f"{q}_{suffix}") for q in ("eq_diameter", "feret_max")}
    return {"image": name, "rows": measurement.rows, "unit": unit, **shapes,
            "aspect_ratio": measurement.distribution("aspect_ratio"),
            "pixel_size": pixel_size.describe() if pixel_size is not None else "unknown: numbers in px",
            "databar": f"{databar.rows} rows at the {databar.side}, left out" if databar else "none detected",
            "thumbnail": thumbnail_png(overlay_rgb) if overlay_rgb is not None else None}


def report_html(images: Sequence[Mapping[str, Any]], folder: Sequence[Mapping[str, Any]],
                provenance: Mapping[str, Any], colors: Mapping[str, str]) -> str:
    """The whole report page (see :func:`image_entry` for ``images``)."""
    unit = "µm" if images and all(e["unit"] == "µm" for e in images) else "px"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>CS-UNet measurements</title>"
             f"<style>{_CSS}</style></head><body><h1>Micrograph measurements</h1><dl>"]
    facts = {**provenance, "images": len(images),
             "written": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    parts += [f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts.items()]
    parts.append("</dl>")
    if folder:
        def pooled(key: str) -> dict[str, np.ndarray]:
            return {cls: np.concatenate([e[key].get(cls, np.zeros(0)) for e in images if e["unit"] == unit])
                    for cls in colors}

        parts += ["<h2>All images</h2>", _table(folder, _FOLDER_COLUMNS, unit, colors,
                                                "area_fraction_ci_low", "area_fraction_ci_high"),
                  '<div class="row">',
                  _img(fractions_png(folder, colors, "area_fraction_ci_low", "area_fraction_ci_high",
                                     "area_fraction_mean"), "area fractions over all images"),
                  *(_img(size_histogram_png(pooled(key), colors, u, quantity=q), f"{q}, all images")
                    for key, q, u in (("eq_diameter", "equivalent diameter", unit),
                                      ("feret_max", "maximum Feret diameter", unit),
                                      ("aspect_ratio", "aspect ratio (major / minor axis)", ""))), "</div>",
                  '<p class="note">Intervals between images: Student-t 95 % interval of the mean over the images '
                  "(none for a single image). Within an image: percentile interval of a block bootstrap over 8 × 8 tiles. "
                  "Size distributions leave out particles cut by the image edge or the data bar.</p>"]
    for e in images:
        parts += [f"<h2>{html.escape(e['image'])}</h2>",
                  f"<p class='note'>pixel size: {html.escape(e['pixel_size'])} · data bar: {html.escape(e['databar'])}</p>",
                  _table(e["rows"], _IMAGE_COLUMNS, e["unit"], colors, "fraction_ci_low", "fraction_ci_high"),
                  '<div class="row">', _img(e.get("thumbnail"), f"overlay of {e['image']}"),
                  _img(fractions_png(e["rows"], colors), f"fractions of {e['image']}"),
                  _img(size_histogram_png(e["eq_diameter"], colors, e["unit"]), f"sizes in {e['image']}"), "</div>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, images: Sequence[Mapping[str, Any]], folder: Sequence[Mapping[str, Any]],
                 provenance: Mapping[str, Any], colors: Mapping[str, str]) -> Path:
    """Write :func:`report_html` atomically to ``path``."""
    return atomic_write_text(path, report_html(images, folder, provenance, colors))


def batch_tables(name: str, measurement: Any, pixel_size: Any, databar: Any,
                 overlay_rgb: np.ndarray | None) -> dict[str, Any]:
    """One image's share of a batch's CSVs (and report, when ``overlay_rgb`` is given)."""
    return {"rows": [{"image": name, **r} for r in measurement.rows],
            "particle_rows": [{"image": name, **r} for r in measurement.particle_rows()],
            "report_entry": image_entry(name, measurement, pixel_size, databar, overlay_rgb)
            if overlay_rgb is not None else None}


def write_batch_tables(out: Path, results: list[dict[str, Any]], info: Any, model_name: str,
                       report: bool) -> dict[str, str]:
    """summary.csv (per image and class), particles.csv, folder.csv and optionally report.html.

    Takes the :func:`batch_tables` keys out of ``results`` (they are not for the JSON output).
    """
    from .. import __version__
    from .measurements import FIELDS, FOLDER_FIELDS, PARTICLE_FIELDS, folder_summary

    rows = [r.pop("rows", []) for r in results]
    particles = [p for r in results for p in r.pop("particle_rows", [])]
    entries = [e for e in (r.pop("report_entry", None) for r in results) if e is not None]
    folder = folder_summary([r for r in rows if r])
    paths = {"summary": out / "summary.csv", "particles_csv": out / "particles.csv", "folder_csv": out / "folder.csv"}
    atomic_write_text(paths["summary"], statistics_csv([x for r in rows for x in r], ("image",), FIELDS))
    atomic_write_text(paths["particles_csv"], statistics_csv(particles, ("image",), PARTICLE_FIELDS))
    atomic_write_text(paths["folder_csv"], statistics_csv(folder, (), FOLDER_FIELDS))
    if report:
        first = next((r for r in rows if r), [{}])[0]
        provenance = {"model": model_name, "classes": ", ".join(info.class_names),
                      "minimum particle size": f"{first.get('min_area_px', '?')} px",
                      "software": f"napari-csunet {__version__}"}
        colors = dict(zip(info.class_names, info.class_colors, strict=False))
        paths["report"] = write_report(out / "report.html", entries, folder, provenance, colors)
    return {k: str(v) for k, v in paths.items()}


def statistics_csv(rows: Iterable[dict[str, Any]], leading: Sequence[str], fields: Sequence[str]) -> str:
    """CSV text of statistics rows, one writer for the CLI's summary and the GUI's export.

    Columns are ``leading`` (e.g. ``("image",)``) then ``fields`` (e.g.
    :data:`napari_csunet.measure.measurements.FIELDS`); other keys are left out and None is written
    as an empty cell; text starting with = + - @ gets a leading '.
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=(*leading, *fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(map(csv_row, rows))  # names from files must not run as spreadsheet formulas
    return buffer.getvalue()
