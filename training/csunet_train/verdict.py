"""After a fine-tune: choose the least change the checks ask for, measure it where nobody checked,
decide, and when it changed too much there, try a smaller change before giving up.

A fine-tune that fixed the user's corrections often also moved a phase on the images nobody
checked (docs/training.md). Interpolating the weights between the starting and the fine-tuned
model (WiSE-FT, Wortsman et al. 2022) keeps much of the gain while moving the rest less: on the
correction-loop benchmark a quarter of the change kept 77 % of the gain outside the corrected boxes
and turned the other images' change from −0.020 to +0.006 mIoU. So the blends are scored on the
held-out reviewed blocks too, and the smallest whose score the checks cannot tell from the best
model's (within twice the noise of their paired difference) is the one judged, offered or kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .judge import (
    CLASS_CHANGE_LIMIT,
    ELSEWHERE_LIMIT,
    GROUPS,
    SIGNIFICANT,
    FairValidation,
    block_miou,
    decide,
    paired_change,
)
from .unseen import UnseenPixels

__all__ = ["BLENDS", "Verdict", "blend_states", "judge_finetune", "least_change"]

#: the fine-tuned model's weights in the blends scored on the checks (the fine-tuned model itself: 1)
BLENDS = (0.25, 0.5)


def blend_states(start: dict[str, Any], tuned: dict[str, Any], alpha: float) -> dict[str, Any]:
    """``start + alpha x (tuned - start)`` for floating-point tensors (counters such as BatchNorm's
    ``num_batches_tracked`` are taken from ``tuned``)."""
    return {k: start[k] + alpha * (v - start[k]) if v.is_floating_point() else v for k, v in tuned.items()}


@dataclass
class Verdict:
    decision: dict[str, Any]
    blended: dict[str, Any] | None = None  # the state to save instead of the best one (a blend)
    blended_cms: Any = None  # its held-out blocks' confusion matrices


@dataclass
class _Candidate:
    weight: float  # of the fine-tuned model (1: the fine-tuned model itself)
    state: dict[str, Any]
    cms: Any  # held-out blocks' confusion matrices (B, K, K)


def least_change(candidates: Sequence[_Candidate], validation: FairValidation) -> int:
    """Index of the candidate with the smallest weight that the checks (this round's held-out
    blocks) cannot tell from the best one: its mIoU within ``SIGNIFICANT`` x the noise of their
    paired difference, and better than the starting model beyond the noise whenever the best one
    is. The evidence does not ask for more change than that."""
    sel = validation.block_group == GROUPS.index("new")
    start = validation.first[sel]
    scores = [float(block_miou(c.cms[sel].sum(0))) for c in candidates]
    best = max(range(len(candidates)), key=lambda i: (scores[i], candidates[i].weight))

    def significant(before, after) -> bool:
        gain, noise = paired_change(before, after)
        return gain > SIGNIFICANT * noise

    must_beat_start = significant(start, candidates[best].cms[sel])
    for i in sorted(range(len(candidates)), key=lambda i: candidates[i].weight):
        if i == best or (not significant(candidates[i].cms[sel], candidates[best].cms[sel])
                         and (not must_beat_start or significant(start, candidates[i].cms[sel]))):
            return i
    return best


def judge_finetune(model, start_state: dict[str, Any] | None, best_state: dict[str, Any] | None,
                   validation: FairValidation | None, best_cms, unseen: UnseenPixels | None,
                   predict: Callable[[Any], Any], score: Callable[[Any], Any], class_names: Sequence[str],
                   trained_steps: int, best_step: int | None, painted_only: bool, images: int,
                   limits: tuple[float, float] = (ELSEWHERE_LIMIT, CLASS_CHANGE_LIMIT)) -> Verdict:
    """The decision on the least change the checks ask for: the best model (``best_state``, loaded
    into ``model``) or a :data:`BLENDS` blend of it with ``start_state`` (:func:`least_change`);
    if that changes too much where nobody checked, each smaller blend is judged in turn. A blend
    chosen is returned to be saved instead of the best model, kept or offered.

    ``predict(item)`` labels an item with ``model``'s current weights; ``score(model)`` gives the
    held-out blocks' confusion matrices (``FairValidation.block_confusion``).
    """
    def measure(state: dict[str, Any]) -> dict[str, Any] | None:
        if unseen is None or not unseen.pixels:
            return None
        model.load_state_dict(state)
        return unseen.change(predict, class_names) | {"images": images}

    def judged(cms, elsewhere: dict[str, Any] | None) -> dict[str, Any]:
        return decide(validation, cms, trained_steps, best_step, class_names, painted_only=painted_only,
                      elsewhere=elsewhere, limits=limits)

    if best_state is None or not best_step:
        return Verdict(judged(best_cms, None))
    if start_state is None or validation is None or not validation.split.fair or validation.first is None:
        return Verdict(judged(best_cms, measure(best_state)))
    candidates = []
    for weight in BLENDS:
        blend = blend_states(start_state, best_state, weight)
        model.load_state_dict(blend)
        candidates.append(_Candidate(weight, blend, score(model)))
    candidates.append(_Candidate(1.0, best_state, best_cms))
    chosen = least_change(candidates, validation)
    scored = [{"fine_tuned_weight": c.weight, "miou": validation.metrics(c.cms)["miou"]} for c in candidates]
    trials: list[tuple[_Candidate, dict[str, Any]]] = []
    for c in [candidates[chosen], *reversed(candidates[:chosen])]:  # the chosen one, then smaller changes
        trials.append((c, judged(c.cms, measure(c.state)) | {"blends": scored}))
        if trials[-1][1]["keep"] or trials[-1][1]["verdict"] != "unverified_elsewhere":
            break
    (judged_first, decision), (last, last_decision) = trials[0], trials[-1]
    saved = judged_first
    if last_decision["keep"] and last is not judged_first:
        last_decision["reason"] = (f"{_model_words(judged_first.weight)} changed too much where nobody checked, so "
                                   f"{_model_words(last.weight, lower=True)} was judged. {last_decision['reason']}")
        decision, saved = last_decision | {"unblended": _summary(decision)}, last
    elif last is not judged_first:
        decision = decision | {"smaller_tried": _summary(last_decision) | {"fine_tuned_weight": last.weight}}
    model.load_state_dict(saved.state)
    if saved.weight == 1.0:
        return Verdict(decision)
    if saved is judged_first:
        decision["reason"] = (f"{_model_words(saved.weight)} scored as well on the checked areas as the fine-tuned "
                              f"model (mIoU {scored[chosen]['miou']:.3f} against {scored[-1]['miou']:.3f}, within the "
                              f"noise) and changes less, so it is the one judged. {decision['reason']}")
    return Verdict(decision | {"blend": saved.weight}, saved.state, saved.cms)


def _model_words(weight: float, lower: bool = False) -> str:
    """'The fine-tuned model', or 'The model 25% of the way from the current one to the fine-tuned one'."""
    words = "The fine-tuned model" if weight == 1.0 else (
        f"The model {weight:.0%} of the way from the current one to the fine-tuned one")
    return words[0].lower() + words[1:] if lower else words


def _summary(decision: dict[str, Any]) -> dict[str, Any]:
    return {k: decision.get(k) for k in ("verdict", "new", "elsewhere")}
