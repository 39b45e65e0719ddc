"""After a fine-tune: measure the best model where nobody checked, decide, and when it changed too
much there, try the model halfway back to the starting one before giving up.

A fine-tune that fixed the user's corrections often also moved a rare phase on the images nobody
checked (docs/training.md). Interpolating the weights between the starting and the fine-tuned
model (WiSE-FT, Wortsman et al. 2022) keeps much of the gain while moving the rest less; the
blend is judged by the same rules (held-out reviewed blocks, the change where it did not train)
and made current only when it passes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .judge import CLASS_CHANGE_LIMIT, ELSEWHERE_LIMIT, FairValidation, decide
from .unseen import UnseenPixels

__all__ = ["BLEND", "Verdict", "blend_states", "judge_finetune"]

#: the weight of the fine-tuned model in the blend tried when it changed too much where nobody checked
BLEND = 0.5


def blend_states(start: dict[str, Any], tuned: dict[str, Any], alpha: float) -> dict[str, Any]:
    """``start + alpha x (tuned - start)`` for floating-point tensors (counters such as BatchNorm's
    ``num_batches_tracked`` are taken from ``tuned``)."""
    return {k: start[k] + alpha * (v - start[k]) if v.is_floating_point() else v for k, v in tuned.items()}


@dataclass
class Verdict:
    decision: dict[str, Any]
    blended: dict[str, Any] | None = None  # the state to save instead of the best one (it was kept)
    blended_cms: Any = None  # its held-out blocks' confusion matrices


def judge_finetune(model, start_state: dict[str, Any] | None, best_state: dict[str, Any] | None,
                   validation: FairValidation | None, best_cms, unseen: UnseenPixels | None,
                   predict: Callable[[Any], Any], score: Callable[[Any], Any], class_names: Sequence[str],
                   trained_steps: int, best_step: int | None, painted_only: bool, images: int,
                   limits: tuple[float, float] = (ELSEWHERE_LIMIT, CLASS_CHANGE_LIMIT)) -> Verdict:
    """The decision on the best model (``best_state``, loaded into ``model``); if it is better but
    changes too much where nobody checked, the :data:`BLEND` of it and ``start_state`` is judged too,
    and returned to be saved when it may become current.

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
    elsewhere = measure(best_state)
    decision = judged(best_cms, elsewhere)
    if decision["verdict"] != "unverified_elsewhere" or start_state is None or validation is None:
        return Verdict(decision)
    blend = blend_states(start_state, best_state, BLEND)
    blend_elsewhere = measure(blend)
    blend_cms = score(model)
    blended = judged(blend_cms, blend_elsewhere)
    if not blended["keep"]:
        model.load_state_dict(best_state)
        return Verdict(decision | {"blend_tried": _summary(blended)})
    blended["reason"] = (f"The fine-tuned model changed too much where nobody checked, so the model halfway between "
                         f"it and the current one was judged. {blended['reason']}")
    return Verdict(blended | {"blend": BLEND, "unblended": _summary(decision)}, blend, blend_cms)


def _summary(decision: dict[str, Any]) -> dict[str, Any]:
    return {k: decision.get(k) for k in ("verdict", "new", "elsewhere")}
