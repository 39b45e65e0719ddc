"""Keep freed memory in the process heap while CPU predictions run (glibc only).

Why: glibc serves every allocation above 32 MB with a fresh ``mmap`` and hands it back to the
kernel on ``free``, so each layer output of a large tile faults in new pages that the kernel must
zero first. Profiled on a 2048² tile (csunet-small, this project's 2-core CPU): 3-5 million page
faults per prediction and 30-40 % of the CPU time in the kernel. While :func:`heap_reuse` is
active, large blocks come from the heap (``M_MMAP_MAX`` 0) and stay there when freed (trimming
off), so the next layer reuses them.

The heap is kept for :data:`LINGER_S` seconds after the last prediction ends, then
``malloc_trim`` gives it back: a folder of images, a stack, or the next image segmented in the
GUI reuses the pages the first one faulted in (a 2048² tile faults ~800,000 pages, ~10 % of its
forward pass) instead of faulting them again. The price is a higher resident size for those
seconds, which :mod:`.memory_plan` accounts for. Elsewhere (macOS, Windows, musl) nothing changes.
``CSUNET_HEAP_REUSE=0`` turns it off; ``CSUNET_HEAP_LINGER=0`` trims as soon as a prediction ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator

__all__ = ["heap_reuse", "heap_reuse_available", "release_heap", "kept_heap_bytes", "LINGER_S"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
_NEVER_TRIM = -1  # mallopt(M_TRIM_THRESHOLD, -1) turns automatic trimming off (mallopt(3))
_DEFAULT_MMAP_MAX, _DEFAULT_TRIM = 65536, 128 * 1024  # glibc's defaults, restored afterwards


def _linger_from_env(default: float = 20.0) -> float:
    """``CSUNET_HEAP_LINGER`` in seconds; a value that is not a number is ignored, not fatal."""
    try:
        return float(os.environ.get("CSUNET_HEAP_LINGER", default))
    except ValueError:
        return default


#: seconds the heap is kept after the last prediction (default 20; ``CSUNET_HEAP_LINGER``)
LINGER_S = _linger_from_env()
_lock = threading.Lock()
_active = 0  # nested or concurrent predictions: the first one in switches, the last one out schedules the release
_switched = False  # the allocator is in reuse mode (during predictions and while lingering)
_timer: threading.Timer | None = None


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc has both; other C libraries may not
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def kept_heap_bytes() -> int:
    """Free bytes the heap holds for reuse (glibc's ``mallinfo2().fordblks``; 0 elsewhere).

    The kernel counts them as used, so a memory budget taken while the heap is kept (the 20 s
    after a prediction) must add them back to the available RAM.
    """
    mallinfo2 = getattr(_LIBC, "mallinfo2", None)  # glibc >= 2.33
    with _lock:  # after a trim the free chunks stay listed, but their pages went back to the kernel
        if mallinfo2 is None or not _switched:
            return 0
        mallinfo2.restype = _MallInfo2
        return int(mallinfo2().fordblks)


def heap_reuse_available() -> bool:
    """True where :func:`heap_reuse` changes anything (glibc, not turned off by the environment)."""
    return _LIBC is not None and os.environ.get("CSUNET_HEAP_REUSE", "1") != "0"


def _release_locked() -> None:
    global _switched, _timer
    if _timer is not None:
        _timer.cancel()
        _timer = None
    if _switched and _active == 0:
        _LIBC.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
        _LIBC.malloc_trim(0)
        _switched = False


def release_heap() -> None:
    """Give the kept heap back now (no-op while a prediction runs or when nothing is kept)."""
    with _lock:
        _release_locked()


def _release_later() -> None:
    """The linger timer's callback (runs in the timer's own thread)."""
    with _lock:
        if _timer is threading.current_thread():  # not cancelled or replaced meanwhile
            _release_locked()


@contextlib.contextmanager
def heap_reuse(enabled: bool = True, linger_s: float | None = None) -> Iterator[None]:
    """Within the block (and ``linger_s`` seconds after), freed large blocks stay in the heap."""
    global _active, _switched, _timer
    if not (enabled and heap_reuse_available()):
        yield
        return
    with _lock:
        if _timer is not None:
            _timer.cancel()
            _timer = None
        if not _switched:
            _LIBC.mallopt(_M_MMAP_MAX, 0)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)
            _switched = True
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            linger = LINGER_S if linger_s is None else linger_s
            if _active == 0:
                if linger <= 0:
                    _release_locked()
                else:
                    _timer = threading.Timer(linger, _release_later)
                    _timer.daemon = True
                    _timer.start()
