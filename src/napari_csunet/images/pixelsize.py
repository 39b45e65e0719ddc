"""The physical size of a pixel, read from the micrograph's file or calibrated by the user.

Statistics carry units only when this is known. Sources, first match wins: Thermo/FEI SEM tags
(``[Scan] PixelWidth``, metres), Zeiss SEM (``CZ_SEM`` "Image Pixel Size"), TESCAN (tag 50431,
INI ``PixelSizeX``, metres), OME-XML ``PhysicalSizeX/Y``, ImageJ resolution + unit, TIFF resolution
in cm/mm/µm (inch resolutions are print DPI, never a pixel size), then a JEOL or Hitachi sidecar
``.txt`` next to the image. A calibration from the scale bar is remembered per image file in a
small JSON file next to the settings. Everything is in micrometres.
"""

from __future__ import annotations

import configparser
import json
import math
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text

__all__ = ["PixelSize", "to_um", "read_pixel_size", "read_sidecar", "calibrate", "remember_calibration",
           "recall_calibration", "calibrations_path"]

_UNITS_UM = {"m": 1e6, "cm": 1e4, "mm": 1e3, "um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0,
             "micrometer": 1.0, "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3, "pm": 1e-6, "a": 1e-4,
             "å": 1e-4, "angstrom": 1e-4, "\\u00b5m": 1.0}
#: TIFF ResolutionUnit values that mean a physical length (2 = inch is print DPI and is ignored)
_RESUNIT_UM = {3: 1e4, 4: 1e3, 5: 1.0}  # centimetre, and tifffile's millimetre / micrometre extensions
_TESCAN_TAG = 50431


@dataclass(frozen=True)
class PixelSize:
    """Pixel width (x) and height (y) in micrometres, and where they came from."""

    x_um: float
    y_um: float
    source: str

    def __post_init__(self) -> None:
        for v in (self.x_um, self.y_um):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"a pixel size must be a positive number of micrometres, got {v!r}")

    @property
    def area_um2(self) -> float:
        return self.x_um * self.y_um

    @property
    def mean_um(self) -> float:
        """The side of a square pixel of the same area (lengths of unknown direction use it)."""
        return math.sqrt(self.area_um2)

    def describe(self) -> str:
        size = f"{self.x_um:.4g} µm" if math.isclose(self.x_um, self.y_um, rel_tol=1e-6) \
            else f"{self.x_um:.4g} × {self.y_um:.4g} µm"
        return f"{size} per pixel ({self.source})"


def to_um(value: float, unit: str) -> float:
    """``value`` in ``unit`` (m, mm, µm, micron, nm, Å ...) as micrometres; ValueError for others."""
    key = unit.strip().lower().replace("\u00b5", "µ")
    if key not in _UNITS_UM:
        raise ValueError(f"unknown length unit {unit!r}; use one of m, mm, µm (um, micron), nm, Å")
    return float(value) * _UNITS_UM[key]


def _positive(*values: Any) -> bool:
    try:
        return all(math.isfinite(float(v)) and float(v) > 0 for v in values)
    except (TypeError, ValueError):
        return False


def _from_fei(tif: Any) -> PixelSize | None:
    meta = tif.fei_metadata or {}
    scan = meta.get("Scan") or meta.get("EScan") or {}
    x, y = scan.get("PixelWidth"), scan.get("PixelHeight", scan.get("PixelWidth"))
    return PixelSize(float(x) * 1e6, float(y) * 1e6, "FEI/Thermo metadata") if _positive(x, y) else None


def _from_zeiss(tif: Any) -> PixelSize | None:
    entry = (tif.sem_metadata or {}).get("ap_image_pixel_size")  # ('Image Pixel Size', 2.5, 'nm')
    if not entry or len(entry) < 3 or not _positive(entry[1]):
        return None
    size = to_um(entry[1], entry[2])
    return PixelSize(size, size, "Zeiss SEM metadata")


def _ini(text: str) -> configparser.ConfigParser:
    start = text.find("[")
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keep the keys' case
    parser.read_string(text[max(start, 0):])
    return parser


def _from_tescan(tif: Any) -> PixelSize | None:
    tag = tif.pages.first.tags.get(_TESCAN_TAG)
    if tag is None:
        return None
    raw = tag.value
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    main = _ini(text.replace("\x00", ""))
    section = main["MAIN"] if main.has_section("MAIN") else None
    if section is None or not _positive(section.get("PixelSizeX")):
        return None
    x = float(section["PixelSizeX"])
    y = float(section.get("PixelSizeY", x)) if _positive(section.get("PixelSizeY", x)) else x
    return PixelSize(x * 1e6, y * 1e6, "TESCAN metadata")


def _from_ome(tif: Any) -> PixelSize | None:
    xml = tif.ome_metadata
    if not xml:
        return None
    pixels = next((e for e in ET.fromstring(xml).iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None or not _positive(pixels.get("PhysicalSizeX")):
        return None
    x = to_um(float(pixels.get("PhysicalSizeX")), pixels.get("PhysicalSizeXUnit", "µm"))
    has_y = _positive(pixels.get("PhysicalSizeY"))
    y = to_um(float(pixels.get("PhysicalSizeY")), pixels.get("PhysicalSizeYUnit", "µm")) if has_y else x
    return PixelSize(x, y, "OME metadata")


def _resolution(page: Any) -> tuple[float, float] | None:
    """Pixels per unit along x and y from the TIFF resolution tags."""
    tags = page.tags
    if "XResolution" not in tags:
        return None
    (xn, xd), (yn, yd) = tags["XResolution"].value, tags.get("YResolution", tags["XResolution"]).value
    if not _positive(xn, xd, yn, yd):
        return None
    return xn / xd, yn / yd


def _from_imagej_or_resolution(tif: Any) -> PixelSize | None:
    page = tif.pages.first
    per_unit = _resolution(page)
    if per_unit is None:
        return None
    unit_tag = page.tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2
    ij = tif.imagej_metadata
    if ij and ij.get("unit"):
        try:
            factor, source = to_um(1.0, str(ij["unit"])), "ImageJ metadata"
        except ValueError:  # "pixel", "inch" or a unit we cannot convert: not a physical size
            return None
    elif unit in _RESUNIT_UM:
        factor, source = _RESUNIT_UM[unit], "TIFF resolution"
    else:
        return None
    return PixelSize(factor / per_unit[0], factor / per_unit[1], source)


def _number_unit(text: str) -> tuple[float, str] | None:
    m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*([^\s\d]+)\s*", text)
    return (float(m.group(1)), m.group(2)) if m else None


def read_sidecar(image_path: str | Path) -> PixelSize | None:
    """A JEOL (``$$SM_MICRON_BAR``/``$$SM_MICRON_MARKER``) or Hitachi (``PixelSize`` in nm) ``.txt``."""
    path = Path(image_path).with_suffix(".txt")
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition("=" if "=" in line and not line.lstrip().startswith("$") else " ")
        fields[key.strip()] = value.strip()
    if "$$SM_MICRON_BAR" in fields and "$$SM_MICRON_MARKER" in fields:
        marker = _number_unit(fields["$$SM_MICRON_MARKER"])
        bar_px = fields["$$SM_MICRON_BAR"]
        if marker and _positive(bar_px, marker[0]):
            size = to_um(*marker) / float(bar_px)
            return PixelSize(size, size, f"JEOL sidecar {path.name}")
    if _positive(fields.get("PixelSize")):  # Hitachi S-/SU- series: nanometres
        size = float(fields["PixelSize"]) * 1e-3
        return PixelSize(size, size, f"Hitachi sidecar {path.name}")
    return None


def read_pixel_size(path: str | Path) -> PixelSize | None:
    """The pixel size stated by the image file or its sidecar; None when nothing says.

    Unreadable or odd metadata is never fatal: it is skipped with a warning naming the file.
    """
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                for reader in (_from_fei, _from_zeiss, _from_tescan, _from_ome, _from_imagej_or_resolution):
                    found = reader(tif)
                    if found is not None:
                        return found
        except (OSError, ValueError, KeyError, TypeError, IndexError, ET.ParseError, configparser.Error,
                tifffile.TiffFileError) as exc:
            warnings.warn(f"{path}: pixel size metadata unreadable ({exc}); looking for a sidecar", stacklevel=2)
    try:
        return read_sidecar(path)
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path.with_suffix('.txt')}: sidecar unreadable ({exc})", stacklevel=2)
        return None


def calibrate(line_px: float, length: float, unit: str = "µm") -> PixelSize:
    """Pixel size from a line of ``line_px`` pixels drawn over a scale bar of ``length`` ``unit``."""
    if not _positive(line_px):
        raise ValueError("draw a line over the scale bar first (its length is zero)")
    if not _positive(length):
        raise ValueError(f"the scale bar length must be positive, got {length!r}")
    size = to_um(length, unit) / float(line_px)
    return PixelSize(size, size, f"calibrated: {length:g} {unit} = {line_px:.1f} px")


def calibrations_path() -> Path:
    """``calibrations.json`` beside ``settings.json`` (``CSUNET_CONFIG_DIR`` moves both)."""
    from ..settings import settings_path

    return settings_path().with_name("calibrations.json")


def _load_calibrations(store: Path) -> dict[str, Any]:
    try:
        data = json.loads(store.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError, RecursionError):
        return {}


def remember_calibration(image_path: str | Path, size: PixelSize, store: Path | None = None) -> None:
    """Keep a user calibration for this image file (atomic JSON write)."""
    store = store or calibrations_path()
    data = _load_calibrations(store)
    data[str(Path(image_path).resolve())] = asdict(size)
    atomic_write_text(store, json.dumps(data, indent=1))


def recall_calibration(image_path: str | Path, store: Path | None = None) -> PixelSize | None:
    """The calibration remembered for this image file, if any."""
    entry = _load_calibrations(store or calibrations_path()).get(str(Path(image_path).resolve()))
    try:
        return PixelSize(**entry) if isinstance(entry, dict) else None
    except (TypeError, ValueError):
        return None
