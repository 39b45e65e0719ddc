"""Model panel: pick a model file (starter or fine-tuned) or build a preset with weight sources.

Model files come first because they already know their classes; a preset needs class names and
encoder weights (cached, downloadable, or a drop-in path when offline). The device and the weight
cache folder are remembered between sessions.
"""

from __future__ import annotations

from pathlib import Path

import napari
from napari.qt.threading import create_worker
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..models.catalog import pretrained_models, scan_model_files
from ..models.registry import PRESETS
from ..settings import DEVICES, Settings, cpu_only_torch_with_gpu, save_settings
from .adapt_panel import AdaptPanel
from .common import StatusLine, form_group, hbox
from .compat import avoid_triton_llvm_clash
from .config_form import config_form, form_rows
from .export_button import OPEN_FILTER, ExportButton, imported_model_file
from .finetune_text import model_score
from .session import ModelSession
from .weights_info import source_status

__all__ = ["ModelPanel"]

RANDOM = "random (train from scratch)"
PATH_ROLE = Qt.ItemDataRole.UserRole


class ModelPanel(QWidget):
    """Choose, build, save the current model; set device and weight cache."""

    def __init__(self, viewer: napari.Viewer, session: ModelSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.session = viewer, session
        settings = session.settings

        self.files = QListWidget()
        self.files.setMinimumHeight(90)
        self.files.setWordWrap(True)  # long entries wrap instead of needing a horizontal scrollbar
        self.files.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.files.itemDoubleClicked.connect(lambda *_: self.load_selected())
        self.load_btn = QPushButton("Load selected")
        self.load_btn.clicked.connect(lambda: self.load_selected())
        self.open_btn = QPushButton("Open model file…")
        self.open_btn.clicked.connect(lambda: self.open_file())
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(lambda: self.refresh_files())
        file_buttons = hbox(self.load_btn, self.open_btn, refresh)

        self.preset = QComboBox()  # pretrained model files first (a new model starts from them), then presets
        self.pretrained: dict[str, dict] = {}
        self._fill_start_choices()
        self.cnn_source, self.swin_source = QComboBox(), QComboBox()
        self.classes = QLineEdit("matrix, secondary, tertiary")
        self.classes.setToolTip("Class names, comma-separated: label 1 is the first")
        self.allow_download = QCheckBox("download missing weights")
        self.allow_download.setChecked(settings.allow_download)
        self.weights_status = StatusLine()
        self.build_btn = QPushButton("Build model")
        self.build_btn.clicked.connect(lambda: self.build_preset())
        for combo in (self.preset, self.cnn_source, self.swin_source):
            combo.currentIndexChanged.connect(self._on_preset_or_source)
        self.allow_download.toggled.connect(self._remember_download)
        self.adapt = AdaptPanel(viewer, self._pretrained_start, lambda: session.settings.device,
                                lambda: session.settings.mixed_precision)
        self.adapt.adapted.connect(self._on_adapted)

        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setCurrentText(settings.device)
        self.device.currentTextChanged.connect(self.session.set_device)
        self.precision = config_form(Settings, ["mixed_precision"], {"mixed_precision": settings.mixed_precision})
        self.precision.mixed_precision.changed.connect(self.session.set_mixed_precision)
        self.device_warning = StatusLine()
        warning = cpu_only_torch_with_gpu()
        if warning:
            self.device_warning.warning(warning, notify=False)
        self.cache_dir = QLineEdit(settings.weight_cache_dir)
        self.cache_dir.setPlaceholderText("default: the platform cache folder")
        self.cache_dir.setToolTip("CSUNET_CACHE_DIR, when set, takes precedence")
        self.cache_dir.editingFinished.connect(lambda: self.set_cache_dir(self.cache_dir.text()))
        browse = QPushButton("…")
        browse.clicked.connect(self._browse_cache)

        self.current = StatusLine(session.describe())
        self.save_btn = QPushButton("Save model file…")
        self.save_btn.clicked.connect(lambda: self.save_to())
        self.status = StatusLine()
        self.export_btn = ExportButton(self._selected_path, self.status)

        layout = QVBoxLayout(self)
        layout.addWidget(form_group("Model files (starter and fine-tuned)", [self.files, file_buttons,
                                                                             self.export_btn]))
        layout.addWidget(form_group("New model for your classes", [
            ("start from", self.preset), ("CNN weights", self.cnn_source), ("Swin weights", self.swin_source),
            ("classes", self.classes), self.allow_download, self.weights_status, self.build_btn]))
        layout.addWidget(self.adapt)
        layout.addWidget(form_group("Device and storage", [
            ("device", self.device), *form_rows(self.precision), self.device_warning,
            ("weight cache", hbox(self.cache_dir, browse))]))
        layout.addWidget(form_group("Current model", [self.current, self.save_btn]))
        layout.addWidget(self.status)
        layout.addStretch(1)

        session.changed.connect(self._on_model_changed)
        session.failed.connect(self.status.error)
        session.busy_changed.connect(self._on_busy)
        self.preset.setCurrentText("micro-tiny" if "micro-tiny" in self.pretrained else "csunet-small")
        self._on_preset_or_source()
        self.refresh_files()
        self._on_model_changed()

    # -- model files ---------------------------------------------------------------------------

    def refresh_files(self) -> None:
        """List the user's fine-tuned models first (newest first), then the starter models, then
        the files of the models folder that cannot be read, greyed out with the reason."""
        self._fill_start_choices()
        self.files.clear()
        entries, unreadable = scan_model_files()
        for entry in entries:
            score = model_score(entry.get("provenance") or {}) if entry["kind"] != "pretrained" else ""
            score = f" · {score}" if score else ""
            what = "start of a new model, below" if entry["kind"] == "pretrained" else ", ".join(entry["classes"])
            item = QListWidgetItem(f"{entry['name']} ({entry['kind']}) · {what}{score}")
            item.setToolTip(f"{entry['path']}\n{entry.get('description') or ''}")
            item.setData(PATH_ROLE, entry["path"])
            self.files.addItem(item)
        for bad in unreadable:  # listed, never loadable: the user sees why a file they expect is not a model
            item = QListWidgetItem(f"{Path(bad['path']).name} (unreadable) · {bad['reason']}")
            item.setToolTip(f"{bad['path']}\ncannot be read: {bad['reason']}\nmove or delete it; the other models "
                            "are not affected")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.files.addItem(item)
        if entries:
            self.files.setCurrentRow(0)

    def _fill_start_choices(self, select: str | None = None) -> None:
        """Pretrained models (shipped and adapted, newest adapted first), then the presets."""
        current = select or self.preset.currentText()
        self.preset.blockSignals(True)
        self.preset.clear()
        self.pretrained = {e["name"]: e for e in pretrained_models()}
        for name, description in [(n, e["description"]) for n, e in self.pretrained.items()] + \
                [(n, p.description) for n, p in PRESETS.items()]:
            self.preset.addItem(name)
            self.preset.setItemData(self.preset.count() - 1, description, Qt.ItemDataRole.ToolTipRole)
        if current and self.preset.findText(current) >= 0:
            self.preset.setCurrentText(current)
        self.preset.blockSignals(False)

    def _pretrained_start(self) -> str | None:
        """The pretrained model an adaptation continues: the one chosen to start from, else micro-tiny."""
        entry = self.pretrained.get(self.preset.currentText()) or self.pretrained.get("micro-tiny")
        return entry["path"] if entry else None

    def _on_adapted(self, path: str) -> None:
        self.refresh_files()
        name = next((n for n, e in self.pretrained.items() if Path(e["path"]) == Path(path)), None)
        if name is not None:
            self.preset.setCurrentText(name)

    def _selected_path(self) -> str | None:
        item = self.files.currentItem()
        return None if item is None else item.data(PATH_ROLE)

    def load_selected(self):
        item = self.files.currentItem()
        if item is None:
            self.status.error("no model file selected: build a preset or open a model file")
            return None
        name = next((n for n, e in self.pretrained.items() if e["path"] == item.data(PATH_ROLE)), None)
        if name is not None:  # it segments nothing yet: it starts a model for the user's classes
            self.preset.setCurrentText(name)
            self.status.info(f"{name} is pretrained without classes: type your class names under "
                             "'New model for your classes' and press Build model")
            return None
        return self.open_file(item.data(PATH_ROLE))

    def open_file(self, path: str | None = None):
        """Load a model file, or import a package exported here (asks for one when ``path`` is None)."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open model file", "", OPEN_FILTER)
            if not path:
                return None
        path = imported_model_file(path, self.status, self.refresh_files)
        if path is None:
            return None
        self.status.info(f"loading {Path(path).name} …")
        return self.session.load_file(path)

    # -- presets -------------------------------------------------------------------------------

    def class_names(self) -> list[str]:
        return [n.strip() for n in self.classes.text().split(",") if n.strip()]

    def _on_preset_or_source(self, *_: object) -> None:
        pretrained = self.pretrained.get(self.preset.currentText())
        for widget in (self.cnn_source, self.swin_source, self.allow_download):
            widget.setEnabled(pretrained is None)
        if pretrained is not None:
            self.preset.setToolTip(pretrained["description"])
            self.weights_status.info(f"{pretrained['name']}: pretrained on micrographs, shipped (no download); "
                                     "the new model's output layer is trained when you fine-tune", notify=False)
            return
        preset = PRESETS[self.preset.currentText()]
        for combo, sources in ((self.cnn_source, preset.cnn_sources), (self.swin_source, preset.swin_sources)):
            if combo.count() != len(sources) + 1 or combo.itemText(1) != (sources[0] if sources else ""):
                combo.blockSignals(True)
                combo.clear()
                combo.addItems([RANDOM, *sources])
                combo.setCurrentIndex(1 if sources else 0)
                combo.blockSignals(False)
            combo.setEnabled(bool(sources))
        self.preset.setToolTip(preset.description)
        cnn, swin = self._source(self.cnn_source), self._source(self.swin_source)
        if not (cnn or swin):
            self.weights_status.info("random weights: train or fine-tune before use")
            return
        # the registry imports timm (and torch) for ImageNet sources: keep that off the GUI thread
        self.weights_status.info("checking the weight cache …")
        avoid_triton_llvm_clash()
        worker = create_worker(source_status, preset.name, cnn, swin, self.allow_download.isChecked(),
                               _start_thread=False, _ignore_errors=True)
        request = (preset.name, cnn, swin, self.allow_download.isChecked())
        worker.returned.connect(lambda result: self._show_sources(result, request))
        worker.errored.connect(lambda exc: self.weights_status.warning(f"weights: {exc}", notify=False))
        self._status_worker = worker  # keep a reference until it is done
        worker.start()

    def _show_sources(self, result: tuple[list[str], bool], request: tuple) -> None:
        current = (self.preset.currentText(), self._source(self.cnn_source), self._source(self.swin_source),
                   self.allow_download.isChecked())
        if request != current:  # the user moved on; a newer check is coming
            return
        lines, ready = result
        # only about building a new model from this preset: plain text, not an error-like colour
        # (a loaded starter or fine-tuned model needs none of these weights)
        head = "weights for a new model from this preset:" if ready else \
            "to build this preset, its weights are needed first (a loaded model file needs none):"
        self.weights_status.info("\n".join([head, *lines]), notify=False)

    @staticmethod
    def _source(combo: QComboBox) -> str | None:
        text = combo.currentText()
        return None if text in ("", RANDOM) else text

    def build_preset(self):
        names = self.class_names()
        if not names:
            self.status.error("give the class names, comma-separated (e.g. matrix, precipitate)")
            return None
        if len(set(names)) != len(names):
            self.status.error(f"class names must differ: {', '.join(names)}")
            return None
        self.status.info(f"building {self.preset.currentText()} …")
        if self.preset.currentText() in self.pretrained:
            return self.session.load_pretrained(self.preset.currentText(), names)
        return self.session.load_preset(self.preset.currentText(), names, self._source(self.cnn_source),
                                        self._source(self.swin_source), self.allow_download.isChecked())

    def _remember_download(self, on: bool) -> None:
        self.session.settings.allow_download = on
        save_settings(self.session.settings)
        self._on_preset_or_source()

    def select_preset(self, name: str) -> None:
        """Choose a pretrained model or a preset in the "new model" box (its weight sources follow)."""
        if self.preset.findText(name) < 0:
            raise KeyError(f"unknown preset or pretrained model {name!r}")
        self.preset.setCurrentText(name)

    # -- device, storage, saving ---------------------------------------------------------------

    def set_device(self, name: str) -> None:
        """Run models on ``name`` (auto, cpu, cuda, cuda:1, mps); remembered for next time."""
        if self.device.findText(name) < 0:
            self.device.addItem(name)
        self.device.setCurrentText(name)

    def set_cache_dir(self, folder: str) -> None:
        """Remember the weight cache folder (the weights module reads it from the settings)."""
        self.session.settings.weight_cache_dir = folder.strip()
        save_settings(self.session.settings)
        self._on_preset_or_source()

    def _browse_cache(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Weight cache folder", self.cache_dir.text())
        if folder:
            self.cache_dir.setText(folder)
            self.set_cache_dir(folder)

    def save_to(self, path: str | None = None):
        if self.session.segmenter is None:
            self.status.error("no model to save: load or build one first")
            return None
        if path is None:
            from ..models.catalog import user_models_dir

            start = str(user_models_dir() / f"{self.session.info.name or 'model'}.safetensors")
            path, _ = QFileDialog.getSaveFileName(self, "Save model file", start, "Model files (*.safetensors)")
            if not path:
                return None
        if not path.endswith(".safetensors"):
            path += ".safetensors"
        return self.session.save(path, on_done=lambda: (self.status.info(f"saved {path}"), self.refresh_files()))

    def _on_model_changed(self) -> None:
        self.current.info(self.session.describe())
        self.save_btn.setEnabled(self.session.segmenter is not None)
        if self.session.segmenter is not None:
            self.status.info(f"model ready on {self.session.segmenter.device}")

    def _on_busy(self, busy: bool) -> None:
        for w in (self.load_btn, self.open_btn, self.build_btn, self.device):
            w.setEnabled(not busy)
        self.save_btn.setEnabled(not busy and self.session.segmenter is not None)

