"""The session's per-image records: which image labels belong to, their prediction and classes, the
image's calibration, forgotten with their layers; a labels file opened from disk (no record) still
names its classes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari.layers import Labels  # noqa: E402

from napari_csunet._qt.records import ImageRecords  # noqa: E402
from napari_csunet.plugin.layerdata import labels_kwargs  # noqa: E402

NAMES, COLORS = ["matrix", "pore"], ["#ff0000", "#00ff00"]


def _segmented(viewer):
    """An image, its labels with one painted pixel, and their record."""
    records = ImageRecords(viewer)
    image = viewer.add_image(np.zeros((16, 16), np.uint8), name="im")
    prediction = np.ones((16, 16), np.uint8)
    labels = viewer.add_labels(prediction.copy(), name="im labels")
    labels.data[0, 0] = 2
    records.register(image, labels, prediction, NAMES, COLORS, model_name="m")
    return records, image, labels


def test_a_record_answers_for_its_image_and_labels(make_napari_viewer):
    from napari.utils._proxies import PublicOnlyProxy

    viewer = make_napari_viewer()
    records, image, labels = _segmented(viewer)
    record = records.for_image(image)
    assert record is records.for_labels(PublicOnlyProxy.create(labels))  # a plugin's viewer hands out proxies
    assert records.of_image(PublicOnlyProxy.create(image)) is record and len(records) == 1
    assert records.image_of(labels) is image and records.class_names(labels) == NAMES
    assert records.class_colors(labels) == COLORS and record.model_name == "m"
    painted = records.painted(labels)
    assert painted[0, 0] and painted.sum() == 1
    labels.data = np.zeros((8, 8), np.uint8)  # another shape: the prediction no longer fits
    assert records.prediction(labels) is None and records.painted(labels) is None


def test_a_record_is_forgotten_with_its_layers(make_napari_viewer):
    """Closing the image keeps what its open labels need (Revert, Undo, what was painted); closing
    the labels too forgets the record. Closing the labels first keeps the image's calibration."""
    from napari_csunet._qt.calibration import databar_of, pixel_size_of

    viewer = make_napari_viewer()
    records, image, labels = _segmented(viewer)
    viewer.layers.remove("im")
    record = records.for_labels(labels)
    assert records.for_image(image) is None and len(records) == 1 and record.image is None
    assert records.prediction(labels) is not None and records.painted(labels).sum() == 1
    assert records.image_of(labels) is None
    viewer.layers.remove("im labels")
    assert len(records) == 0

    records, image, labels = _segmented(viewer)
    assert pixel_size_of(records.of_image(image)) is None and databar_of(records.of_image(image)) is None  # read
    viewer.layers.remove("im labels")
    record = records.for_image(image)
    assert len(records) == 1 and records.for_labels(labels) is None  # the labels' facts went with them
    assert record.labels is None and record.prediction is None and record.previous is None
    assert record.pixel_size is None and record.databar is None  # the image's calibration stays


def test_a_record_is_not_kept_for_a_closed_image_and_labels_belong_to_one_image(make_napari_viewer):
    viewer = make_napari_viewer()
    records, image, labels = _segmented(viewer)
    gone = viewer.add_image(np.zeros((16, 16), np.uint8), name="closed while segmenting")
    viewer.layers.remove(gone)
    records.register(gone, labels, np.ones((16, 16), np.uint8), NAMES, COLORS)  # its result came late
    assert records.for_image(gone) is None and len(records) == 1  # nothing would ever forget it
    other = viewer.add_image(np.zeros((16, 16), np.uint8), name="renamed")
    records.register(other, labels, np.full((16, 16), 2, np.uint8), NAMES, COLORS)
    assert records.for_labels(labels).image is other and records.for_image(image).labels is None


def test_labels_opened_from_disk_name_their_classes_without_a_record(make_napari_viewer):
    viewer = make_napari_viewer()
    records = ImageRecords(viewer)
    image = viewer.add_image(np.zeros((16, 16), np.uint8), name="im")
    opened = viewer.add_layer(Labels(np.ones((16, 16), np.uint8), **labels_kwargs(NAMES, COLORS, "saved labels")))
    assert records.for_labels(opened) is None and records.prediction(opened) is None
    assert records.class_names(opened) == NAMES and records.class_colors(opened) == COLORS
    assert records.image_of(opened) is None  # no record: not guessed ...
    assert records.image_of(opened, guess=True) is image  # ... unless asked: the one open image of its shape
    viewer.add_image(np.zeros((16, 16), np.uint8), name="another")
    assert records.image_of(opened, guess=True) is None  # two candidates: none


class _Segmentation:
    """Stands in for the Segment tab: what the other panels may ask of it (the session's protocol)."""

    running = False

    def __init__(self, targets: list) -> None:
        self._targets, self.calls = targets, []

    def targets(self) -> list:
        return list(self._targets)

    def segment(self, layers=None, on_done=None, keep=None, uncertainty=False):
        self.calls.append((list(layers or []), uncertainty))
        return object()


@pytest.mark.gui
def test_the_panels_segment_through_the_session_never_through_the_segment_tab(widget):
    """The Segment tab registers itself with the session and relays what it wrote; the Fine-tune tab
    and the correction queue ask the session, so any Segmentation serves them."""
    w = widget
    assert w.session.segmentation is w.segment_panel
    relayed: list = []
    w.session.segmented.connect(relayed.append)
    image = w.viewer.layers[0]
    written = w.viewer.add_labels(np.zeros(image.data.shape[:2], np.uint8), name=f"{image.name} labels")
    w.segment_panel.segmented.emit([written])
    assert [[id(x) for x in r] for r in relayed] == [[id(written)]]
    assert w.viewer.layers.selection.active.name == written.name  # the Correct tab paints on it  # the Correct tab paints on it
    stand_in = _Segmentation([image])
    w.session.segmentation = stand_in
    w.session.correcting = None
    assert w.finetune_panel._images_to_resegment() == [image]  # the Segment tab's choice, via the session
    w.session.segmentation = None
    assert w.finetune_panel._images_to_resegment() == []
