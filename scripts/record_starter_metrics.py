#!/usr/bin/env python
"""Score the shipped starter models on their test splits and record the numbers in the files.

Run after training a starter model (`csunet train --recipe starter-superalloy`):

    .venv/bin/python scripts/record_starter_metrics.py [--data-root ../shared/data/nasa]

Each model is evaluated with the same code as `csunet evaluate` on the test split kept in this
repository (tests/data/*_test, NASA's test images in compact form). The metrics are written into the
model file's provenance (``test_metrics``), which tests/test_starter_models.py checks against, and
printed as JSON for the model cards in docs/starter_models.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_csunet.engine.predictor import Segmenter
from napari_csunet.images.datasets import find_samples
from napari_csunet.measure.evaluation import evaluate_samples
from napari_csunet.models.catalog import STARTER_DIR
from napari_csunet.models.modelfile import load_model_file, save_model_file

ROOT = Path(__file__).resolve().parents[1]
#: starter model -> test split in the repository (NASA's test images for that dataset)
TEST_SPLITS = {"starter-superalloy": ROOT / "tests/data/super1_test", "starter-ebc": ROOT / "tests/data/ebc2_test"}


def record(name: str, tile: int) -> dict:
    path = STARTER_DIR / f"{name}.safetensors"
    model, info = load_model_file(path)
    result = evaluate_samples(Segmenter(model, info, device="cpu", tile=tile), find_samples(TEST_SPLITS[name], split=None))
    keep = {k: result[k] for k in ("miou", "iou_paper", "pixel_accuracy", "iou_per_class")}
    info.provenance["test_metrics"] = keep
    info.provenance["test_data"] = f"NASA {TEST_SPLITS[name].name.split('_')[0].upper()} test split ({len(result['per_image'])} images)"
    info.provenance["test_tile"] = tile
    save_model_file(path, model, info, half=True)
    return {"model": name, "file_mb": round(path.stat().st_size / 1e6, 2), **keep,
            "per_image": [{"image": Path(r["image"]).name, "miou": r["miou"], "iou_paper": r["iou_paper"]}
                          for r in result["per_image"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=sorted(TEST_SPLITS))
    parser.add_argument("--tile", type=int, default=512)
    args = parser.parse_args()
    print(json.dumps([record(name, args.tile) for name in args.models], indent=1))


if __name__ == "__main__":
    main()
