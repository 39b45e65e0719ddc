"""``--out`` is checked before any work, and one run at a time writes to it.

A model file that cannot be written used to be found out after training; two runs into one
folder mixed their outputs under one summary, and two fine-tunes into one file both said "saved".
The lock is an OS advisory lock (``flock``) on a sibling lock file: the kernel drops it when its
process dies, so a killed run never blocks the next (platforms without ``fcntl``: no lock).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["OutputError", "check_out_file", "check_out_dir", "out_lock"]


class OutputError(ValueError):
    """``--out`` cannot be used (the message says why and what to do)."""


def _writable_folder(folder: Path, flag: str, given: Path) -> None:
    """``folder`` exists as a writable folder, or can be made in its nearest existing ancestor."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise OutputError(f"{flag} {given}: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {given}: {existing} is not writable; choose a folder you can write to")


def check_out_file(path: str | Path, overwrite: bool = False, flag: str = "--out",
                   suffix: str = ".safetensors") -> Path:
    """The model file a run will write, refused up front when it is a folder, has the wrong
    extension, cannot be written, or exists (unless ``overwrite``)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; give a file name, e.g. {path / ('model' + suffix)}")
    if path.suffix != suffix:
        raise OutputError(f"{flag} {path}: a model file ends in {suffix}, e.g. {path.with_suffix(suffix)}")
    if path.exists() and not overwrite:
        raise OutputError(f"{flag} {path} exists; pass --overwrite to replace it, or choose another name")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{flag} {path} exists and is not writable")
    _writable_folder(path.parent, flag, path)
    return path


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """An output folder, created when missing; refused when it is a file or cannot be written."""
    path = Path(path)
    _writable_folder(path, flag, path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{flag} {path}: cannot create the folder ({exc.strerror or exc})") from None
    return path


@contextlib.contextmanager
def out_lock(path: str | Path, flag: str = "--out") -> Iterator[None]:
    """Hold ``path``'s lock for the block; OutputError at once when another live run holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks here
        yield
        return
    path = Path(path)
    lock = (path / ".csunet.lock") if path.is_dir() else path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise OutputError(f"{flag} {path} is being written by another csunet run (pid {owner}); wait for it "
                              "to finish or choose another output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                lock.unlink()
    finally:
        os.close(fd)
