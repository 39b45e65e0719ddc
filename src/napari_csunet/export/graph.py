"""The network as a self-contained graph: TorchScript and ONNX, softmax included, any tile size.

Why: other runtimes (ONNX Runtime, deepImageJ, ilastik, bioimage.io's own tools) run a graph, not
our Python code. The exported graph takes the *standardised* image (B, C, H, W), sides multiples
of 256 (``model.size_multiple``), and returns class probabilities (B, K, H, W): the softmax is
part of the graph so every runtime shows the same numbers as our predictor. Standardisation,
padding and tiling stay outside (bioimage.io describes standardisation as preprocessing).

ONNX: opset :data:`OPSET`, input ``input``, output ``probabilities``, dynamic axes batch, height
and width (:data:`DYNAMIC_AXES`). Exported with PyTorch's TorchScript-based exporter; Swin's
shifted-window masks are built from the input tensor, so both graphs follow its size and device
(checked at several sizes by the tests, and for a device constant in the TorchScript graph).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.models.swin_transformer import SwinTransformerBlock, window_partition
from torch import nn

from ..atomic import atomic_path
from ..engine.lazy import lazy_stats
from ..images.reading import to_model_channels
from ..models.modelfile import ModelInfo

__all__ = ["OPSET", "INPUT_NAME", "OUTPUT_NAME", "DYNAMIC_AXES", "Probabilities", "TraceableMaskBlock", "export_torchscript",
           "export_onnx", "standardised", "onnx_probabilities", "onnx_agreement", "centre_tile"]

OPSET = 17  # LayerNormalization is a single op from 17 on; ONNX Runtime >= 1.14 runs it
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


class Probabilities(nn.Module):
    """The segmentation network followed by the softmax over classes, in float32."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).float().softmax(1)


class TraceableMaskBlock(SwinTransformerBlock):
    """timm's block, with the shifted-window mask built from the input tensor itself (``new_zeros``):
    a traced graph then builds it at the input's size and on the input's device. timm passes the
    device explicitly, which tracing freezes as "cpu" (a TorchScript that fails on a GPU), and the
    inference mask cache would freeze one size."""

    def get_attn_mask(self, x: torch.Tensor | None = None, device: Any = None, dtype: Any = None):
        if x is None or not any(self.shift_size):
            return super().get_attn_mask(x, device, dtype)
        (wh, ww), (sh, sw) = self.window_size, self.shift_size
        regions = x.new_zeros((1, x.shape[1], x.shape[2], 1))
        for i, rows in enumerate(((0, -wh), (-wh, -sh), (-sh, None))):
            for j, cols in enumerate(((0, -ww), (-ww, -sw), (-sw, None))):
                regions[:, rows[0]:rows[1], cols[0]:cols[1], :] = 3 * i + j
        windows = window_partition(regions, self.window_size).view(-1, self.window_area)
        mask = windows.unsqueeze(1) - windows.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def _traceable(model: nn.Module) -> Probabilities:
    """A CPU float32 copy, frozen, whose shifted Swin blocks build their masks traceably."""
    net = copy.deepcopy(model).to("cpu", torch.float32).eval()
    for m in net.modules():
        if isinstance(m, SwinTransformerBlock) and getattr(m, "dynamic_mask", False):
            m.__class__ = TraceableMaskBlock
    for p in net.parameters():
        p.requires_grad_(False)
    return Probabilities(net).eval()


def _example(info: ModelInfo, model: nn.Module, side: int = 512) -> torch.Tensor:
    multiple = int(getattr(model, "size_multiple", 256))
    side = max(multiple, side // multiple * multiple)
    return torch.randn(1, info.config.in_chans, side, side, generator=torch.Generator().manual_seed(0))


def export_torchscript(model: nn.Module, info: ModelInfo, path: str | Path) -> Path:
    """Trace ``model`` (+ softmax) to a TorchScript file, written atomically."""
    net = _traceable(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about the size checks in Python
        traced = torch.jit.trace(net, _example(info, model), check_trace=False)
    with atomic_path(path, suffix=".pt") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.save is deprecated": runtimes still load it
        torch.jit.save(traced, str(tmp))
    return Path(path)


def export_onnx(model: nn.Module, info: ModelInfo, path: str | Path) -> Path:
    """Export ``model`` (+ softmax) to ONNX (opset :data:`OPSET`, dynamic batch/height/width)."""
    net = _traceable(model)
    axes = {INPUT_NAME: DYNAMIC_AXES, OUTPUT_NAME: DYNAMIC_AXES}
    with atomic_path(path, suffix=".onnx") as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (_example(info, model),), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                          do_constant_folding=True)
    return Path(path)


def standardised(image: np.ndarray, in_chans: int) -> np.ndarray:
    """(1, C, H, W) float32: ``image`` standardised by its own statistics, as our predictor does."""
    mean, std = lazy_stats(image, in_chans)
    return ((to_model_channels(image, in_chans) - np.float32(mean)) / np.float32(std))[None]


def onnx_probabilities(onnx_path: str | Path, image: np.ndarray, in_chans: int) -> np.ndarray:
    """(K, H, W) probabilities from ONNX Runtime on CPU for one image whose sides fit the graph."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: standardised(image, in_chans)})[0][0]


def centre_tile(image: np.ndarray, side: int = 512) -> np.ndarray:
    """The central ``side`` x ``side`` crop of an (H, W[, C]) image (reflect-padded when smaller)."""
    h, w = image.shape[:2]
    if h < side or w < side:
        pad = [(0, max(0, side - h)), (0, max(0, side - w))] + [(0, 0)] * (image.ndim - 2)
        image = np.pad(image, pad, mode="reflect")
        h, w = image.shape[:2]
    y, x = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(image[y:y + side, x:x + side])


def onnx_agreement(onnx_path: str | Path, model: nn.Module, info: ModelInfo, image: np.ndarray,
                   side: int = 512) -> dict[str, Any]:
    """How far ONNX Runtime's argmax agrees with our predictor's labels on a ``side``² tile.

    ``agreement`` is against the predictor in float32 (the graph's precision); where this machine's
    predictor runs in bf16 by default, ``agreement_mixed_precision`` is against that too.
    """
    from ..engine.predictor import Segmenter

    tile = centre_tile(image, side)
    theirs = onnx_probabilities(onnx_path, tile, info.config.in_chans).argmax(0) + 1
    out: dict[str, Any] = {"tile": [side, side], "pixels": int(theirs.size), "opset": OPSET,
                           "dynamic_axes": {INPUT_NAME: DYNAMIC_AXES, OUTPUT_NAME: DYNAMIC_AXES},
                           "reference": "napari-csunet predictor on CPU, float32"}
    for key, amp in (("agreement", False), ("agreement_mixed_precision", True)):
        seg = Segmenter(model, info, device="cpu", amp=amp)
        if amp and seg.amp_dtype is None:
            break
        out[key] = float(np.mean(seg.predict(tile).labels == theirs))
    return out
