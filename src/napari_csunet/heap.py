"""Keep freed memory in the process heap while a CPU prediction runs (glibc only).

Why: glibc serves every allocation above 32 MB with a fresh ``mmap`` and hands it back to the
kernel on ``free``, so each layer output of a large tile faults in new pages that the kernel must
zero first. Profiled on a 2048² tile (csunet-small, this project's 2-core CPU): 3-5 million page
faults per prediction and 30-40 % of the CPU time in the kernel. While :func:`heap_reuse` is
active, large blocks come from the heap (``M_MMAP_MAX`` 0) and stay there when freed (a high
``M_TRIM_THRESHOLD``), so the next layer reuses them; ``malloc_trim`` gives the memory back
afterwards. The price is a higher peak (freed blocks fragment), which :mod:`.budget` accounts for.
Elsewhere (macOS, Windows, musl) nothing changes. ``CSUNET_HEAP_REUSE=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator

__all__ = ["heap_reuse", "heap_reuse_available"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
_DEFAULT_MMAP_MAX, _DEFAULT_TRIM = 65536, 128 * 1024  # glibc's defaults, restored afterwards
_lock = threading.Lock()
_active = 0  # nested or concurrent predictions: the first one in sets, the last one out restores


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc has both; other C libraries may not
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def heap_reuse_available() -> bool:
    """True where :func:`heap_reuse` changes anything (glibc, not turned off by the environment)."""
    return _LIBC is not None and os.environ.get("CSUNET_HEAP_REUSE", "1") != "0"


@contextlib.contextmanager
def heap_reuse(enabled: bool = True) -> Iterator[None]:
    """Within the block, freed large blocks stay in the heap for reuse (see the module docstring)."""
    global _active
    if not (enabled and heap_reuse_available()):
        yield
        return
    with _lock:
        if _active == 0:
            _LIBC.mallopt(_M_MMAP_MAX, 0)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, 2**30)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                _LIBC.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                _LIBC.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
                _LIBC.malloc_trim(0)
