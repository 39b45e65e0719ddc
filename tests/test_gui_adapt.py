"""'Adapt to my images' in a real viewer: the pretraining child runs on the open micrograph, and the
adapted model becomes the start of the next new model; bad inputs are refused with a message."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytestmark = [pytest.mark.gui, pytest.mark.slow]

from napari_csunet.models.catalog import pretrained_models, user_models_dir  # noqa: E402
from napari_csunet.models.modelfile import read_model_info  # noqa: E402


def test_adapt_on_the_open_image_makes_a_new_starting_point(widget, qtbot):
    from napari_csunet.plugin import samples

    (data, kwargs, _), = samples.superalloy()
    widget.viewer.add_image(data, **kwargs)
    adapt = widget.model_panel.adapt
    adapt.form.steps.value = 2
    widget.session.settings.mixed_precision = False  # the Model tab's box, without rebuilding the model
    assert adapt.adapt_on_open_images()
    assert not adapt.open_btn.isEnabled() and adapt.stop_btn.isEnabled()
    assert adapt.job.spec["amp"] is False
    qtbot.waitUntil(lambda: not adapt.running, timeout=240_000)
    assert "ready" in adapt.status.text(), adapt.status.text()
    adapted = [e for e in pretrained_models() if "-adapted-" in e["name"]]
    assert len(adapted) == 1 and adapted[0]["path"].startswith(str(user_models_dir()))
    info = read_model_info(adapted[0]["path"])
    assert info.is_pretraining_only and info.provenance["started_from"].endswith("micro-tiny.safetensors")
    assert info.provenance["steps"] == 2 and info.provenance["previous"]["task"] == "pretraining"
    assert widget.model_panel.preset.currentText() == adapted[0]["name"]  # the next new model starts here


@pytest.mark.parametrize("shape", [(3, 64, 64), (8, 8)])
def test_adapt_refuses_images_it_cannot_use(widget, shape):
    widget.viewer.add_image(np.zeros(shape, np.uint8), name="odd", rgb=False)
    adapt = widget.model_panel.adapt
    assert not adapt.adapt_on_open_images()
    assert adapt.status.kind == "error" and "odd" in adapt.status.text() and not adapt.running
