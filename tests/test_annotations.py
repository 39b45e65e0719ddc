"""The annotation store: what is added is on disk at once, listed with counts, removable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_csunet.images.annotations import (
    ACCEPTED,
    PAINTED,
    AnnotationError,
    AnnotationStore,
    default_annotations_dir,
)
from napari_csunet.settings import Settings, load_settings, save_settings

NAMES = ["matrix", "secondary", "tertiary"]


def _pair(shape=(64, 80)):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, shape, dtype=np.uint8)
    labels = np.zeros(shape, np.uint8)
    labels[:10] = 1
    labels[10:20, :5] = 3
    return image, labels


def test_add_writes_files_and_index_at_once(tmp_path):
    store = AnnotationStore(tmp_path)
    image, labels = _pair()
    entry = store.add(image, labels, name="spot 1", class_names=NAMES, class_colors=["#000", "#111", "#222"])
    assert entry.counts == {"matrix": 800, "secondary": 0, "tertiary": 50}
    np.testing.assert_array_equal(tifffile.imread(tmp_path / entry.image), image)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / entry.labels), labels)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["class_names"] == NAMES and index["entries"][0]["id"] == entry.id
    # a fresh store (napari restarted) sees the same thing
    assert [e.id for e in AnnotationStore(tmp_path).entries()] == [entry.id]
    assert AnnotationStore(tmp_path).pairs() == [{"image": str(tmp_path / entry.image),
                                                  "labels": str(tmp_path / entry.labels),
                                                  "mask": str(tmp_path / entry.mask), "regions": [],
                                                  "whole_image": False}]


@pytest.mark.parametrize(
    ("kwargs", "painted", "accepted"),
    [
        ({}, 50, 0),  # only what the user painted over the prediction trains
        ({"regions": [[0, 0, 5, 40], [60, 70, 70, 90]]}, 50, 5 * 40 + 4 * 10),  # several rectangles, clipped
        ({"whole_image": True}, 50, 800 + 40),  # every labelled pixel
    ],
)
def test_only_painted_or_accepted_pixels_train(tmp_path, kwargs, painted, accepted):
    store = AnnotationStore(tmp_path)
    image, labels = _pair()
    prediction = labels.copy()
    prediction[10:20, :5] = 1  # the user painted these 50 pixels tertiary
    prediction[60:, 70:] = 2
    labels[60:, 70:] = 2  # labelled as predicted: counts only when accepted
    entry = store.add(image, labels, name="a", class_names=NAMES, prediction=prediction, **kwargs)
    mask = tifffile.imread(tmp_path / entry.mask)
    assert entry.painted == painted == int((mask == PAINTED).sum())
    assert int((mask == ACCEPTED).sum()) == accepted and entry.labelled == painted + accepted
    np.testing.assert_array_equal(tifffile.imread(tmp_path / entry.labels), labels)  # the layer, as left
    truth = store.training_labels(entry)
    assert truth[10:20, :5].min() == 3 and int((truth > 0).sum()) == entry.labelled
    np.testing.assert_array_equal(store.vouched("a"), truth > 0)  # what the GUI keeps on screen


def test_readd_replaces_and_nothing_corrected_is_refused(tmp_path):
    store = AnnotationStore(tmp_path)
    image, labels = _pair()
    store.add(image, labels, name="a", class_names=NAMES)
    entry = store.add(image, labels, name="a", class_names=NAMES, regions=[[0, 0, 5, 40]], prediction=labels)
    assert len(store) == 1 and entry.counts == {"matrix": 200, "secondary": 0, "tertiary": 0}
    with pytest.raises(AnnotationError, match="no corrected or accepted pixels"):
        store.add(image, labels, name="b", class_names=NAMES, prediction=labels)


def test_sets_saved_before_masks_train_on_every_label(tmp_path):
    store = AnnotationStore(tmp_path)
    image, labels = _pair()
    entry = store.add(image, labels, name="old", class_names=NAMES)
    index = json.loads((tmp_path / "index.json").read_text())
    for key in ("mask", "regions", "whole_image", "painted"):  # an index written by an older version
        index["entries"][0].pop(key)
    (tmp_path / entry.mask).unlink()
    (tmp_path / "index.json").write_text(json.dumps(index))
    (old,) = store.entries()
    assert old.mask is None and store.pairs()[0].keys() == {"image", "labels"}
    np.testing.assert_array_equal(store.training_labels(old), labels)
    assert store.score("old", labels)["pixel_accuracy"] == 1.0 and store.score("other", labels) is None


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        (np.zeros((64, 80), np.uint8), {}, "no corrected or accepted pixels"),
        (np.full((64, 80), 7, np.uint8), {}, "label 7"),
        (np.ones((32, 80), np.uint8), {}, "image is"),
        (np.ones((64, 80), np.float32), {}, "non-negative integers"),
        (np.ones((64, 80), np.uint8), {"class_names": ["a", "b"]}, "has classes"),
    ],
)
def test_bad_additions_say_why_and_lose_nothing(tmp_path, labels, kwargs, message):
    store = AnnotationStore(tmp_path)
    image, good = _pair()
    store.add(image, good, name="first", class_names=NAMES)
    with pytest.raises(AnnotationError, match=message):
        store.add(image, labels, name="second", **({"class_names": NAMES} | kwargs))
    assert [e.name for e in store.entries()] == ["first"]


def test_remove_deletes_entry_and_files(tmp_path):
    store = AnnotationStore(tmp_path)
    image, labels = _pair()
    a = store.add(image, labels, name="a", class_names=NAMES)
    b = store.add(image, labels, name="b", class_names=NAMES)
    store.remove(a.id)
    assert [e.id for e in store.entries()] == [b.id]
    assert not (tmp_path / a.image).exists() and (tmp_path / b.image).exists()
    with pytest.raises(AnnotationError, match="no annotation"):
        store.remove(a.id)


def test_missing_files_are_skipped_with_a_warning(tmp_path):
    store = AnnotationStore(tmp_path)
    image, labels = _pair()
    entry = store.add(image, labels, name="a", class_names=NAMES)
    (tmp_path / entry.labels).unlink()
    with pytest.warns(UserWarning, match="files missing"):
        assert store.entries() == []


def test_default_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CSUNET_ANNOTATIONS_DIR", str(tmp_path / "ann"))
    assert default_annotations_dir() == tmp_path / "ann"
    assert AnnotationStore().root == tmp_path / "ann"


def test_settings_roundtrip_and_damaged_file(tmp_path):
    path = tmp_path / "settings.json"
    save_settings(Settings(device="cpu", weight_cache_dir="/w", finetune={"steps": 50}), path)
    again = load_settings(path)
    assert (again.device, again.weight_cache_dir, again.finetune) == ("cpu", "/w", {"steps": 50})
    path.write_text("{not json")
    with pytest.warns(UserWarning, match="settings ignored"):
        assert load_settings(path) == Settings()
    assert load_settings() == Settings()  # CSUNET_CONFIG_DIR points at an empty temp dir


@pytest.mark.parametrize(("has_gpu", "cuda_line", "warns"), [
    (True, "cuda: Optional[str] = None", True),
    (True, "cuda: Optional[str] = '12.4'", False),
    (False, "cuda: Optional[str] = None", False),
])
def test_cpu_only_torch_on_a_gpu_machine_is_pointed_out(tmp_path, monkeypatch, has_gpu, cuda_line, warns):
    import importlib.machinery
    import importlib.util
    import shutil

    from napari_csunet.settings import cpu_only_torch_with_gpu

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "version.py").write_text(f"{cuda_line}\nhip: Optional[str] = None\n")
    spec = importlib.machinery.ModuleSpec("torch", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path / "torch")]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec if name == "torch" else None)
    monkeypatch.setattr(shutil, "which", lambda cmd: "/usr/bin/nvidia-smi" if has_gpu and cmd == "nvidia-smi" else None)
    message = cpu_only_torch_with_gpu()
    assert (message is not None) == warns
    if warns:
        assert "CPU-only" in message and "pytorch.org" in message


def test_merge_keeps_earlier_rectangles_and_corrections(tmp_path):
    """A second save of an image with ``merge`` adds to the first: its accepted rectangles stay, and
    so do its painted pixels whose label is unchanged, even where a newer prediction now agrees."""
    store = AnnotationStore(tmp_path)
    image, _ = _pair()
    prediction = np.ones(image.shape, np.uint8)
    labels = prediction.copy()
    labels[30:34, 30:34] = 3  # 16 painted
    store.add(image, labels, name="a", class_names=NAMES, prediction=prediction, regions=[[0, 0, 10, 10]])
    newer = labels.copy()  # the model learnt the correction; the user paints elsewhere
    newer_labels = labels.copy()
    newer_labels[50:52, 50:55] = 2  # 10 more painted
    entry = store.add(image, newer_labels, name="a", class_names=NAMES, prediction=newer, merge=True)
    assert entry.regions == [[0, 0, 10, 10]] and entry.painted == 26 and entry.labelled == 100 + 26
    mask = tifffile.imread(tmp_path / entry.mask)
    assert (mask[:10, :10] == ACCEPTED).all() and (mask[30:34, 30:34] == PAINTED).all()
    assert (mask[50:52, 50:55] == PAINTED).all() and len(store) == 1
    relabelled = newer_labels.copy()
    relabelled[30:34, 30:34] = 0  # the user changed their mind: erased, no longer a correction
    entry = store.add(image, relabelled, name="a", class_names=NAMES, prediction=newer, merge=True)
    assert entry.painted == 10 and entry.labelled == 100 + 10
    entry = store.add(image, newer_labels, name="a", class_names=NAMES, prediction=prediction)  # no merge: replaced
    assert entry.regions is None and entry.labelled == 26
