"""What a new user meets in the dock (issue 22): the layer that is selected after Segment, tabs that
fit the dock's width, particle statistics only where they mean something, Fine-tune texts that
follow the state."""

from __future__ import annotations

import pytest

pytest.importorskip("qtpy")
pytestmark = pytest.mark.gui

from napari.layers import Image, Labels  # noqa: E402

IMAGE = "superalloy spot2_0d_0"


def segment(w, qtbot, uncertainty: bool = True) -> Labels:
    w.segment_panel.want_uncertainty.setChecked(uncertainty)
    w.segment_panel.want_probs.setChecked(uncertainty)
    assert w.segment_panel.segment() is not None, w.segment_panel.status.text()
    qtbot.waitUntil(lambda: not w.segment_panel.running, timeout=120_000)
    return w.viewer.layers[f"{IMAGE} labels"]


def test_after_segment_the_labels_are_selected_in_paint_mode_above_the_outputs(widget, qtbot):
    w, viewer = widget, widget.viewer
    panel = w.correct_panel
    panel.class_buttons[2].click()  # a class chosen before there is anything to paint on
    labels = segment(w, qtbot)
    names = [layer.name for layer in viewer.layers]
    outputs = [n for n in names if n.startswith(f"{IMAGE} p(") or n == f"{IMAGE} uncertainty"]
    assert len(outputs) == 4 and all(names.index(n) < names.index(labels.name) for n in outputs)
    assert viewer.layers.selection.active == labels and list(viewer.layers.selection) == [labels]
    assert labels.mode == "paint" and labels.selected_label == 2 and panel.class_buttons[2].isChecked()

    viewer.layers.selection.active = viewer.layers[IMAGE]  # the user looks at the image ...
    labels.mode = "pan_zoom"
    panel.class_buttons[3].click()  # ... then clicks a class: the labels are painted on
    assert viewer.layers.selection.active == labels and labels.mode == "paint" and labels.selected_label == 3

    segment(w, qtbot)  # again: the outputs get new data, the labels stay on top and selected
    assert [layer.name for layer in viewer.layers] == names
    assert viewer.layers.selection.active == labels and labels.selected_label == 3
    assert not any(isinstance(layer, Image) and layer in viewer.layers.selection for layer in viewer.layers)


def test_every_tab_fits_the_dock_at_its_least_width(widget, qtbot):
    """No widget of any tab reaches past the viewport (the tabs do not scroll sideways), after a
    segmentation and the statistics: the states with the longest texts."""

    from napari_csunet._qt.main_widget import clipped_widgets

    w, viewer = widget, widget.viewer
    segment(w, qtbot)
    w.inspect_panel.labels.choose(f"{IMAGE} labels")
    assert w.inspect_panel.compute() is not None
    qtbot.waitUntil(lambda: w.inspect_panel.worker is None, timeout=60_000)
    viewer.window.show()  # laid out as on screen
    w.setMaximumWidth(w.minimumWidth())  # the dock as narrow as it goes
    for i in range(w.tabs.count()):
        w.tabs.setCurrentIndex(i)
        qtbot.wait(50)
        assert w.width() == w.minimumWidth()
        clipped = clipped_widgets(w.tabs.widget(i))
        assert not clipped, f"{w.tabs.tabText(i)}: " + "\n".join(clipped)


def test_inspect_counts_particles_only_of_particle_classes_and_as_the_histogram(docked, qtbot):
    """A coating layer is continuous (no particle numbers, the table says why); the pores' n in the
    table is the number of sizes in their histogram (edge-cut pores in neither)."""
    import numpy as np
    from skimage.draw import disk

    from napari_csunet.plugin.layerdata import labels_kwargs

    labels = np.ones((300, 300), np.uint8)
    labels[180:240] = 2
    labels[200:240, [60, 150, 240]] = 1  # cracks from below, not through
    for cy, cx in ((60, 50), (60, 150), (100, 250), (0, 100), (299, 20)):  # two cut by the edge
        labels[disk((cy, cx), 10, shape=labels.shape)] = 3
    viewer, panel = docked.viewer, docked.inspect_panel
    viewer.add_labels(labels, **labels_kwargs(["bulk", "coating", "pores"], ["#404040", "#2ca02c", "#ff00ff"], "coated"))
    panel.labels.choose("coated")
    assert panel.compute() is not None
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60_000)
    headers = [panel.table.horizontalHeaderItem(c).text() for c in range(panel.table.columnCount())]
    n = headers.index("n")
    bulk, coating, pores = ([panel.table.item(r, c).text() if panel.table.item(r, c) else ""
                             for c in range(panel.table.columnCount())] for r in range(3))
    assert bulk[n] == "matrix" and coating[n] == "continuous phase" and panel.table.columnSpan(1, n) > 1
    assert "one region across" in panel.table.item(1, n).toolTip()
    assert panel.note.text().startswith("coating: 100% of it is one region") and not panel.note.isHidden()
    sizes = panel.measurement.distribution("eq_diameter_px")  # what the histogram draws
    assert set(sizes) == {"pores"} and pores[n] == str(len(sizes["pores"])) == "3"
    assert panel.rows[2]["particles"] == 5 and not panel.sizes_plot.pixmap().isNull()


def test_finetune_texts_follow_the_state(widget, qtbot):
    """The empty plot's axis is the chosen step count, the tab says what the training set holds, and
    the best evaluation's ring at mIoU 1.0 stays clear of the caption line."""
    from napari_csunet._qt.plot import RING

    w = widget
    panel = w.finetune_panel
    panel.form.steps.value = 100
    assert panel.plot.steps == 100
    assert "training set is empty" in panel.training_set.text()
    labels = segment(w, qtbot, uncertainty=False)
    labels.data[10:60, 10:60] = 3  # a correction
    assert w.correct_panel.add_to_training_set() is not None, w.correct_panel.status.text()
    assert panel.training_set.text().startswith("training set: 1 corrected image, ")
    assert "painted" in panel.training_set.text() and panel.training_set.kind == "info"

    panel.plot.add_loss(0, 1.0)
    panel.plot.add_val(10, 1.0, best=True)
    panel.form.steps.value = 50  # a run's curves stay until the next start
    assert panel.plot.steps == 100
    area = panel.plot.area()
    assert area.top() - RING >= panel.plot.caption_height() and area.height() > 50


@pytest.mark.parametrize("theme", ["dark", "light"])
def test_swatches_and_the_selected_model_are_readable_on_both_themes(widget, theme):
    import re

    from napari_csunet._qt.theme import contrast_ratio, theme_color

    w, viewer = widget, widget.viewer
    viewer.theme = theme
    background, text = theme_color(viewer, "background"), theme_color(viewer, "text")
    style = w.model_panel.files.styleSheet()
    assert ":!active" in style  # unfocused too
    fill, ink = re.search(r"background-color: (#\w+); color: (#\w+)", style).groups()
    assert ink == text and contrast_ratio(fill, ink) >= 4.5
    for button in w.correct_panel.class_buttons:  # the tiny model's grey matrix included
        image = button.icon().pixmap(14, 14).toImage()
        edge = image.pixelColor(image.width() // 2, 1).name()
        assert contrast_ratio(edge, background) >= 3.0, (button.text(), edge)
