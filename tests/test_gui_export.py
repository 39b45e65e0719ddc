"""The Model tab's *Export for bioimage.io…* button (issue 23): the selected model file becomes a
package on a worker thread, and the status line says what happened."""

from __future__ import annotations

import zipfile

import pytest

pytest.importorskip("qtpy")
pytestmark = pytest.mark.gui


def _light_export(model, out):
    """TorchScript only, unchecked: the button's plumbing, not bioimage.io's test (test_export.py)."""
    from napari_csunet.export.bioimageio import export_bioimageio

    return export_bioimageio(model, out, weights=("torchscript",), validate=False, test=False)


def test_export_button_writes_the_selected_model(docked, tiny_model, qtbot, tmp_path, monkeypatch):
    from napari_csunet._qt import export_button

    monkeypatch.setattr(export_button, "_export", _light_export)
    panel = docked.model_panel
    panel.refresh_files()
    items = [panel.files.item(i).text() for i in range(panel.files.count())]
    panel.files.setCurrentRow(next(i for i, t in enumerate(items) if t.startswith("tiny-test")))
    worker = panel.export_btn.export(str(tmp_path / "tiny"))
    assert worker is not None and not panel.export_btn.isEnabled()
    qtbot.waitUntil(lambda: panel.export_btn.isEnabled(), timeout=120_000)
    assert "tiny.zip" in panel.status.text(), panel.status.text()
    with zipfile.ZipFile(tmp_path / "tiny.zip") as zf:
        assert {"rdf.yaml", "model.safetensors", "weights_torchscript.pt"} <= set(zf.namelist())


def test_export_button_says_what_is_missing(docked, qtbot, tmp_path):
    panel = docked.model_panel
    panel.files.clear()
    assert panel.export_btn.export(str(tmp_path / "x.zip")) is None
    assert "select a model file" in panel.status.text()


def test_open_imports_our_package_and_refuses_a_foreign_one(docked, qtbot, tmp_path):
    import yaml

    from napari_csunet.export.bioimageio import export_bioimageio
    from napari_csunet.models.catalog import STARTER_DIR

    pkg = tmp_path / "ebc"
    export_bioimageio(STARTER_DIR / "starter-ebc.safetensors", pkg, weights=("torchscript",), validate=False,
                      test=False)
    panel = docked.model_panel
    assert panel.open_file(str(pkg / "rdf.yaml")) is not None
    qtbot.waitUntil(lambda: docked.session.segmenter is not None and not docked.session.busy, timeout=60_000)
    assert docked.session.info.class_names == ["background", "oxide", "crack"]
    rdf = yaml.safe_load((pkg / "rdf.yaml").read_text())
    rdf.pop("config")
    (pkg / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    assert panel.open_file(str(pkg)) is None
    assert "did not export" in panel.status.text()
