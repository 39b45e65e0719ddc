"""What a finished fine-tune child left, read one way for the Fine-tune tab and the live update.

The child decides (``csunet_train.verdict``): its ``done`` event names the model file it saved and
whether that model beat the current one on held-out reviewed pixels. Both GUI paths ask the same
questions of it (is there a model file, was it kept, offered or fairly rejected, is it the starting
weights again); only what they do with a model nothing fair judged differs (the tab offers it, a
live update uses it), and that policy stays with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Outcome", "OFFERED"]

#: verdicts whose model is offered, not made current: nothing fair judged it, its gain is within the
#: noise, or it changes the other (unchecked) images a lot
OFFERED = ("unjudged", "within_noise", "unverified_elsewhere")


@dataclass(frozen=True)
class Outcome:
    """A fine-tune's end: the model file (None when no step finished or it is gone) and the decision."""

    path: Path | None
    decision: dict[str, Any] = field(default_factory=lambda: {"keep": False, "verdict": "unjudged"})
    best_step: int | None = None
    stopped: bool = False
    steps: int | None = None

    @classmethod
    def of(cls, done: dict[str, Any] | None) -> Outcome:
        """From the child's ``done`` event (None: stopped or failed before it)."""
        done = done or {}
        path = Path(done["path"]) if done.get("path") else None
        decision = done.get("decision") or {"keep": False, "verdict": "unjudged"}
        return cls(path if path is not None and path.exists() else None, decision,
                   done.get("best_step", decision.get("best_step")), bool(done.get("stopped")), done.get("steps"))

    @property
    def kept(self) -> bool:
        """Better on the held-out reviewed pixels (and not changing the rest much): to be made current."""
        return bool(self.decision.get("keep"))

    @property
    def offered(self) -> bool:
        """Not judged, or not clearly better: for the user to decide, never made current silently."""
        return not self.kept and self.decision.get("verdict") in OFFERED

    @property
    def rejected(self) -> bool:
        """Judged fairly (held-out reviewed pixels) and not better."""
        return bool(self.decision.get("fair")) and not self.kept

    def discard_if_start(self, current: Path | None) -> bool:
        """Delete the file when it holds the starting weights again (no step beat them), so no
        identical "new" model is listed; never the current model's file. True when deleted."""
        if self.best_step != 0 or self.path is None or self.path == current:
            return False
        self.path.unlink(missing_ok=True)
        return True
