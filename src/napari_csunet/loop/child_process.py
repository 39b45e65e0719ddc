"""Run a function in a child process and wait for it on the calling (worker) thread.

Why: work that holds Python's GIL for long stretches — scikit-image's labelling and region
properties, matplotlib's Agg rendering — starves napari's GUI thread even when it runs on a worker
*thread*: the Inspect tab's statistics froze napari for 350 ms at a time on this project's 2-core
machine (``benchmarks/gui_responsiveness.py --trace``, inspect phase). In a child process it has a
GIL of its own. One child is started on first use ("spawn": never a fork of a process running Qt)
and kept for the session; a child that died is replaced on the next call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

__all__ = ["run_in_child", "shutdown_child"]

T = TypeVar("T")
_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def _executor() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            import multiprocessing

            _pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        return _pool


def run_in_child(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the child process (both picklable, ``fn`` importable without Qt); blocks."""
    global _pool
    pool = _executor()
    try:
        return pool.submit(fn, *args).result()
    except BrokenProcessPool:  # the child died (killed, out of memory): a new one next time
        with _lock:
            if _pool is pool:
                _pool = None
        raise


def shutdown_child(*_: object) -> None:
    """Stop the child process, if one was started (napari is closing)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
