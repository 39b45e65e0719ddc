"""Models that travel: a model file as TorchScript/ONNX graphs and as a bioimage.io package, and back.

Why a package of its own: exporting needs optional libraries (``onnx``, ``onnxruntime``,
``bioimageio.spec``/``bioimageio.core``: ``pip install "napari-csunet[export]"``) and touches no
other part of the product; importing this package imports neither torch nor those libraries.

- :mod:`.graph`: the network with its softmax baked in, traced to TorchScript and ONNX (dynamic
  batch, height and width), and how far ONNX Runtime agrees with our predictor.
- :mod:`.bioimageio`: a spec-0.5 bioimage.io model package (rdf.yaml, weights, test tensors
  computed by our predictor, cover, model card), tested by bioimage.io's own ``test_model``.
- :mod:`.importer`: a package we exported becomes a model file again; foreign packages are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["ExportError", "EXTRA_HINT", "load_exportable"]

#: how to get the optional libraries, for messages
EXTRA_HINT = 'pip install "napari-csunet[export]"'


class ExportError(ValueError):
    """A model cannot be exported or a package cannot be imported; the message says why."""


def load_exportable(spec: str | Path) -> tuple[Any, Any, Path]:
    """(network, ModelInfo, path) of a model file or starter/user model name that can be exported:
    trained weights (not a preset) and classes (not a self-supervised pretrained model)."""
    from ..models.catalog import resolve_model
    from ..models.modelfile import load_model_file

    _, path = resolve_model(str(spec))
    if path is None:
        raise ExportError(f"{spec!r} is a preset with random weights: export a trained or fine-tuned model file")
    net, info = load_model_file(path)
    if info.is_pretraining_only:
        raise ExportError(f"{info.name or path.name} is a self-supervised pretrained model (no classes): "
                          "fine-tune it first, then export the fine-tuned model")
    return net, info, path
