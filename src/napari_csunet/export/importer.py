"""A bioimage.io package back into a model file: ours are taken, foreign ones are refused clearly.

Why only ours: napari-csunet runs CS-UNet model files (tiling, per-image standardisation, class
colours, fine-tuning). A package we exported carries that file (``config.napari_csunet`` names it
and its hash), so importing it restores exactly the exported model. A foreign package is a graph
with its own pre/postprocessing that the product cannot fine-tune; the refusal says what it is and
which tools run it. Needs only PyYAML (no bioimage.io libraries), reads nothing but the rdf.yaml and
the one attachment named there, and never unpickles.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from . import ExportError

__all__ = ["read_rdf", "import_package", "is_our_package"]

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
MAX_RDF_BYTES = 2**20
MAX_MODEL_BYTES = 4 * 2**30  # the largest preset's model file is ~0.3 GB


def _safe_member(name: Any) -> str:
    """A file name inside a package: relative, no '..', no URL (packages may come from anyone)."""
    if not isinstance(name, str) or not name or "://" in name:
        raise ExportError(f"the package names a model file {name!r} that is not a file inside it")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise ExportError(f"the package names a model file outside itself ({name!r}); refusing it")
    return "/".join(parts)


class _Package:
    """Read-only access to a package as a folder, a zip file, or the path of its rdf.yaml."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.exists():
            raise ExportError(f"{path}: no such package (a .zip, a folder, or an rdf.yaml)")
        self.path, self.zip = path, None
        if path.is_file() and zipfile.is_zipfile(path):
            self.zip = zipfile.ZipFile(path)
            self.root = ""
        else:
            self.root = str(path if path.is_dir() else path.parent)

    def read(self, name: str, limit: int | None = None) -> bytes:
        name = _safe_member(name)
        try:
            if self.zip is not None:
                info = self.zip.getinfo(name)
                if limit is not None and info.file_size > limit:
                    raise ExportError(f"{self.path}: {name} is {info.file_size} bytes, more than it can be")
                return self.zip.read(info)
            file = Path(self.root) / name
            if limit is not None and file.stat().st_size > limit:
                raise ExportError(f"{self.path}: {name} is {file.stat().st_size} bytes, more than it can be")
            return file.read_bytes()
        except (KeyError, FileNotFoundError):
            raise ExportError(f"{self.path}: the package has no {name}") from None

    def rdf_name(self) -> str:
        if self.zip is None and self.path.is_file():
            return self.path.name
        names = set(self.zip.namelist()) if self.zip is not None else {p.name for p in self.path.iterdir()}
        for n in RDF_NAMES:
            if n in names:
                return n
        raise ExportError(f"{self.path}: not a bioimage.io package (no rdf.yaml or bioimageio.yaml inside)")

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def read_rdf(path: str | Path) -> dict[str, Any]:
    """The package's resource description (rdf.yaml) as a dict; ExportError when there is none."""
    import yaml

    pkg = _Package(path)
    try:
        text = pkg.read(pkg.rdf_name(), limit=MAX_RDF_BYTES)
    finally:
        pkg.close()
    try:
        rdf = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExportError(f"{path}: its rdf.yaml is not valid YAML ({exc})") from None
    if not isinstance(rdf, dict):
        raise ExportError(f"{path}: its rdf.yaml does not describe a resource")
    return rdf


def is_our_package(rdf: dict[str, Any]) -> bool:
    """True for a model package exported by napari-csunet (it carries our model file)."""
    from .bioimageio import CONFIG_KEY

    ours = (rdf.get("config") or {}).get(CONFIG_KEY) if isinstance(rdf.get("config"), dict) else None
    return rdf.get("type") == "model" and isinstance(ours, dict) and "model_file" in ours


def _refusal(path: Path, rdf: dict[str, Any]) -> str:
    name = rdf.get("name") or rdf.get("id") or path.name
    if rdf.get("type") != "model":
        return f"{path}: {name!r} is a bioimage.io {rdf.get('type', 'resource')}, not a model"
    weights = sorted((rdf.get("weights") or {}).keys()) if isinstance(rdf.get("weights"), dict) else []
    return (f"{path}: {name!r} is a bioimage.io model that napari-csunet did not export "
            f"(weights: {', '.join(weights) or 'none'}). napari-csunet runs and fine-tunes CS-UNet model files "
            "only; it imports the packages it exported itself (they carry their model file). Run this model "
            "with bioimage.io's tools (`bioimageio predict`), ilastik, deepImageJ or another bioimage.io "
            "consumer instead.")


def import_package(path: str | Path, dest_dir: str | Path | None = None) -> Path:
    """Copy the model file out of a package we exported into ``dest_dir`` (default: the user's
    models folder); returns its path. The same model imported twice is not copied twice."""
    from ..atomic import atomic_path
    from ..models.catalog import user_models_dir
    from ..models.modelfile import ModelFileError, read_model_info
    from .bioimageio import CONFIG_KEY

    path = Path(path)
    rdf = read_rdf(path)
    if not is_our_package(rdf):
        raise ExportError(_refusal(path, rdf))
    ours = rdf["config"][CONFIG_KEY]
    pkg = _Package(path)
    try:
        data = pkg.read(ours["model_file"], limit=MAX_MODEL_BYTES)
    finally:
        pkg.close()
    digest = hashlib.sha256(data).hexdigest()
    if ours.get("model_sha256") and ours["model_sha256"] != digest:
        raise ExportError(f"{path}: the model file inside does not match the hash in its rdf.yaml (damaged package)")
    dest_dir = Path(dest_dir) if dest_dir is not None else user_models_dir()
    stem = _file_stem(str(rdf.get("name") or path.stem))
    for n in range(1, 1000):
        target = dest_dir / (f"{stem}.safetensors" if n == 1 else f"{stem}-{n}.safetensors")
        if not target.exists():
            break
        if hashlib.sha256(target.read_bytes()).hexdigest() == digest:
            return target  # already imported
    with atomic_path(target, suffix=".safetensors") as tmp:
        tmp.write_bytes(data)
        try:
            read_model_info(tmp)
        except ModelFileError as exc:
            raise ExportError(f"{path}: the model file inside is not a napari-csunet model ({exc})") from None
    return target


def _file_stem(name: str) -> str:
    """The model's name as a file stem (``CS-UNet`` prefix of exported names dropped)."""
    import re

    name = name.removeprefix("CS-UNet ").strip()
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "imported-model"
