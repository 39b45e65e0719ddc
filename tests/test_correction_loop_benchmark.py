"""The headless correction-loop benchmark's pure helpers (benchmarks/correction_loop.py): which boxes
the simulated user paints, and how the summary counts kept runs that made things worse."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "correction_loop.py"
_spec = importlib.util.spec_from_file_location("correction_loop_benchmark", _PATH)
cl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cl)


@pytest.mark.parametrize(("shape", "side"), [((1024, 1024), 160), ((640, 2000), 160), ((512, 512), 128),
                                             ((256, 256), 64), ((960, 1280), 160), ((100, 300), 32), ((20, 20), 16)])
def test_box_side(shape: tuple[int, int], side: int) -> None:
    assert cl.box_side(shape) == side


def test_worst_boxes_find_the_wrong_patches_without_overlap() -> None:
    truth = np.ones((128, 128), np.uint8)
    pred = truth.copy()
    pred[0:32, 0:32] = 2  # the worst patch
    pred[96:112, 96:128] = 2  # the second
    pred[40:44, 40:44] = 2  # a small one
    boxes = cl.worst_boxes(pred, truth, n=3, side=32, stride=16)
    assert boxes[:2] == [(0, 0), (96, 96)] or boxes[:2] == [(0, 0), (80, 96)]
    assert len(boxes) == 3
    for i, (r, c) in enumerate(boxes):
        for r2, c2 in boxes[i + 1:]:
            assert abs(r - r2) >= 32 or abs(c - c2) >= 32


def test_worst_boxes_ignore_unlabelled_truth() -> None:
    truth = np.ones((64, 64), np.uint8)
    pred = np.full_like(truth, 2)
    truth[:, :32] = 0  # nothing known there: nothing to correct
    ((r, c),) = cl.worst_boxes(pred, truth, n=1, side=32, stride=16)
    assert c == 32


@pytest.mark.parametrize(("names", "train", "annotated"), [
    (["b", "a", "d", "c"], ["a", "c"], ["b", "d"]),
    (["x"], ["x"], []),
    (["e", "d", "c", "b", "a"], ["a", "c", "e"], ["b", "d"]),
])
def test_split_pool_alternates_sorted_names(names: list[str], train: list[str], annotated: list[str]) -> None:
    assert cl.split_pool(names) == (train, annotated)


@pytest.mark.parametrize(("n", "expected"), [(1, [0]), (2, [0, 9]), (4, [0, 3, 6, 9]), (20, list(range(10)))])
def test_spread(n: int, expected: list[int]) -> None:
    assert cl.spread(list(range(10)), n) == expected


def _area(before: float, after: float, kept: bool, acc: float = 0.9) -> dict[str, float]:
    return {"miou_before": before, "miou_after": after, "accuracy_before": acc, "accuracy_after": acc,
            "miou_current_after": after if kept else before, "accuracy_current_after": acc}


def _run(outside: float, other: float | None, kept: bool, seconds: float = 50.0, dataset: str = "A",
         verdict: str | None = None) -> dict[str, Any]:
    return {"dataset": dataset, "image": "img", "seed": 0, "kept": kept, "verdict": verdict or ("better" if kept else
            "not_better"), "seconds": seconds, "first_update_s": seconds / 4,
            "inside": {"miou_before": 0.2, "miou_after": 0.8, "accuracy_before": 0.4, "accuracy_after": 0.95},
            "outside": _area(0.7, 0.7 + outside, kept), "other_images": None if other is None else _area(0.6, 0.6 + other, kept)}


@pytest.mark.parametrize(("run", "regressed"), [
    (_run(-0.02, 0.0, kept=True), True),  # outside fell, and the worse model was made current
    (_run(0.0, -0.01, kept=True), True),  # the other images fell
    (_run(-0.004, -0.004, kept=True), False),  # within the tolerance
    (_run(-0.2, -0.2, kept=False), False),  # worse, but the product kept the current model
    (_run(0.01, None, kept=True), False),  # no other images measured
])
def test_is_regression(run: dict[str, Any], regressed: bool) -> None:
    assert cl.is_regression(run) is regressed


def test_summary_counts_and_means() -> None:
    runs = [_run(-0.02, 0.01, kept=True, seconds=40), _run(-0.1, -0.1, kept=False, seconds=60, dataset="B"),
            _run(0.04, 0.03, kept=True, seconds=70, dataset="B", verdict="better")]
    s = cl.summarize(runs)
    assert s["runs"] == 3 and s["kept"] == 2
    assert s["regressions_kept"] == 1 and s["regressed_runs"] == ["A/img/seed 0"]
    assert s["outside_miou_change"] == pytest.approx((-0.02 - 0.1 + 0.04) / 3, abs=1e-4)
    # what the user ends with: the unkept run counts as no change
    assert s["outside_miou_change_current"] == pytest.approx((-0.02 + 0.0 + 0.04) / 3, abs=1e-4)
    assert s["other_images_miou_change_current"] == pytest.approx((0.01 + 0.03) / 3, abs=1e-4)
    assert s["inside_accuracy_after"] == pytest.approx(0.95)
    assert s["seconds_p50"] == 60.0 and s["first_update_s_p50"] == 15.0
    assert s["verdicts"] == {"better": 2, "not_better": 1}
    assert set(s["per_dataset"]) == {"A", "B"} and s["per_dataset"]["B"]["runs"] == 2


def test_summary_of_nothing() -> None:
    s = cl.summarize([])
    assert s["runs"] == 0 and s["regressions_kept"] == 0 and s["seconds_p50"] is None


@pytest.mark.parametrize(("items", "expected"), [
    (["distill_weight=0"], {"distill_weight": 0}),
    (["anchor_weight=0.5", "holdout=blocks"], {"anchor_weight": 0.5, "holdout": "blocks"}),
    (["freeze_cnn=true"], {"freeze_cnn": True}),
])
def test_parse_sets(items: list[str], expected: dict[str, Any]) -> None:
    assert cl.parse_sets(items) == expected


def test_parse_sets_refuses_a_bare_key() -> None:
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        cl.parse_sets(["distill_weight"])


@pytest.mark.parametrize("first, n, expected", [("a", 1, ["a"]), ("b", 2, ["b", "c"]), ("c", 2, ["c", "a"]),
                                                ("a", 3, ["a", "b", "c"])])
def test_annotated_group_takes_the_next_images_round_the_pool(first: str, n: int, expected: list[str]) -> None:
    assert cl.annotated_group(["a", "b", "c"], first, n) == expected


@pytest.mark.parametrize("n", [0, 4])
def test_annotated_group_refuses_impossible_sizes(n: int) -> None:
    with pytest.raises(SystemExit, match="--together"):
        cl.annotated_group(["a", "b", "c"], "a", n)
