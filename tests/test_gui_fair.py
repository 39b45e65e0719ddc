"""The loop's promise in the GUI, without a training child: the Fine-tune tab follows the child's
decision (current / offered / kept) and reverts in one click, the Model tab never shows a score
that could not have failed, and the Correct tab marks painted areas as reviewed and says what
validation will have.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytestmark = pytest.mark.gui

from napari.layers import Shapes  # noqa: E402
from test_gui import CLASSES, IMAGE, segment  # noqa: E402 (fixtures: conftest.py)

from napari_csunet._qt.finetune_text import NOT_CHECKED  # noqa: E402
from napari_csunet._qt.training_set import PAINTED_ONLY, REVIEWED_AREAS, painted_rectangles  # noqa: E402
from napari_csunet.models.catalog import user_models_dir  # noqa: E402


def _metrics(ious: list[float | None], pixels: int) -> dict:
    present = [v for v in ious if v is not None]
    return {"miou": sum(present) / len(present), "pixel_accuracy": 0.9, "pixels": pixels,
            "iou_per_class": dict(zip(CLASSES, ious, strict=True))}


def _decision(verdict: str, keep: bool, best_step: int | None = 5) -> dict:
    fair = verdict != "unjudged"
    new = {"pixels": 19_712, "per_class_pixels": {"matrix": 14_149, "secondary": 5_563, "tertiary": 0},
           "before": _metrics([0.70, 0.40, None], 19_712), "after": _metrics([0.92, 0.55, None], 19_712),
           "change": 0.18, "noise": 0.02} if fair else None
    return {"keep": keep, "verdict": verdict, "reason": f"REASON-{verdict}", "fair": fair, "new": new,
            "earlier": None, "missing_classes": [], "trained_steps": 10, "best_step": best_step}


def _done(w, verdict: str, keep: bool, best_step: int | None = 5):
    """A fine-tune's done event as the child sends it; the "new" model is the tiny one, copied."""
    panel = w.finetune_panel
    new = user_models_dir() / f"tiny-test-ft-{verdict}.safetensors"
    shutil.copy(w.session.path, new)
    panel._start_model = w.session.path
    panel._on_event({"event": "done", "path": str(new), "steps": 10, "stopped": False, "best_step": best_step,
                     "decision": _decision(verdict, keep, best_step)})
    return panel, new


def _settled(w, qtbot) -> None:
    qtbot.waitUntil(lambda: not w.session.busy and not w.segment_panel.running
                    and w.finetune_panel.resegmented is not None, timeout=120_000)


@pytest.mark.parametrize("verdict, keep, best_step, current, offered, file_kept", [
    ("better", True, 5, "new", False, True),
    ("unjudged", False, 10, "old", True, True),
    ("not_better", False, 0, "old", False, False),  # the starting weights again: no identical "new" model
    ("worse_earlier", False, 5, "old", False, True),
])
def test_finetune_tab_follows_the_decision(widget, qtbot, verdict, keep, best_step, current, offered, file_kept):
    w = widget
    layer = segment(w, qtbot)
    old = w.session.path
    panel, new = _done(w, verdict, keep, best_step)
    if keep:
        _settled(w, qtbot)
    assert w.session.path == (new if current == "new" else old)
    assert new.exists() == file_kept
    files = w.model_panel.files
    assert any(files.item(i).toolTip().startswith(str(new)) for i in range(files.count())) == file_kept
    assert panel.use_btn.isEnabled() == offered
    assert panel.revert_btn.isEnabled() == (keep or offered)
    text = panel.result.text()
    assert f"REASON-{verdict}" in text and "corrected pixels" not in text
    if verdict != "unjudged":  # per class, with pixel counts, on held-out reviewed pixels only
        assert "matrix 0.70→0.92 (14,149 px) · secondary 0.40→0.55 (5,563 px)" in text
        assert panel.result.kind == ("info" if keep else "warning")
    else:
        assert "→" not in text and panel.result.kind == "warning"  # no before/after: nothing fair judged
    assert layer.data.shape == (512, 512)


def test_an_offered_model_is_used_and_reverted_in_one_click_each(widget, qtbot):
    w = widget
    layer = segment(w, qtbot)
    old = w.session.path
    layer.data[:40, :40] = 3
    painted = layer.data.copy()
    panel, new = _done(w, "unjudged", False, 10)
    assert w.session.path == old  # offered, not made current
    panel.use_btn.click()
    _settled(w, qtbot)
    assert w.session.path == new and not panel.use_btn.isEnabled() and panel.revert_btn.isEnabled()
    np.testing.assert_array_equal(layer.data[:40, :40], painted[:40, :40])  # corrections kept
    panel.resegmented = None
    panel.revert_btn.click()
    _settled(w, qtbot)
    assert w.session.path == old and new.exists()  # back; the fine-tuned model stays listed
    assert panel.use_btn.isEnabled() and not panel.revert_btn.isEnabled()  # one click back to it
    np.testing.assert_array_equal(layer.data[:40, :40], painted[:40, :40])


def test_declining_an_offered_model_keeps_the_current_one(widget, qtbot):
    w = widget
    segment(w, qtbot)
    old = w.session.path
    panel, new = _done(w, "unjudged", False, 10)
    panel.revert_btn.click()
    assert w.session.path == old and not w.session.busy and new.exists()
    assert not panel.use_btn.isEnabled() and not panel.revert_btn.isEnabled()
    assert new.name in panel.status.text()


def _offer_other_model(w, tmp_path):
    """A fine-tune's done event offering a model of other random weights (other answers)."""
    from fabricated import tiny_model_file

    panel = w.finetune_panel
    other = user_models_dir() / "tiny-test-ft-other.safetensors"
    shutil.copy(tiny_model_file(tmp_path), other)
    panel._start_model = w.session.path
    panel._on_event({"event": "done", "path": str(other), "steps": 10, "stopped": False, "best_step": 10,
                     "decision": _decision("unverified_elsewhere", False)})
    return panel, other


def test_show_what_an_offered_model_changes(widget, qtbot, tmp_path, monkeypatch):
    """The verdict says 'look at those areas': a changes layer per open image shows them."""
    from napari_csunet._qt.changes_view import CHANGES
    from napari_csunet._qt.common import OUTPUT
    from napari_csunet.engine.predictor import Segmenter

    w = widget
    segment(w, qtbot)
    assert not w.finetune_panel.changes_btn.isEnabled()  # no fine-tune yet: nothing to compare
    panel, other = _offer_other_model(w, tmp_path)
    mine = w.viewer.add_labels(np.zeros((8, 8), np.uint8), name=f"{IMAGE} changes")  # the user's, same name
    assert panel.changes_btn.isEnabled() and panel.offered
    read: list[str] = []
    from_file = Segmenter.from_file
    monkeypatch.setattr(Segmenter, "from_file", classmethod(lambda cls, path, **kw: read.append(path) or from_file(path, **kw)))
    assert panel.show_changes()
    assert w.session.busy and not panel.start_btn.isEnabled()  # one thing on the device at a time
    assert panel.changes_btn.isEnabled() and panel.changes_btn.text() == "Stop comparing"
    qtbot.waitUntil(lambda: not panel.comparing, timeout=120_000)
    assert not w.session.busy and panel.changes_btn.text() == "Show what it changes"
    assert [str(p) for p in read] == [str(other)]  # the current model is used as loaded, not read again
    ours = [lay for lay in w.viewer.layers if lay.metadata.get(CHANGES) is not None]
    assert len(ours) == 1 and mine in w.viewer.layers and mine.data.shape == (8, 8)  # the user's layer stays
    layer = ours[0]
    image = w.viewer.layers[IMAGE]
    assert layer.data.shape == image.data.shape[:2] and layer.metadata[OUTPUT] and layer.metadata[CHANGES] == other.name
    assert set(np.unique(layer.data)) <= {0, 1, 2, 3} and layer.data.any()
    assert f"what {other.name} changes against" in panel.status.text() and "% of the pixels change" in panel.status.text()
    assert layer not in w.correct_panel.labels.layers() and layer not in w.inspect_panel.labels.layers()  # an output
    assert panel.changes_btn.isEnabled() and panel.use_btn.isEnabled()  # the offer still stands
    assert panel.show_changes()  # asked again: the earlier layer is replaced, not doubled
    qtbot.waitUntil(lambda: not panel.comparing, timeout=120_000)
    assert [lay.metadata.get(CHANGES) for lay in w.viewer.layers].count(other.name) == 1 and layer not in w.viewer.layers


def test_a_comparison_can_be_stopped(widget, qtbot, tmp_path):
    w = widget
    segment(w, qtbot)
    panel, _ = _offer_other_model(w, tmp_path)
    assert panel.show_changes()
    panel.changes_btn.click()  # "Stop comparing"
    qtbot.waitUntil(lambda: not panel.comparing, timeout=120_000)
    assert "comparison stopped" in panel.status.text()  # the worker was still loading the models at the click
    assert not w.session.busy and panel.changes_btn.text() == "Show what it changes"


@pytest.mark.parametrize("verdict, offered", [("unverified_elsewhere", True), ("within_noise", True),
                                               ("not_better", False)])
def test_a_live_update_s_offer_is_decided_in_the_fine_tune_tab(widget, qtbot, tmp_path, verdict, offered):
    """A live cycle's model better on the checks but not made current is offered where the buttons
    are (Show what it changes, Use, Revert), not left behind a message that promises an offer."""
    from fabricated import tiny_model_file

    w = widget
    segment(w, qtbot)
    start = w.session.path
    new = user_models_dir() / "live" / "tiny-test-live-1.safetensors"
    new.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_model_file(tmp_path), new)
    live, panel = w.correct_panel.live, w.finetune_panel
    live._cycle_start = start
    live._after_training({"event": "done", "path": str(new), "steps": 4, "best_step": 4,
                          "decision": _decision(verdict, False, 4)})
    assert w.session.path == start  # never made current by the live update
    assert panel.offered is offered and panel.use_btn.isEnabled() is offered
    assert panel.changes_btn.isEnabled() is offered and panel.revert_btn.isEnabled() is offered
    if offered:
        assert panel.new_model == new and panel.before_model == start
        assert f"REASON-{verdict}" in panel.result.text() and "Fine-tune tab offers" in live.state.text()
        panel.use_btn.click()
        _settled(w, qtbot)
        assert w.session.path == new
    else:
        assert f"model unchanged: REASON-{verdict}" in live.state.text()


def _live_offer(w, tmp_path, name: str = "tiny-test-live-1", start=None):
    """A live cycle's done event: better on the checks, not made current (an offer)."""
    from fabricated import tiny_model_file

    new = user_models_dir() / "live" / f"{name}.safetensors"
    new.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).mkdir()
    shutil.copy(tiny_model_file(tmp_path / name), new)
    live = w.correct_panel.live
    live._cycle_start = start or w.session.path
    live._after_training({"event": "done", "path": str(new), "steps": 4, "best_step": 4,
                          "decision": _decision("unverified_elsewhere", False, 4)})
    return live, new


def test_a_live_offer_for_a_model_no_longer_current_is_not_made(widget, qtbot, tmp_path):
    w = widget
    segment(w, qtbot)
    live, new = _live_offer(w, tmp_path, start=tmp_path / "an-earlier-model.safetensors")
    assert not w.finetune_panel.offered and not w.finetune_panel.use_btn.isEnabled()
    assert "not current any more" in live.state.text() and str(new) in live.state.text()


def test_declining_a_live_offer_brings_back_the_offer_it_replaced(widget, qtbot, tmp_path):
    w = widget
    segment(w, qtbot)
    panel, own = _offer_other_model(w, tmp_path)  # this tab's own fine-tune, offered, undecided
    _, live_model = _live_offer(w, tmp_path)
    assert panel.new_model == live_model and f"in place of {own.name}" in panel.status.text()
    panel.revert_btn.click()  # declines the live offer
    assert panel.new_model == own and panel.undecided and panel.use_btn.isEnabled()
    assert str(live_model) in panel.status.text()  # where the declined one is (not listed in the Model tab)


def test_a_live_offer_waits_for_a_comparison_and_is_withdrawn_when_another_model_is_loaded(widget, qtbot, tmp_path):
    w = widget
    segment(w, qtbot)
    panel, own = _offer_other_model(w, tmp_path)
    assert panel.show_changes()
    _, live_model = _live_offer(w, tmp_path)
    assert panel.new_model == own  # held while the comparison runs
    qtbot.waitUntil(lambda: not panel.comparing, timeout=120_000)
    assert panel.new_model == live_model and panel.undecided and panel.use_btn.isEnabled()
    assert w.session.load_file(own) is not None  # the user loads another model by hand
    qtbot.waitUntil(lambda: not w.session.busy and w.session.path == own, timeout=60_000)
    assert not panel.undecided and not panel.use_btn.isEnabled() and "withdrawn" in panel.status.text()


def _save_model(tmp_name: str, provenance: dict, source) -> None:
    from napari_csunet.models.modelfile import load_model_file, save_model_file

    model, info = load_model_file(source)
    info.provenance, info.name = provenance, tmp_name
    save_model_file(user_models_dir() / f"{tmp_name}.safetensors", model, info)


PAINTED_ONLY_OLD = {"mode": "finetune", "train_images": ["img"], "val_images": ["img (held-out strip)"],
                    "metrics": _metrics([1.0, 1.0, 1.0], 5_324)}
PAINTED_ONLY_NEW = {"mode": "finetune", "train_images": ["img"], "val_images": [], "metrics": None,
                    "validation": None}
UNFAIR_SUMMARY = {"mode": "finetune", "train_images": ["img"], "val_images": [], "metrics": None,
                  "validation": {"fair": False, "pixels": {"new": 300}, "per_class": {}, "missing": []}}
FAIR = {"mode": "finetune", "train_images": ["img"], "val_images": ["img (held-out reviewed blocks)"],
        "metrics": _metrics([0.5, 0.6, 0.601], 19_712) | {"held_out": "reviewed"},
        "validation": {"fair": True, "pixels": {"new": 19_712}, "per_class": {}, "missing": []}}
VAL_SPLIT = {"mode": "finetune", "train_images": ["a", "b"], "val_images": ["c"],
             "metrics": _metrics([0.7, 0.7, 0.769], 3_145_728)}


@pytest.mark.parametrize("provenance, shown", [
    (PAINTED_ONLY_OLD, NOT_CHECKED),
    (PAINTED_ONLY_NEW, NOT_CHECKED),
    (UNFAIR_SUMMARY, NOT_CHECKED),
    (FAIR, "held-out reviewed mIoU 0.567 (19,712 px)"),
    (VAL_SPLIT, "val mIoU 0.723 (3,145,728 px)"),
])
def test_model_tab_shows_only_scores_that_could_have_failed(widget, provenance, shown):
    w = widget
    _save_model("scored", provenance, w.session.path)
    w.model_panel.refresh_files()
    texts = [w.model_panel.files.item(i).text() for i in range(w.model_panel.files.count())]
    (text,) = [t for t in texts if t.startswith("scored (user)")]
    assert text.endswith(f" · {shown}")
    if shown == NOT_CHECKED:
        assert "mIoU" not in text


def test_painted_rectangles_cover_clusters_and_merge_neighbours():
    painted = np.zeros((200, 300), bool)
    painted[10:20, 10:20] = True
    painted[25:30, 25:30] = True  # 5 px from the first: same rectangle
    painted[150:199, 250:300] = True  # at the border: clipped
    boxes = sorted(painted_rectangles(painted, merge=16, margin=8))
    assert boxes == [[2, 2, 38, 38], [142, 242, 200, 300]]
    assert painted_rectangles(np.zeros((5, 5), bool)) == []


def test_mark_painted_areas_as_reviewed_makes_them_judge(widget, qtbot):
    w = widget
    layer = segment(w, qtbot)
    cp = w.correct_panel
    cp.set_labels_layer(layer)
    cp.region.choose(PAINTED_ONLY)
    prediction = w.session.records.for_labels(layer).prediction
    assert not cp.mark_btn.isEnabled()  # nothing painted yet
    layer.data[100:140, 100:140] = prediction[100:140, 100:140] % 3 + 1
    layer.data[300:310, 400:420] = prediction[300:310, 400:420] % 3 + 1
    cp.training.update_preview()
    assert cp.mark_btn.isEnabled()
    assert "no reviewed pixels" in cp.training.judge.text()
    shapes = cp.mark_painted_reviewed()
    assert shapes is not None and shapes.name == REVIEWED_AREAS and cp.region.current_choice == REVIEWED_AREAS
    assert len(shapes.data) == 2
    from napari_csunet._qt.training_set import shape_regions

    inside = np.zeros(layer.data.shape, bool)
    for r0, c0, r1, c1 in shape_regions(shapes, layer):
        inside[r0:r1, c0:c1] = True
    painted = layer.data != prediction
    assert inside[painted].all() and inside.sum() < 4 * painted.sum()  # covers them, snugly
    again = cp.mark_painted_reviewed()  # (the plugin's viewer hands out proxies: compare layers by name)
    assert again.name == REVIEWED_AREAS and len(shapes.data) == 2  # not twice
    assert [lay.name for lay in w.viewer.layers if isinstance(lay, Shapes)] == [REVIEWED_AREAS]
    cp.training.update_preview()
    judge = cp.training.judge.text()
    assert "validation: reviewed px per class" in judge and f"matrix {int(((layer.data == 1) & inside).sum()):,}" in judge
    entry = cp.add_to_training_set()
    assert entry is not None and len(entry.regions) == 2


def test_the_correct_tab_names_a_class_no_reviewed_pixel_can_check(widget, qtbot):
    w = widget
    layer = segment(w, qtbot)
    cp = w.correct_panel
    cp.set_labels_layer(layer)
    prediction = w.session.records.for_labels(layer).prediction
    c = 3 if (prediction[400:420, 400:420] != 3).any() else 2  # a class that is painted there
    layer.data[:200, :200] = 1
    layer.data[400:420, 400:420] = c  # painted, outside the checked area
    name = CLASSES[c - 1]
    w.viewer.add_shapes([[[0, 0], [0, 200], [200, 200], [200, 0]]], shape_type="rectangle", name="checked")
    cp.region.choose("checked")
    cp.training.update_preview()
    judge = cp.training.judge
    assert f"no reviewed {name} pixels: the {name} class cannot be checked" in judge.text()
    assert judge.kind == "warning" and "matrix 40,000" in judge.text()
