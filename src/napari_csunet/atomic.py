"""Atomic file writes: write a temporary sibling, fsync, then rename over the target.

A crash or ``kill -9`` mid-write leaves the previous file intact (and at worst a stray
``.tmp-<name>-<pid>-*`` file, removed by the next write of that name once its process is gone),
never a truncated one. The saved file's mode follows the umask, like any file the user makes.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_safetensors",
           "remove_stale_temps"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it onto ``target``.

    ``suffix`` keeps writers that infer the format from the extension (e.g. tifffile) happy.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{target.name}-{os.getpid()}-", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # after the writer: mkstemp makes 0600 and some writers replace the file with their own
        os.chmod(tmp_path, _default_mode())
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


#: a temp file without a live owner's pid in its name (written before pids were) is stale after this
STALE_AFTER_S = 3600


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove ``.tmp-<target name>-*`` files left by writers that died (``kill -9``, power loss)."""
    removed = []
    prefix = f".tmp-{target.name}-"
    for tmp in target.parent.glob(f"{glob.escape(prefix)}*"):
        owner = tmp.name[len(prefix):].split("-", 1)[0]
        try:
            stale = not _alive(int(owner)) if owner.isdigit() else time.time() - tmp.stat().st_mtime > STALE_AFTER_S
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # someone else's process, or a platform without signal 0
        return True
    return True


def _default_mode() -> int:
    """0o666 minus the process umask (read without changing it where the OS allows)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_safetensors(target: str | os.PathLike, tensors: dict, metadata: dict[str, str]) -> Path:
    """torch tensors as a safetensors file, serialised here and written atomically: the library's
    ``save_file`` writes its own temp file (which a kill leaves behind) and replaces ours with a 0600 one."""
    from safetensors.torch import save

    return atomic_write_bytes(target, save(tensors, metadata=metadata))
