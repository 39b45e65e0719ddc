"""Work around a crash between napari's OpenGL stack and triton in one process.

With Mesa OpenGL (software rendering, Intel/AMD GPUs, Xvfb, remote desktops) the viewer loads
Mesa's libLLVM; importing triton afterwards (torchvision -> torch._dynamo -> triton, pulled in by
timm when a model is built) loads triton's own LLVM and segfaults the whole process. Inference
never needs triton, so when a libLLVM is already mapped and triton is not yet imported, triton is
marked unavailable in this process (torch then simply reports no triton). The training child is
a separate process and keeps triton.
"""

from __future__ import annotations

import sys

__all__ = ["avoid_triton_llvm_clash"]


def avoid_triton_llvm_clash() -> bool:
    """Block ``import triton`` here if Mesa's LLVM is loaded; True when it was blocked."""
    if "triton" in sys.modules:
        return sys.modules["triton"] is None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            mapped = fh.read()
    except OSError:  # not Linux: no Mesa/LLVM clash known there
        return False
    if "libLLVM" not in mapped:
        return False
    sys.modules["triton"] = None  # `import triton` now raises ImportError
    return True
