"""A fine-tune on corrections is judged on fair pixels, decided like a careful colleague, and keeps
what the starting model got right (distillation, anchoring)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from csunet_train.data import MIN_VAL_PIXELS, LabelledImage
from csunet_train.fair import (
    BLOCK,
    annotation_digest,
    fair_split,
    missing_classes_text,
    reviewed_counts,
)
from csunet_train.judge import FairValidation, block_miou, class_iou, decide, paired_change
from csunet_train.losses import balanced_cross_entropy, correction_loss, distillation_loss
from napari_csunet.images.annotations import AnnotationStore, reviewed_area
from napari_csunet.measure.metrics import metrics_from_confusion

NAMES = ["background", "oxide", "crack"]


def _item(boxes: list[tuple[int, int, int]], reviewed: bool = True, size: int = 384, seed: int = 0,
          crack_at: tuple[int, int] | None = None) -> LabelledImage:
    """An image whose ``(row, col, side)`` boxes are corrected (left half oxide, right background);
    ``reviewed``: the boxes are marked as checked areas. ``crack_at`` paints a 6² crack there."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (size, size), dtype=np.uint8)
    labels = np.zeros((size, size), np.uint8)
    for r, c, side in boxes:
        labels[r:r + side, c:c + side] = 1
        labels[r:r + side, c:c + side // 2] = 2
    if crack_at is not None:
        labels[crack_at[0]:crack_at[0] + 6, crack_at[1]:crack_at[1] + 6] = 3
    area = reviewed_area(labels.shape, [[r, c, r + s, c + s] for r, c, s in boxes]) if reviewed else None
    return LabelledImage(image, labels, f"img{seed}", reviewed=None if area is None else area & (labels > 0))


def test_painted_only_corrections_judge_nothing() -> None:
    split = fair_split([_item([(10, 10, 150)], reviewed=False)], NAMES)
    assert not split.val and not split.fair and split.reviewed_pixels == 0
    assert split.train[0].labelled_pixels == 150 * 150  # all of it still trains


def test_reviewed_blocks_are_held_out_of_training_and_stable_across_rounds() -> None:
    item = _item([(10, 10, 150), (200, 200, 150)])
    split = fair_split([item], NAMES)
    (train,), (val,) = split.train, split.val
    assert split.fair and split.groups == ["new"]
    held, trained = val.labels > 0, train.labels > 0
    assert not (held & trained).any() and (held | trained).sum() == item.labelled_pixels
    assert 0.15 < held.sum() / item.labelled_pixels < 0.35  # about one block in four
    assert set(np.unique(val.labels)) == {0, 1, 2}
    again = fair_split([_item([(10, 10, 150), (200, 200, 150), (0, 200, 100)])], NAMES)
    # a block held out in one round stays held out when more is corrected later
    assert (again.val[0].labels[held] > 0).all()


def test_every_corrected_class_with_reviewed_pixels_is_held_out() -> None:
    # a 6² crack that no lattice block of the held-out pattern covers
    item = _item([(0, 0, 160)], crack_at=(40, 40))
    assert not (item.labels == 3)[(np.indices(item.labels.shape)[0] // BLOCK + 2 * (np.indices(item.labels.shape)[1] // BLOCK)) % 4 == 0].any()
    split = fair_split([item], NAMES)
    assert split.per_class["new"]["crack"] > 0 and not split.missing
    assert (split.train[0].labels == 3).any()  # some of it still trains


def test_a_class_corrected_only_by_painting_cannot_be_checked_and_says_so() -> None:
    item = _item([(0, 0, 160)])
    item.labels[300:310, 300:310] = 3  # painted outside any checked area
    split = fair_split([item], NAMES)
    assert split.missing == ["crack"]
    assert missing_classes_text(split.missing) .startswith("no reviewed crack pixels: the crack class cannot be checked")
    assert reviewed_counts([item], NAMES)["crack"] == 0


def test_earlier_rounds_images_form_their_own_group() -> None:
    old, new = _item([(10, 10, 150)], seed=1), _item([(100, 100, 150)], seed=2)
    split = fair_split([old, new], NAMES, earlier=[annotation_digest(old)])
    assert sorted(split.groups) == ["earlier", "new"]
    assert split.per_class["earlier"]["oxide"] > 0 and split.per_class["new"]["oxide"] > 0


def test_annotation_store_pairs_say_which_labels_were_reviewed(tmp_path: Path) -> None:
    from csunet_train.data import read_pairs

    image = np.zeros((256, 256), np.uint8)
    prediction = np.ones((256, 256), np.uint8)
    labels = prediction.copy()
    labels[10:20, 10:20] = 2  # painted outside the rectangle
    labels[100:150, 100:120] = 3  # painted inside it
    store = AnnotationStore(tmp_path)
    store.add(image, labels, name="a", class_names=NAMES, prediction=prediction, regions=[[100, 100, 200, 200]])
    (item,) = read_pairs(store.pairs())
    assert item.reviewed is not None
    assert item.reviewed.sum() == 100 * 100 and not item.reviewed[10:20, 10:20].any()
    assert (item.labels[item.reviewed] > 0).all()


# -- scores, noise, decision ---------------------------------------------------------------------

def test_block_miou_is_the_metrics_miou() -> None:
    rng = np.random.default_rng(0)
    cms = rng.integers(0, 50, (5, 3, 3))
    cms[:, 2, :] = 0  # a class absent from the target
    assert block_miou(cms.sum(0)) == pytest.approx(metrics_from_confusion(cms.sum(0))["miou"])


def test_paired_change_has_no_noise_for_identical_models_and_some_otherwise() -> None:
    rng = np.random.default_rng(1)
    before = rng.integers(0, 100, (40, 3, 3))
    assert paired_change(before, before) == (0.0, 0.0)
    after = before.copy()
    after[::2, 0, 0] += 200  # better on half of the blocks only
    change, noise = paired_change(before, after)
    assert change > 0 and noise > 0


def _validation(items: list[LabelledImage], earlier: list[str] = ()) -> FairValidation:
    return FairValidation(fair_split(items, NAMES, earlier), NAMES, 1)


def _scores(v: FairValidation, accuracy: dict[str, float]) -> np.ndarray:
    """Per-block confusion matrices whose blocks of each group are right with ``accuracy[group]``."""
    cms = np.zeros((v.n_blocks, 3, 3), np.int64)
    for b in range(v.n_blocks):
        acc = accuracy["new" if v.block_group[b] == 0 else "earlier"]
        right = int(round(100 * acc))
        cms[b, 0, 0], cms[b, 0, 1] = right, 100 - right
        cms[b, 1, 1], cms[b, 1, 0] = right, 100 - right
    return cms


@pytest.mark.parametrize(("after", "keep", "verdict"), [
    ({"new": 0.9, "earlier": 0.8}, True, "better"),
    ({"new": 0.9, "earlier": 0.6}, False, "worse_earlier"),  # forgot the earlier round's images
    ({"new": 0.7, "earlier": 0.8}, False, "not_better"),
    ({"new": 0.6, "earlier": 0.8}, False, "not_better"),
])
def test_the_decision_keeps_the_current_model_unless_the_new_one_is_better_and_not_worse_before(
        after: dict[str, float], keep: bool, verdict: str) -> None:
    old, new = _item([(10, 10, 150)], seed=1), _item([(100, 100, 150)], seed=2)
    v = _validation([old, new], [annotation_digest(old)])
    v.first = _scores(v, {"new": 0.7, "earlier": 0.8})
    decision = decide(v, _scores(v, after), 60, 60, NAMES)
    assert decision["keep"] is keep and decision["verdict"] == verdict
    assert decision["new"]["pixels"] == 200 * int((v.block_group == 0).sum()) and decision["earlier"] is not None
    assert "held-out reviewed pixels" in decision["reason"]


@pytest.mark.parametrize(("changed", "by_class", "keep"), [
    (0.01, {"matrix": 0.01, "pore": 0.02}, True),
    (0.2, {"matrix": 0.1, "pore": 0.3}, False),  # many pixels
    (0.004, {"matrix": 0.002, "pore": 0.15}, False),  # few pixels, but most of a rare class
])
def test_a_better_model_that_changes_the_unchecked_pixels_a_lot_is_only_offered(changed: float,
                                                                              by_class: dict[str, float],
                                                                              keep: bool) -> None:
    v = _validation([_item([(10, 10, 150)])])
    v.first = _scores(v, {"new": 0.7})
    elsewhere = {"images": 3, "changed": changed, "class_changed": by_class,
                 "mean_class_changed": sum(by_class.values()) / len(by_class)}
    decision = decide(v, _scores(v, {"new": 0.9}), 60, 60, NAMES, elsewhere=elsewhere)
    assert decision["keep"] is keep
    assert decision["verdict"] == ("better" if keep else "unverified_elsewhere")
    assert f"{changed:.1%} of the pixels it did not train on (away from the corrections and on 3 other" in decision["reason"]
    worst = max(by_class, key=by_class.get)
    assert f"by class: {worst} {by_class[worst]:.0%}" in decision["reason"]


def _rows(blocks: int, background: list[int], oxide: list[int]) -> np.ndarray:
    """Per-block confusion matrices with these rows for background and oxide (no crack in the truth)."""
    cms = np.zeros((blocks, 3, 3), np.int64)
    cms[:, 0], cms[:, 1] = background, oxide
    return cms


@pytest.mark.parametrize(("moved", "oxide_gain", "on_other_images", "keep", "says"), [
    ("oxide", "everywhere", 0.02, True, None),  # the checks show oxide better in every block
    ("oxide", "one block", 0.02, False, "oxide better (IoU 0.700 → "),  # ... in one block: the noise explains it
    ("crack", "everywhere", 0.02, False, "no checked crack pixels were held out"),  # nothing checked it
    # shown better on the corrected image, but moved as much on images that hold no check
    ("oxide", "everywhere", 0.08, False, "on the 2 image(s) that hold no checked area"),
])
def test_a_class_that_moves_where_nobody_checked_must_be_shown_better_by_the_checks(
        moved: str, oxide_gain: str, on_other_images: float, keep: bool, says: str | None) -> None:
    v = _validation([_item([(10, 10, 150), (200, 200, 150)])])
    v.first = _rows(v.n_blocks, [70, 0, 30], [0, 70, 30])
    after = _rows(v.n_blocks, [95, 0, 5], [0, 70, 30])  # background better everywhere: mIoU well beyond the noise
    after[slice(None) if oxide_gain == "everywhere" else slice(0, 1), 1] = [0, 100, 0]
    elsewhere = {"images": 2, "changed": 0.01, "class_changed": {"background": 0.01, moved: 0.08},
                 "mean_class_changed": 0.03,  # under both limits: only the class rule can object
                 "unchecked_images": {"images": 2, "changed": 0.01, "class_changed": {moved: on_other_images}}}
    decision = decide(v, after, 60, 60, NAMES, elsewhere=elsewhere)
    assert decision["keep"] is keep
    if not keep:
        assert decision["verdict"] == "unverified_elsewhere" and says in decision["reason"]
        assert f"moves {moved} by 8%" in decision["reason"]
        assert [u["class"] for u in decision["unverified_classes"]] == [moved]


def test_class_iou_is_the_metrics_iou() -> None:
    cms = np.random.default_rng(2).integers(0, 50, (3, 3))
    expected = metrics_from_confusion(cms, NAMES)["iou_per_class"]
    assert [float(class_iou(cms, c)) for c in range(3)] == pytest.approx([expected[n] for n in NAMES])


def test_a_gain_within_the_noise_is_offered_not_made_current() -> None:
    v = _validation([_item([(10, 10, 150)])])
    v.first = _scores(v, {"new": 0.7})
    after = v.first.copy()
    after[0] = _scores(v, {"new": 0.95})[0]  # better on one block of many: a gain the noise explains
    decision = decide(v, after, 60, 60, NAMES)
    assert decision["new"]["change"] > 0 and not decision["keep"] and decision["verdict"] == "within_noise"
    assert "twice the noise" in decision["reason"]


def test_nothing_fair_offers_the_model_without_making_it_current() -> None:
    decision = decide(None, None, 60, 60, NAMES, painted_only=True)
    assert not decision["keep"] and decision["verdict"] == "unjudged" and not decision["fair"]
    assert "painted pixels only" in decision["reason"] and "offered, not made current" in decision["reason"]


def test_a_run_that_never_beat_the_start_is_not_kept() -> None:
    v = _validation([_item([(10, 10, 150)])])
    v.first = _scores(v, {"new": 0.7})
    decision = decide(v, None, 60, 0, NAMES)
    assert not decision["keep"] and decision["new"]["change"] == 0


# -- loss terms ----------------------------------------------------------------------------------

def test_distillation_is_zero_when_the_student_agrees_and_only_reaches_the_given_pixels() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(2, 3, 8, 8).softmax(1)
    agreeing = teacher.log().clone().requires_grad_(True)
    where = torch.zeros(2, 8, 8, dtype=torch.bool)
    where[:, :, :4] = True
    assert distillation_loss(agreeing, teacher, where).item() == pytest.approx(0.0, abs=1e-5)
    student = torch.randn(2, 3, 8, 8, requires_grad=True)
    loss = distillation_loss(student, teacher, where)
    loss.backward()
    assert loss.item() > 0
    assert student.grad[..., 4:].abs().max() == 0 and student.grad[..., :4].abs().max() > 0


def test_balanced_cross_entropy_weighs_every_class_alike() -> None:
    logits = torch.zeros(1, 3, 10, 10)
    logits[0, 0] = 2.0  # predicts background everywhere
    labels = torch.ones(1, 10, 10, dtype=torch.long)
    labels[0, 0, :2] = 2  # 98 background pixels, 2 oxide
    per_class = torch.nn.functional.cross_entropy(logits, labels - 1, reduction="none")[0]
    expected = (per_class[labels[0] == 1].mean() + per_class[labels[0] == 2].mean()) / 2
    assert balanced_cross_entropy(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)
    assert balanced_cross_entropy(logits, labels) > torch.nn.functional.cross_entropy(logits, labels - 1)


def test_correction_loss_distils_unlabelled_pixels_only_when_given_a_teacher() -> None:
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 8, 8)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :2] = 2
    teacher = torch.randn(1, 3, 8, 8).softmax(1)
    hard_only = correction_loss(logits, labels)
    assert correction_loss(logits, (labels, teacher)) > hard_only
    assert correction_loss(logits, (labels, teacher), distill_weight=0) == pytest.approx(hard_only.item())
    labels[0, 2] = 1  # two classes, unevenly: the balanced cross-entropy differs from the plain one
    assert correction_loss(logits, labels, balanced=True) != pytest.approx(correction_loss(logits, labels).item())


def test_anchor_penalises_distance_to_the_starting_weights() -> None:
    from csunet_train.job import _anchor

    model = torch.nn.Linear(4, 2)
    penalty = _anchor(model, 0.5)
    assert penalty().item() == 0.0
    with torch.no_grad():
        model.weight += 1.0
    assert penalty().item() == pytest.approx(0.5 * 8)


# -- the job ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("reviewed", [True, False])
def test_a_finetune_on_corrections_reports_a_fair_decision(tmp_path: Path, model_file: Path, reviewed: bool,
                                                           monkeypatch) -> None:
    import copy
    import types

    import tifffile

    from csunet_train import loop
    from csunet_train.config import TrainConfig
    from csunet_train.events import silent
    from csunet_train.job import run_job
    from napari_csunet.models.modelfile import load_model_file

    names = ["matrix", "secondary", "tertiary"]  # the fabricated model's classes
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (320, 320), dtype=np.uint8)
    prediction = np.ones((320, 320), np.uint8)
    labels = prediction.copy()
    labels[20:180, 20:100] = 2
    store = AnnotationStore(tmp_path / "annotations")
    store.add(image, labels, name="a", class_names=names, prediction=prediction,
              regions=[[20, 20, 180, 180]] if reviewed else [])
    out = tmp_path / "ft.safetensors"
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, rng.integers(0, 255, (300, 280), dtype=np.uint8))
    cfg = TrainConfig(out=str(out), mode="finetune", model=str(model_file), pairs=store.pairs(), steps=2,
                      eval_every=1, batch_size=1, crop=256, class_names=names, unlabelled=[str(other)],
                      unlabelled_share=0.5)
    copies: list[object] = []  # the starting weights are copied once (the job's, for the blend), not again by fit
    monkeypatch.setattr(loop, "copy", types.SimpleNamespace(deepcopy=lambda x: copies.append(x) or copy.deepcopy(x)))
    done = run_job(cfg, silent)
    assert copies == []
    decision = done["decision"]
    assert decision["fair"] is reviewed
    assert decision["verdict"] in (("better", "not_better", "within_noise", "unverified_elsewhere") if reviewed
                                   else ("unjudged",))
    assert decision["keep"] is (decision["verdict"] == "better")
    provenance = load_model_file(out, "cpu")[1].provenance
    assert provenance["trained_on"] and provenance["distillation"]["weight"] == 1.0
    assert provenance["distillation"]["unlabelled_images"] == ["other (unlabelled)"]
    if done["best_step"]:
        assert decision["elsewhere"]["images"] == 1 and 0 <= decision["elsewhere"]["changed"] <= 1
    if not reviewed:
        assert done["initial_metrics"] is None and provenance["validation"] is None
        return
    assert done["initial_metrics"]["held_out"] == "reviewed" and decision["new"]["pixels"] >= MIN_VAL_PIXELS
    assert provenance["validation"]["fair"] and decision["earlier"] is None
    # round 2 from the fine-tuned model: the first image is an earlier round's, checked for forgetting
    store.add(image[::-1].copy(), labels, name="b", class_names=names, prediction=prediction, regions=[[20, 20, 180, 180]])
    cfg2 = TrainConfig(out=str(tmp_path / "ft2.safetensors"), mode="finetune", model=str(out), pairs=store.pairs(),
                       steps=1, eval_every=1, batch_size=1, crop=256, class_names=names)
    second = run_job(cfg2, silent)["decision"]
    assert second["earlier"] is not None and second["earlier"]["pixels"] == decision["new"]["pixels"]
    assert second["new"]["pixels"] > 0


def test_unlabelled_images_give_crops_with_soft_targets_only(tmp_path: Path) -> None:
    import tifffile

    from csunet_train.data import DataError, read_unlabelled
    from csunet_train.sampling import CropDataset, prepare_image

    (tmp_path / "more").mkdir()
    for i in range(2):
        tifffile.imwrite(tmp_path / "more" / f"m{i}.tif", np.full((64, 80), 10 * i, np.uint8))
    items = read_unlabelled([str(tmp_path / "more")])
    assert [it.name for it in items] == ["m0 (unlabelled)", "m1 (unlabelled)"] and not items[0].labelled_pixels
    with pytest.raises(DataError, match="neither an image file nor a folder"):
        read_unlabelled([str(tmp_path / "missing")])
    labelled = _item([(0, 0, 100)], size=128)
    for it in (labelled, *items):
        it.soft = np.full((3, *it.labels.shape), 1 / 3, np.float16)
    ds = CropDataset([prepare_image(labelled, 1, 64)], 64, 40, aug_strength=0.0, seed=1,
                     unlabelled=[prepare_image(it, 1, 64) for it in items], unlabelled_share=0.5)
    blank = [i for i in range(40) if not (ds[i][1][0] > 0).any()]
    assert 8 <= len(blank) <= 32  # about half of the crops come from the unlabelled images
    x, (y, soft) = ds[blank[0]]
    assert soft.shape == (3, 64, 64) and x.shape == (1, 64, 64)


#: held-out accuracy of the models (1: fine-tuned; 0.25, 0.5: blends; the start scores 0.7), the crack
#: share each moves where nobody checked, the weight of the model saved and whether it is kept
@pytest.mark.parametrize(("accuracy", "moves", "saved", "keep"), [
    ({0.25: 0.9, 0.5: 0.9, 1.0: 0.9}, {}, 0.25, True),  # the checks ask for no more than a quarter of the change
    ({0.25: 0.7, 0.5: 0.9, 1.0: 0.9}, {}, 0.5, True),  # a quarter is not better than the start: half
    ({0.25: 0.7, 0.5: 0.8, 1.0: 0.95}, {}, 1.0, True),  # the whole change is better beyond the noise
    ({0.25: 0.7, 0.5: 0.85, 1.0: 0.95}, {1.0: 0.4}, 0.5, True),  # it moves the crack: the smaller change passes
    ({0.25: 0.7, 0.5: 0.85, 1.0: 0.95}, {1.0: 0.4, 0.5: 0.3}, 1.0, False),  # nothing smaller passes: offered
    ({0.25: 0.9, 0.5: 0.9, 1.0: 0.9}, {0.25: 0.3, 0.5: 0.3, 1.0: 0.3}, 0.25, False),  # the least change, offered
    # better on one block only (within the noise): no gain to keep with less change, the best one is offered
    ({0.25: "0.8 in one block", 0.5: "0.9 in one block", 1.0: "0.95 in one block"}, {}, 1.0, False),
])
def test_the_least_change_the_checks_ask_for_is_judged_and_a_smaller_one_tried_when_it_moves_too_much(
        accuracy: dict[float, float | str], moves: dict[float, float], saved: float, keep: bool) -> None:
    import torch

    from csunet_train.unseen import UnseenPixels
    from csunet_train.verdict import blend_states, judge_finetune

    v = _validation([_item([(10, 10, 150)])])
    v.first = _scores(v, {"new": 0.7})
    model = torch.nn.Linear(1, 1, bias=False)
    start, tuned = {"weight": torch.zeros(1, 1)}, {"weight": torch.ones(1, 1)}
    teacher = np.zeros((64, 64), np.uint8)
    teacher[::2] = 1
    teacher[1::2] = 3  # background and crack, as the starting model said
    unseen = UnseenPixels([_item([])], [teacher])

    def weight() -> float:
        return round(float(model.weight), 2)

    def predict(item: LabelledImage) -> np.ndarray:
        new = teacher.copy()
        crack = np.flatnonzero(new == 3)
        new.flat[crack[: int(moves.get(weight(), 0.0) * crack.size)]] = 1
        return new

    def score(m: torch.nn.Module, w: float | None = None) -> np.ndarray:
        acc = accuracy[weight() if w is None else w]
        if isinstance(acc, float):
            return _scores(v, {"new": acc})
        cms = v.first.copy()
        cms[0] = _scores(v, {"new": float(acc.split()[0])})[0]
        return cms

    with torch.no_grad():
        verdict = judge_finetune(model, start, tuned, v, score(model, 1.0), unseen, predict, score, NAMES, 60, 60,
                                 False, 3)
    decision = verdict.decision
    assert decision["keep"] is keep and weight() == saved  # the model holds what is saved
    assert [b["fine_tuned_weight"] for b in decision["blends"]] == [0.25, 0.5, 1.0]
    assert blend_states(start, tuned, 0.25)["weight"].item() == pytest.approx(0.25)
    if saved == 1.0:
        assert verdict.blended is None and "blend" not in decision
    else:
        assert decision["blend"] == saved and float(verdict.blended["weight"]) == pytest.approx(saved)
        assert f"blended model ({saved:.0%} of the way from the current model to the fine-tuned one)" in decision["reason"]
    if not keep:
        assert decision["verdict"] in ("unverified_elsewhere", "within_noise")
    if moves.get(1.0) and saved < 1.0 and keep:
        assert [t["verdict"] for t in decision["tried"]] == ["unverified_elsewhere", "better"]
        assert decision["reason"].startswith("The fine-tuned model changed too much where nobody checked")
    if moves.get(0.5) and saved == 1.0:  # every smaller change was tried, and is on the record
        assert [t["fine_tuned_weight"] for t in decision["tried"]] == [1.0, 0.5, 0.25]
        assert [t["verdict"] for t in decision["tried"]] == ["unverified_elsewhere"] * 2 + ["not_better"]


def test_balanced_distillation_keeps_a_rare_class_as_firmly_as_the_matrix() -> None:
    torch.manual_seed(0)
    teacher = torch.zeros(1, 3, 20, 20)
    teacher[:, 0] = 1.0
    teacher[:, 0, :1, :4] = 0.0
    teacher[:, 2, :1, :4] = 1.0  # 4 of 400 pixels: the teacher says crack
    logits = torch.zeros(1, 3, 20, 20)
    logits[:, 0] = 12.0  # the student calls everything background: the crack is lost
    where = torch.ones(1, 20, 20, dtype=torch.bool)
    plain = distillation_loss(logits, teacher, where)
    balanced = distillation_loss(logits, teacher, where, balanced=True)
    assert balanced > 4 * plain  # 1 % of the pixels weigh half of the balanced loss
    right = logits.clone()
    right[:, 2, :1, :4], right[:, 0, :1, :4] = 12.0, 0.0
    assert distillation_loss(right, teacher, where, balanced=True) < 0.1 * balanced


@pytest.mark.parametrize(("limits", "keep"), [((0.03, 0.05), False), ((0.5, 0.5), True)])
def test_the_limits_on_unchecked_pixels_are_job_settings(limits: tuple[float, float], keep: bool) -> None:
    from csunet_train.config import ConfigError, TrainConfig

    v = _validation([_item([(10, 10, 150)])])
    v.first = _scores(v, {"new": 0.7})
    elsewhere = {"images": 0, "changed": 0.2, "class_changed": {"matrix": 0.3}, "mean_class_changed": 0.3}
    assert decide(v, _scores(v, {"new": 0.9}), 60, 60, NAMES, elsewhere=elsewhere, limits=limits)["keep"] is keep
    cfg = TrainConfig(out="m.safetensors", preset="csunet-tiny", unchecked_limit=limits[0],
                      unchecked_class_limit=limits[1])
    assert (cfg.unchecked_limit, cfg.unchecked_class_limit) == limits
    with pytest.raises(ConfigError, match="unchecked_limit"):
        TrainConfig(out="m.safetensors", preset="csunet-tiny", unchecked_limit=2.0)
