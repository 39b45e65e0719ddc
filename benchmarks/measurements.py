"""How right are the *numbers*? Measurements of the starter models' predictions against ground truth.

    nice -n 10 .venv/bin/python benchmarks/measurements.py --json

For NASA Super1 test (starter-superalloy) and EBC2 test (starter-ebc), every test image is
segmented and both the prediction and NASA's mask are measured with the same code
(:func:`napari_csunet.measure.measurements.measure` with its defaults: minimum particle size 9 px unless
``--min-size``, the matrix by name, the data bar detector on). Per class it prints one JSON
object with:

- ``area_fraction_error_points``: |predicted - true| area fraction in percentage points, per image
  (mean and max over images) and of the pooled pixels of all images;
- ``particle_count_error_pct``: (predicted - true) / true particle count, pooled over images, and
  the mean of the per-image absolute errors;
- ``mean_diameter_error_pct``: (predicted - true) / true mean equivalent diameter of the pooled
  interior particles (particles cut by the image edge are not sized).

NASA's files carry no pixel size, so sizes are in px; the errors are ratios and need none.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_csunet.engine.predictor import Segmenter
from napari_csunet.images.databar import detect_databar, predict_outside
from napari_csunet.images.datasets import find_samples
from napari_csunet.measure.measurements import DEFAULT_MIN_AREA, measure

ROOT = Path(__file__).resolve().parents[1]
NASA = ROOT.parent / "shared" / "data" / "nasa"
SETS = {"Super1": "starter-superalloy", "EBC2": "starter-ebc"}


def _pct(pred: float, true: float) -> float | None:
    return round(100.0 * (pred - true) / true, 2) if true else None


def _score(names: list[str], per_image: list[dict[str, Any]], matrix: str) -> dict[str, Any]:
    """Per-class errors from the images' measurements (pred and true rows + interior diameters)."""
    out: dict[str, Any] = {}
    for i, name in enumerate(names):
        pred = [im["pred"][i] for im in per_image]
        true = [im["true"][i] for im in per_image]
        points = [100.0 * abs(p["area_fraction"] - t["area_fraction"]) for p, t in zip(pred, true, strict=True)]
        pooled_p = sum(p["pixels"] for p in pred) / sum(im["analysed_pred"] for im in per_image)
        pooled_t = sum(t["pixels"] for t in true) / sum(im["analysed_true"] for im in per_image)
        entry: dict[str, Any] = {
            "true_area_fraction_pct": round(100 * pooled_t, 3), "predicted_area_fraction_pct": round(100 * pooled_p, 3),
            "area_fraction_error_points": {"mean_abs": round(float(np.mean(points)), 3),
                                           "max_abs": round(float(np.max(points)), 3),
                                           "pooled_abs": round(100 * abs(pooled_p - pooled_t), 3)}}
        if name != matrix:
            n_p, n_t = sum(p["particles"] or 0 for p in pred), sum(t["particles"] or 0 for t in true)
            per = [abs(_pct(p["particles"] or 0, t["particles"])) for p, t in zip(pred, true, strict=True) if t["particles"]]
            d_p = np.concatenate([im["d_pred"].get(name, np.zeros(0)) for im in per_image])
            d_t = np.concatenate([im["d_true"].get(name, np.zeros(0)) for im in per_image])
            entry.update(particles_true=n_t, particles_predicted=n_p,
                         particle_count_error_pct={"pooled": _pct(n_p, n_t),
                                                   "mean_abs_per_image": round(float(np.mean(per)), 2) if per else None},
                         mean_diameter_true_px=round(float(d_t.mean()), 3) if d_t.size else None,
                         mean_diameter_predicted_px=round(float(d_p.mean()), 3) if d_p.size else None,
                         mean_diameter_error_pct={"pooled": _pct(float(d_p.mean()), float(d_t.mean()))
                                                  if d_p.size and d_t.size else None})
        out[name] = entry
    return out


def run_set(root: Path, model: str, device: str, min_area: int = DEFAULT_MIN_AREA) -> dict[str, Any]:
    seg = Segmenter.from_spec(model, device=device)
    names = list(seg.info.class_names)
    samples = find_samples(root, "test")
    per_image, start = [], time.perf_counter()
    for s in samples:
        image, target = s.load()
        bar = detect_databar(image)
        labels = predict_outside(lambda im, s=s: seg.predict(im, name=str(s.image)), image, bar).labels
        labels = np.where(target > 0, labels, 0).astype(np.uint8)  # compare the same pixels
        mp, mt = measure(labels, names, None, bar, min_area=min_area), measure(target, names, None, bar, min_area=min_area)
        matrix = next(r["class"] for r in mt.rows if r["role"] == "matrix")
        per_image.append({"image": s.image.name, "matrix": matrix, "databar": bar.to_dict() if bar else None,
                          "pred": mp.rows, "true": mt.rows, "analysed_pred": mp.rows[0]["analysed_px"],
                          "analysed_true": mt.rows[0]["analysed_px"], "d_pred": mp.distribution("eq_diameter_px"),
                          "d_true": mt.distribution("eq_diameter_px")})
    matrices = {im["matrix"] for im in per_image}
    return {"model": model, "device": str(seg.device), "images": len(samples), "matrix": sorted(matrices),
            "databars_detected": sum(im["databar"] is not None for im in per_image),
            "seconds": round(time.perf_counter() - start, 1),
            "classes": _score(names, per_image, next(iter(matrices)) if len(matrices) == 1 else ""),
            "per_image_area_fraction_error_points": {
                im["image"]: {r["class"]: round(100 * abs(r["area_fraction"] - t["area_fraction"]), 3)
                              for r, t in zip(im["pred"], im["true"], strict=True)} for im in per_image}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=NASA, help="folder holding Super1/ and EBC2/ in NASA's layout")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--min-size", type=int, default=DEFAULT_MIN_AREA, help="smallest particle counted, px")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default output anyway)")
    args = parser.parse_args()
    result = {"benchmark": "measurements", "host": platform.machine(), "min_area_px": args.min_size,
              "note": __doc__.split("\n\n")[2].replace("\n", " "),
              "datasets": {name: run_set(args.data / name, model, args.device, args.min_size)
                           for name, model in SETS.items()}}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
