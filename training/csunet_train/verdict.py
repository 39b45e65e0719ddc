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


def least_change(candidates: Sequence[_Candidate], validation: FairValidation) -> tuple[int, int]:
    """(chosen, best): indices of the candidate with the smallest weight that the checks (this
    round's held-out blocks) cannot tell from the best one (the paired difference of their mIoU at
    most ``SIGNIFICANT`` x its noise) while it beats the starting model beyond the noise, and of the
    best one. When even the best one does not beat the start beyond the noise, the checks show no
    gain to keep with less change: the best one is chosen."""
    sel = validation.block_group == GROUPS.index("new")
    start = validation.first[sel]
    scores = [float(block_miou(c.cms[sel].sum(0))) for c in candidates]
    best = max(range(len(candidates)), key=lambda i: (scores[i], candidates[i].weight))

    def significant(before, after) -> bool:
        gain, noise = paired_change(before, after)
        return gain > SIGNIFICANT * noise

    if not significant(start, candidates[best].cms[sel]):
        return best, best
    for i in sorted(range(len(candidates)), key=lambda i: candidates[i].weight):
        if i == best or (not significant(candidates[i].cms[sel], candidates[best].cms[sel])
                         and significant(start, candidates[i].cms[sel])):
            return i, best
    return best, best


def judge_finetune(model, start_state: dict[str, Any] | None, best_state: dict[str, Any] | None,
                   validation: FairValidation | None, best_cms, unseen: UnseenPixels | None,
                   predict: Callable[[Any], Any], score: Callable[[Any], Any], class_names: Sequence[str],
                   trained_steps: int, best_step: int | None, painted_only: bool, images: int,
                   limits: tuple[float, float] = (ELSEWHERE_LIMIT, CLASS_CHANGE_LIMIT)) -> Verdict:
    """The decision on the least change the checks ask for: the best model (``best_state``, loaded
    into ``model``) or a :data:`BLENDS` blend of it with ``start_state`` (:func:`least_change`);
    if that changes too much where nobody checked, each smaller blend is judged in turn. The model
    judged (the one kept, else the first) is left in ``model``, and a blend is returned to be saved
    instead of the best model.

    ``predict(item)`` labels an item with ``model``'s current weights; ``score(model)`` gives the
    held-out blocks' confusion matrices (``FairValidation.block_confusion``).
    """
    def measure(state: dict[str, Any]) -> dict[str, Any] | None:
        if unseen is None or not unseen.pixels:
            return None
        model.load_state_dict(state)
        return unseen.change(predict, class_names) | {"images": images}

    def judged(c: _Candidate) -> dict[str, Any]:
        return decide(validation, c.cms, trained_steps, best_step, class_names, painted_only=painted_only,
                      elsewhere=measure(c.state), limits=limits, name=_model_words(c.weight, short=True))

    if best_state is None or not best_step:
        return Verdict(decide(validation, best_cms, trained_steps, best_step, class_names, painted_only=painted_only,
                              limits=limits))
    tuned = _Candidate(1.0, best_state, best_cms)
    if start_state is None or validation is None or not validation.split.fair or validation.first is None:
        return Verdict(judged(tuned))
    candidates = []
    for weight in BLENDS:
        blend = blend_states(start_state, best_state, weight)
        model.load_state_dict(blend)
        candidates.append(_Candidate(weight, blend, score(model)))
    candidates.append(tuned)
    chosen, best = least_change(candidates, validation)
    scored = [{"fine_tuned_weight": c.weight, "miou": validation.metrics(c.cms)["miou"]} for c in candidates]
    trials: list[tuple[_Candidate, dict[str, Any]]] = []
    for c in [candidates[chosen], *reversed(candidates[:chosen])]:  # the chosen one, then smaller changes
        trials.append((c, judged(c)))
        if trials[-1][1]["keep"] or trials[-1][1]["verdict"] != "unverified_elsewhere":
            break
    saved, decision = trials[-1] if trials[-1][1]["keep"] else trials[0]
    decision = decision | {"blends": scored, "tried": [
        {"fine_tuned_weight": c.weight} | {k: d.get(k) for k in ("verdict", "new", "elsewhere")} for c, d in trials]}
    model.load_state_dict(saved.state)
    words, best_words = _model_words(saved.weight), _model_words(candidates[best].weight)
    if saved is not candidates[chosen]:
        why = (f"{_model_words(candidates[chosen].weight)} changed too much where nobody checked, so smaller "
               f"changes were judged: {words[0].lower()}{words[1:]} passes")
    elif chosen != best:
        why = (f"{words} scored as well on the checked areas as {best_words[0].lower()}{best_words[1:]} (mIoU "
               f"{scored[chosen]['miou']:.3f} against {scored[best]['miou']:.3f}, a difference within the noise) "
               "and changes less")
    else:
        why = f"{words} scored best on the checked areas" if saved.weight != 1.0 else ""
    if why:
        decision["reason"] = f"{why}. {decision['reason']}"
    if saved.weight == 1.0:
        return Verdict(decision)
    return Verdict(decision | {"blend": saved.weight}, saved.state, saved.cms)


def _model_words(weight: float, short: bool = False) -> str:
    """'The fine-tuned model', or 'The blended model (25% of the way from the current model to the
    fine-tuned one)' (``short``: without the parenthesis, lower case)."""
    if weight == 1.0:
        return "fine-tuned model" if short else "The fine-tuned model"
    return "blended model" if short else (
        f"The blended model ({weight:.0%} of the way from the current model to the fine-tuned one)")
