"""One model factory: a preset, a model file, or a new model for other classes, with its provenance."""

from __future__ import annotations

from napari_csunet.models.factory import create_model, fit_head
from napari_csunet.models.modelfile import has_untrained_head


def test_a_preset_gets_its_classes_and_random_weights() -> None:
    model, info = create_model("csunet-tiny", ["pore", "grain"], preset=True, in_chans=1)
    assert info.preset == "csunet-tiny" and info.class_names == ["pore", "grain"] and model.config.num_classes == 2
    assert info.sources == {} and not info.provenance


def test_a_model_file_as_saved_or_for_new_classes_with_the_head_written_once() -> None:
    model, info = create_model("micro-tiny")
    assert info.is_pretraining_only
    new, new_info = create_model("micro-tiny", ["matrix", "pore"])
    head = new_info.provenance["head_reinitialised"]
    assert head == {"from_outputs": info.num_classes, "to_classes": ["matrix", "pore"], "reason": "new classes"}
    assert has_untrained_head(new_info.provenance) and new_info.provenance["started_from"] == "micro-tiny"
    assert new.config.num_classes == 2 and new_info.name.startswith("micro-tiny-matrix")
    same, nothing = fit_head(new, ["a", "b"], "class count")
    assert same is new and nothing is None
