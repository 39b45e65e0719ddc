"""*Export for bioimage.io…*: the Model tab's door to :mod:`napari_csunet.export` (a worker thread:
tracing, ONNX export and bioimage.io's own test take a minute on a CPU)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari.qt.threading import create_worker
from qtpy.QtWidgets import QFileDialog, QPushButton, QWidget

from .common import StatusLine

__all__ = ["ExportButton", "imported_model_file", "OPEN_FILTER"]

#: the Model tab's open dialog: model files, and bioimage.io packages exported by napari-csunet
OPEN_FILTER = "Model files (*.safetensors);;bioimage.io packages exported by napari-csunet (*.zip *.yaml)"


class ExportButton(QPushButton):
    """Exports the selected model file as a bioimage.io package (.zip), tested by bioimage.io."""

    def __init__(self, selected: Callable[[], str | None], status: StatusLine, parent: QWidget | None = None) -> None:
        super().__init__("Export for bioimage.io…", parent)
        self.setToolTip("Write the selected model file as a bioimage.io model package (TorchScript + ONNX, "
                        "test data, model card) that ilastik, deepImageJ and bioimage.io's tools run")
        self.selected, self.status = selected, status
        self.worker = None
        self.clicked.connect(lambda: self.export())

    def export(self, out: str | None = None):
        """Export to ``out`` (asks for a .zip path when None); returns the worker, or None."""
        model = self.selected()
        if not model:
            self.status.error("select a model file to export")
            return None
        if out is None:
            start = str(Path.home() / f"{Path(model).stem}.bioimageio.zip")
            out, _ = QFileDialog.getSaveFileName(self, "Export for bioimage.io", start, "bioimage.io package (*.zip)")
            if not out:
                return None
        if not out.endswith(".zip"):
            out += ".zip"
        self.setEnabled(False)
        self.status.info(f"exporting {Path(model).stem} for bioimage.io (a minute: tracing, ONNX, bioimage.io's test) …")
        self.worker = create_worker(_export, model, out, _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(self._done)
        self.worker.errored.connect(lambda exc: self.status.error(f"export failed: {exc}"))
        self.worker.finished.connect(lambda: self.setEnabled(True))
        self.worker.start()
        return self.worker

    def _done(self, result) -> None:
        if result.test_passed is False:
            self.status.error(f"wrote {result.path}, but bioimage.io's test failed:\n{result.test_log}")
        elif result.test_passed is None:
            self.status.warning(f"wrote {result.path}; not tested (install napari-csunet[export])")
        else:
            self.status.info(f"wrote {result.path}: bioimage.io's test passed", notify=True)


def _export(model: str, out: str):
    """With the optional libraries: TorchScript + ONNX, validated and tested; without: TorchScript only."""
    from ..export.bioimageio import export_bioimageio

    try:
        import bioimageio.core  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return export_bioimageio(model, out, weights=("torchscript",), validate=False, test=False)
    return export_bioimageio(model, out)


def imported_model_file(path: str, status: StatusLine, refresh: Callable[[], None]) -> str | None:
    """``path`` itself for a model file; for a bioimage.io package, the model file imported from it
    into the user's models (listed at once), or None with the refusal on ``status``."""
    if Path(path).suffix.lower() not in (".zip", ".yaml") and not Path(path).is_dir():
        return path
    from ..export import ExportError
    from ..export.importer import import_package

    try:
        model = import_package(path)
    except ExportError as exc:
        status.error(str(exc))
        return None
    refresh()
    return str(model)
