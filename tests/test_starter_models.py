"""The starter models shipped in the package load, know their classes, and keep their test scores."""

from __future__ import annotations

import pytest

from napari_csunet.models.catalog import STARTER_DIR, list_model_files
from napari_csunet.models.modelfile import read_model_info

EXPECTED = {
    "starter-superalloy": (["matrix", "secondary", "tertiary"], "super1_test"),
    "starter-ebc": (["background", "oxide", "crack"], "ebc2_test"),
}
TOLERANCE = 0.01  # fp16 weights and BLAS differences between machines


def test_shipped_models_are_listed_with_their_kind() -> None:
    files = list_model_files()
    assert {f["name"] for f in files if f["kind"] == "starter"} == set(EXPECTED)
    assert {f["name"] for f in files if f["kind"] == "pretrained"} == {"micro-tiny"}
    kinds = [f["kind"] for f in files]
    assert kinds == sorted(kinds, key=lambda k: k != "user")  # the user's own models come first


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_starter_model_file(name: str) -> None:
    path = STARTER_DIR / f"{name}.safetensors"
    assert path.stat().st_size <= 25e6
    info = read_model_info(path)
    assert info.class_names == EXPECTED[name][0]
    assert info.provenance["test_metrics"]["iou_paper"] > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_starter_model_reaches_its_recorded_test_metrics(name: str, data_dir) -> None:
    from napari_csunet.engine.predictor import Segmenter
    from napari_csunet.images.datasets import find_samples
    from napari_csunet.measure.evaluation import evaluate_samples

    path = STARTER_DIR / f"{name}.safetensors"
    info = read_model_info(path)
    recorded = info.provenance["test_metrics"]
    seg = Segmenter.from_file(path, device="cpu", tile=info.provenance.get("test_tile", 512))
    result = evaluate_samples(seg, find_samples(data_dir / EXPECTED[name][1], split=None))
    for key in ("miou", "iou_paper", "pixel_accuracy"):
        assert result[key] >= recorded[key] - TOLERANCE, (key, result[key], recorded[key])
