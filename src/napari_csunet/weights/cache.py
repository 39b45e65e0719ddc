"""The weight cache folder and downloads into it (pooch: progress bar, SHA-256 where known).

Layout: ``<cache>/<filename>`` is a downloaded (or hand-dropped) file in its source format;
``<cache>/<id>.safetensors`` is the same weights converted to timm naming, written once the file
has been validated, so later loads never unpickle anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import WeightsFormatError, WeightsUnavailable
from .sources import WeightSource

__all__ = ["cache_dir", "download_path", "converted_path", "cached_file", "download", "sha256_file",
           "verify_sha256", "unavailable"]

#: seconds without an answer before a download counts as failed
DOWNLOAD_TIMEOUT = 60


def cache_dir() -> Path:
    """``CSUNET_CACHE_DIR``, else the settings' weight folder, else ``<user cache>/napari-csunet/weights``."""
    from ..settings import load_settings, user_folder

    if os.environ.get("CSUNET_CACHE_DIR"):
        return user_folder("cache", "CSUNET_CACHE_DIR")
    chosen = load_settings().weight_cache_dir
    return Path(chosen).expanduser() if chosen else user_folder("cache", None, "weights")


def download_path(src: WeightSource) -> Path:
    """Where the downloaded file goes, and where a copy downloaded by hand can be dropped."""
    return cache_dir() / src.filename


def converted_path(src: WeightSource) -> Path:
    return cache_dir() / f"{src.id}.safetensors"


def cached_file(src: WeightSource) -> Path | None:
    """The converted file if there is one, else the downloaded one, else None."""
    for path in (converted_path(src), download_path(src)):
        if path.is_file():
            return path
    return None


def sha256_file(path: str | Path) -> str:
    """The file's SHA-256, hashed as pooch hashes downloads (one hashing rule for both)."""
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


def verify_sha256(path: Path, expected: str | None) -> None:
    """Raise if a file's hash differs from the known one (no-op when none is known)."""
    if expected and sha256_file(path) != expected.lower():
        raise WeightsFormatError(
            f"{path}: SHA-256 differs from the published file's ({expected}); the copy is damaged or a "
            "different file. Delete it and download it again."
        )


def unavailable(src: WeightSource, reason: str) -> WeightsUnavailable:
    """The one error for weights that are not here: the URL and the exact drop-in path."""
    drop = download_path(src)
    if src.manual_download:
        how = (f"{src.id} is on Google Drive, which scripts cannot download reliably. Open\n  {src.url}\n"
               f"in a browser, download the file, then run\n  csunet weights import {src.id} /path/to/the/file\n"
               f"(or save it as {drop})")
    else:
        how = (f"Download\n  {src.url}\nwith a browser and save it as\n  {drop}\n"
               f"or import a copy from anywhere with\n  csunet weights import {src.id} /path/to/the/file")
    return WeightsUnavailable(f"weights {src.id!r} are not in the cache ({reason}). {how}", src.url, str(drop))


def download(src: WeightSource) -> Path:
    """Fetch ``src`` into the cache with pooch; a failed or mismatching download leaves no file."""
    if src.manual_download:
        raise unavailable(src, "manual download")
    import pooch
    import requests

    known = f"sha256:{src.sha256}" if src.sha256 else None
    target = download_path(src)
    downloader = pooch.HTTPDownloader(progressbar=True, timeout=DOWNLOAD_TIMEOUT)
    try:
        path = pooch.retrieve(src.url, known_hash=known, fname=target.name, path=target.parent,
                              downloader=downloader)
    except ValueError as exc:  # pooch's hash mismatch; its temporary file is already gone
        target.unlink(missing_ok=True)
        raise WeightsFormatError(
            f"download of {src.id!r} from {src.url} failed its SHA-256 check ({exc}); nothing was kept. "
            "Try again later, or report the changed file."
        ) from None
    except requests.exceptions.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else "?"
        raise unavailable(src, f"the server answered HTTP {code}") from None
    except requests.exceptions.RequestException as exc:
        raise unavailable(src, f"download failed: {type(exc).__name__}, offline or host unreachable") from None
    return Path(path)
