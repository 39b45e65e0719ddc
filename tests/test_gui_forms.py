"""magicgui in the GUI: forms generated from the job dataclasses, layer pickers that refresh themselves,
one settings store, shared state in the session."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytestmark = pytest.mark.gui

from napari.layers import Image, Labels  # noqa: E402

from napari_csunet._qt.common import LayerPicker  # noqa: E402
from napari_csunet._qt.config_form import config_form, form_values  # noqa: E402
from napari_csunet.loop.finetune_job import FORM_FIELDS, finetune_defaults  # noqa: E402
from napari_csunet.settings import load_settings  # noqa: E402


def _train_config():
    from csunet_train.config import TrainConfig

    return TrainConfig


@pytest.mark.parametrize(("name", "limits"), [
    ("steps", {"min": 1, "max": 100_000}),
    ("batch_size", {"min": 1, "max": 64}),
    ("aug_strength", {"min": 0.0, "max": 1.0}),
])
def test_form_limits_and_help_come_from_the_config_field(qtbot, name, limits):
    from dataclasses import fields

    config = _train_config()
    form = config_form(config, (name,))
    widget = getattr(form, name)
    assert {k: getattr(widget, k) for k in limits} == limits
    field = next(f for f in fields(config) if f.name == name)
    assert widget.tooltip == field.metadata["help"] and widget.value == field.default


def test_finetune_form_round_trips_into_a_valid_job(qtbot):
    config = _train_config()
    form = config_form(config, FORM_FIELDS, finetune_defaults())
    assert [w.name for w in form] == list(FORM_FIELDS)
    assert list(form.crop.choices) == [256, 512, 768, 1024]
    form.lr.value = 1e-6  # six decimals: small rates are not rounded to 0
    form.crop.value = 512
    values = form_values(form)
    assert values["lr"] == pytest.approx(1e-6) and values["crop"] == 512
    job = config.from_dict({"mode": "finetune", "model": "m.safetensors", "out": "o.safetensors"} | values)
    assert job.crop == 512 and job.steps == finetune_defaults()["steps"]


def test_form_refuses_a_field_the_config_does_not_have(qtbot):
    with pytest.raises(KeyError, match="no field"):
        config_form(_train_config(), ("steps", "not_a_field"))


def test_layer_picker_refreshes_itself_and_follows_the_selection(make_napari_viewer):
    viewer = make_napari_viewer()
    picker = LayerPicker(viewer, Labels, extra=("all",))
    assert picker.names() == ["all"] and picker.value == "all"
    a = viewer.add_labels(np.zeros((8, 8), np.uint8), name="a")
    viewer.add_image(np.zeros((8, 8)), name="img")  # another type: never listed
    b = viewer.add_labels(np.zeros((8, 8), np.uint8), name="b")
    assert picker.names() == ["all", "a", "b"] and picker.value is b  # the new layer is selected in napari
    viewer.layers.selection.active = a
    assert picker.value is a
    viewer.layers.remove(a)
    assert picker.names() == ["all", "b"] and picker.value in ("all", b)
    picker.choose("b")
    assert picker.value is b and not isinstance(picker.value, Image)


def test_one_settings_store_and_shared_state_in_the_session(docked):
    w = docked
    session = w.session
    assert w.correct_panel.store is session.annotations  # one annotation set, held by the session
    assert not hasattr(w.finetune_panel, "correct")  # the Fine-tune tab reads the session, not the Correct tab
    layer = w.viewer.add_labels(np.zeros((16, 16), np.uint8), name="x labels")
    w.correct_panel.set_labels_layer(layer)
    assert session.correcting.name == layer.name  # (napari hands plugins proxies of its layers)
    w.correct_panel.keys.queue_keys_on_layer.value = True
    assert load_settings().queue_keys_on_layer and session.settings.queue_keys_on_layer  # our file, nothing else
    from importlib.resources import files

    assert "configurations" not in (files("napari_csunet") / "napari.yaml").read_text()  # no second store


@pytest.mark.parametrize("native_bf16", [True, False])
def test_mixed_precision_setting_reaches_the_segmenter_and_is_remembered(widget, qtbot, monkeypatch, native_bf16):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    session, box = widget.session, widget.model_panel.precision.mixed_precision
    assert box.value and session.settings.mixed_precision
    box.value = False
    qtbot.waitUntil(lambda: not session.busy, timeout=60_000)
    assert session.segmenter.amp_dtype is None and not load_settings().mixed_precision
    box.value = True
    qtbot.waitUntil(lambda: not session.busy, timeout=60_000)
    assert session.segmenter.amp_dtype == (torch.bfloat16 if native_bf16 else None)
    assert load_settings().mixed_precision and session._segmenter_kwargs()["amp"]


@pytest.mark.parametrize("first_load", [False, True])
def test_a_precision_change_while_busy_is_applied_when_the_model_is_free(widget, qtbot, monkeypatch, first_load):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    session, box = widget.session, widget.model_panel.precision.mixed_precision
    before = session.segmenter
    before.amp_dtype = torch.bfloat16  # what a CPU with bf16 runs, whatever this one has
    if first_load:
        session.segmenter = None
    session.set_busy(True)  # segmenting, or loading the first model with the settings of its start
    box.value = False
    session.segmenter = before  # the job's result
    assert not load_settings().mixed_precision
    session.set_busy(False)
    qtbot.waitUntil(lambda: session.segmenter is not before and not session.busy, timeout=60_000)
    assert session.segmenter.amp_dtype is None
