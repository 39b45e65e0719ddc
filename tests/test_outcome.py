"""One reading of a finished fine-tune child for the Fine-tune tab and the live update."""

from __future__ import annotations

import pytest

from napari_csunet.loop.outcome import Outcome


def _done(tmp_path, decision: dict | None, best_step: int | None = 5, saved: bool = True) -> dict:
    path = tmp_path / "new.safetensors"
    if saved:
        path.write_bytes(b"model")
    return {"event": "done", "path": str(path), "steps": 10, "best_step": best_step, "decision": decision}


@pytest.mark.parametrize("decision, kept, offered, rejected", [
    ({"keep": True, "fair": True, "verdict": "better"}, True, False, False),
    ({"keep": False, "fair": True, "verdict": "not_better"}, False, False, True),
    ({"keep": False, "fair": True, "verdict": "within_noise"}, False, True, True),
    ({"keep": False, "fair": False, "verdict": "unjudged"}, False, True, False),
    (None, False, True, False),  # no decision: nothing judged it
])
def test_the_decision_reads_one_way(tmp_path, decision, kept, offered, rejected):
    outcome = Outcome.of(_done(tmp_path, decision))
    assert (outcome.kept, outcome.offered, outcome.rejected) == (kept, offered, rejected)
    assert outcome.path == tmp_path / "new.safetensors" and outcome.steps == 10


@pytest.mark.parametrize("done", [None, {"event": "done", "path": None}, "missing file"])
def test_no_model_file_no_path(tmp_path, done):
    done = _done(tmp_path, None, saved=False) if done == "missing file" else done
    assert Outcome.of(done).path is None


@pytest.mark.parametrize("best_step, is_current, deleted", [(0, False, True), (0, True, False), (3, False, False)])
def test_only_a_copy_of_the_starting_weights_is_discarded(tmp_path, best_step, is_current, deleted):
    outcome = Outcome.of(_done(tmp_path, {"keep": False, "fair": True}, best_step=best_step))
    current = outcome.path if is_current else tmp_path / "current.safetensors"
    assert outcome.discard_if_start(current) == deleted
    assert outcome.path.exists() != deleted
