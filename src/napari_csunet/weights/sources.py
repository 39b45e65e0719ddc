"""The registry of pretrained weight ids: where each file lives and which encoder it fits.

Three families of sources (see ``docs/weights.md``):

* ``<cnn>-imagenet``: timm's own ImageNet weights, from the URL timm's ``pretrained_cfg`` names
  (the Hugging Face hub when timm has an ``hf_hub_id``).
* ``<cnn>-micronet`` / ``<cnn>-imagenet-micronet``: NASA's MicroNet encoders (Stuckner et al. 2022),
  plain state dicts in segmentation_models_pytorch 0.2.1 encoder naming.
* ``swin-t-*``: Swin-T ImageNet weights (timm) and the CS-UNet authors' four MicroLite classifiers,
  which live on Google Drive (a guided manual download: scripts cannot fetch Drive files reliably).

Ids use timm model names (the names in ``ModelConfig.cnn``); NASA's own encoder names are accepted
as aliases (``efficientnet-b4-micronet`` is ``tf_efficientnet_b4-micronet``). Importing this module
does not import torch; only the ImageNet URLs need timm, and they are looked up on demand.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from typing import Any

from .errors import UnknownWeights

__all__ = [
    "WeightSource", "CNN_FAMILIES", "SWIN_FAMILIES", "KNOWN_SHA256", "NASA_ENCODERS", "SWIN_T_IDS",
    "get_source", "all_sources", "source_id_for", "swin_t_variant",
]

CNN_FAMILIES = ("imagenet", "micronet", "imagenet-micronet")
SWIN_FAMILIES = ("imagenet", "microlite", "imagenet-microlite")

NASA_BASE = "https://nasa-public-data.s3.amazonaws.com/microscopy_segmentation_models/"
_BOTH = ("micronet", "imagenet-micronet")

#: timm CNN name -> (NASA / segmentation_models_pytorch encoder name, NASA families published).
#: Only CNNs whose source naming converts exactly into timm are listed (see docs/weights.md for
#: NASA's encoders that are not: densenet, dpn, inception, mobilenet_v2, xception).
NASA_ENCODERS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{f"resnet{d}": (f"resnet{d}", _BOTH) for d in (18, 34, 50, 101, 152)},
    "resnext50_32x4d": ("resnext50_32x4d", _BOTH),
    "resnext101_32x8d": ("resnext101_32x8d", _BOTH),
    **{f"legacy_seresnet{d}": (f"se_resnet{d}", _BOTH) for d in (50, 101, 152)},
    "legacy_seresnext50_32x4d": ("se_resnext50_32x4d", _BOTH),
    "legacy_seresnext101_32x4d": ("se_resnext101_32x4d", _BOTH),
    "legacy_senet154": ("senet154", _BOTH),
    **{f"vgg{d}_bn": (f"vgg{d}_bn", _BOTH) for d in (11, 13, 16)},
    **{f"tf_efficientnet_b{i}": (f"efficientnet-b{i}", _BOTH) for i in range(6)},
    **{f"tf_efficientnet_b{i}": (f"efficientnet-b{i}", ("imagenet-micronet",)) for i in (6, 7)},
}

#: CNNs with ImageNet ids besides NASA's (the presets' laptop and test encoders)
EXTRA_IMAGENET_CNNS = ("resnet10t",)

_SWIN_T_TIMM = "swin_tiny_patch4_window7_224"
SWIN_T_ORIGINAL = (2, 2, 6, 2)
SWIN_T_INTERMEDIATE = (2, 2, 2, 2)

#: the CS-UNet authors' MicroLite Swin-T classifiers on Google Drive: id -> (file id, depths, family)
_MICROLITE = {
    "swin-t-microlite": ("1SZsdAYgQXDUHRoxENoUICL_SxcToKzd0", SWIN_T_ORIGINAL, "microlite"),
    "swin-t-imagenet-microlite": ("1ksqnjN1aiM133ASSg4PEswOnZtklg7Jb", SWIN_T_ORIGINAL, "imagenet-microlite"),
    "swin-t-intermediate-microlite": ("11iuqZUfZEDmKJ_2UimDRFZraqPoCDWMu", SWIN_T_INTERMEDIATE, "microlite"),
    "swin-t-intermediate-imagenet-microlite": (
        "1uNRH0DjAQiRPRdIvEraZdLpS6P1kDQUw", SWIN_T_INTERMEDIATE, "imagenet-microlite"),
}
SWIN_T_IDS = ("swin-t-imagenet", *_MICROLITE)

#: SHA-256 of the published files, checked after every download and before a hand-dropped file is
#: used. None is known today: no published source lists its hashes and the build machines cannot
#: reach the files to measure them. Add ``id: hex digest`` here once measured.
KNOWN_SHA256: dict[str, str] = {}


@dataclass(frozen=True)
class WeightSource:
    """One pretrained file: where it lives and which encoder it initialises."""

    id: str
    kind: str  # "cnn" or "swin"
    family: str  # the preset-level name: imagenet, micronet, imagenet-micronet, microlite, ...
    arch: str  # timm model name the weights fit (for Swin: the timm Swin-T they derive from)
    url: str
    filename: str  # name of the downloaded file in the cache: where a hand-downloaded copy goes
    description: str
    swin_depths: tuple[int, ...] | None = None
    manual_download: bool = False

    @property
    def sha256(self) -> str | None:
        return KNOWN_SHA256.get(self.id)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "family": self.family, "arch": self.arch,
                "url": self.url, "sha256": self.sha256, "manual_download": self.manual_download,
                "swin_depths": list(self.swin_depths) if self.swin_depths else None,
                "description": self.description}


def _timm_url(arch: str) -> str:
    """The download URL of timm's default pretrained weights for ``arch`` (hub first)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None:
        raise UnknownWeights(f"timm has no pretrained ImageNet weights for {arch!r}")
    if cfg.hf_hub_id:
        return f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{cfg.hf_hub_filename or 'model.safetensors'}"
    if cfg.url:
        return cfg.url
    raise UnknownWeights(f"timm's pretrained config for {arch!r} names no download URL")


def _imagenet(arch: str) -> WeightSource:
    url = _timm_url(arch)
    suffix = ".safetensors" if url.endswith(".safetensors") else ".pth"
    wid = f"{arch}-imagenet"
    return WeightSource(wid, "cnn", "imagenet", arch, url, f"{wid}.download{suffix}",
                        f"timm's ImageNet weights for {arch}")


def _nasa(arch: str, family: str) -> WeightSource:
    nasa, _ = NASA_ENCODERS[arch]
    tag = {"micronet": "microscopynet", "imagenet-micronet": "imagenet-microscopynet"}[family]
    version = "1.1" if (nasa, family) == ("resnet50", "micronet") else "1.0"
    if (nasa, family) == ("resnext101_32x8d", "micronet"):
        filename = "resnext101_pretrained_microscopynet_v1.0.pth.tar"  # NASA's file name differs
    else:
        filename = f"{nasa}_pretrained_{tag}_v{version}.pth.tar"
    what = "MicroNet" if family == "micronet" else "ImageNet, then MicroNet"
    return WeightSource(f"{arch}-{family}", "cnn", family, arch, NASA_BASE + filename, filename,
                        f"NASA's {nasa} encoder pretrained on {what} (MIT licence)")


def _swin(wid: str) -> WeightSource:
    if wid == "swin-t-imagenet":
        return WeightSource(wid, "swin", "imagenet", _SWIN_T_TIMM, _timm_url(_SWIN_T_TIMM),
                            f"{wid}.download.safetensors",
                            "timm's Swin-T ImageNet-1k weights (original depths [2,2,6,2])",
                            swin_depths=SWIN_T_ORIGINAL)
    file_id, depths, family = _MICROLITE[wid]
    what = "MicroLite" if family == "microlite" else "ImageNet, then MicroLite"
    return WeightSource(wid, "swin", family, _SWIN_T_TIMM, f"https://drive.google.com/file/d/{file_id}/view",
                        f"{wid}.pth", f"CS-UNet authors' Swin-T {list(depths)} pretrained on {what}",
                        swin_depths=depths, manual_download=True)


def _ids() -> list[str]:
    ids = [f"{a}-imagenet" for a in (*NASA_ENCODERS, *EXTRA_IMAGENET_CNNS)]
    ids += [f"{a}-{fam}" for a, (_, fams) in NASA_ENCODERS.items() for fam in fams]
    return ids + list(SWIN_T_IDS)


def _aliases() -> dict[str, str]:
    """NASA's encoder names as aliases, e.g. ``efficientnet-b4-micronet``."""
    return {f"{nasa}-{fam}": f"{arch}-{fam}" for arch, (nasa, fams) in NASA_ENCODERS.items()
            for fam in fams if nasa != arch}


@cache
def get_source(weight_id: str) -> WeightSource:
    """Look up a weight id (or a NASA-named alias, or ``<any timm CNN>-imagenet``)."""
    wid = _aliases().get(weight_id, weight_id)
    if wid in SWIN_T_IDS:
        return _swin(wid)
    for family in ("imagenet-micronet", "micronet"):
        arch = wid.removesuffix(f"-{family}")
        if wid.endswith(f"-{family}") and family in NASA_ENCODERS.get(arch, ("", ()))[1]:
            return _nasa(arch, family)
    if wid.endswith("-imagenet") and not wid.startswith("swin"):
        arch = wid.removesuffix("-imagenet")
        import timm

        if timm.is_model(arch):
            return _imagenet(arch)
    close = difflib.get_close_matches(weight_id, _ids() + list(_aliases()), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `csunet weights list` shows them all"
    raise UnknownWeights(f"unknown weight id {weight_id!r}{hint}")


def all_sources() -> list[WeightSource]:
    """Every listed weight id: ImageNet CNNs, NASA MicroNet CNNs, then Swin-T."""
    return [get_source(i) for i in _ids()]


def swin_t_variant(embed_dim: int, depths: tuple[int, ...], num_heads: tuple[int, ...],
                   patch_size: int = 4) -> str | None:
    """``"original"`` / ``"intermediate"`` for the two Swin-T shapes, None for any other Swin."""
    if embed_dim != 96 or tuple(num_heads) != (3, 6, 12, 24) or patch_size != 4:
        return None
    return {SWIN_T_ORIGINAL: "original", SWIN_T_INTERMEDIATE: "intermediate"}.get(tuple(depths))


def source_id_for(kind: str, family: str, *, cnn: str | None = None,
                  swin_depths: tuple[int, ...] | None = None) -> str:
    """Map a preset-level source name plus the model's encoder to a weight id.

    ``swin_depths`` must be a Swin-T shape: intermediate models take the intermediate MicroLite
    files; ImageNet exists only for the original depths and is cut to fit (see ``convert``).
    """
    if kind == "cnn":
        if family not in CNN_FAMILIES:
            raise UnknownWeights(f"unknown CNN weight source {family!r}; choose one of {', '.join(CNN_FAMILIES)}, "
                                 "a weight id or a file")
        if family != "imagenet" and family not in NASA_ENCODERS.get(cnn or "", ("", ()))[1]:
            have = sorted(a for a, (_, fams) in NASA_ENCODERS.items() if family in fams)
            raise UnknownWeights(f"NASA published no {family} weights for the CNN {cnn!r}; CNNs with {family} "
                                 f"weights: {', '.join(have)}")
        return f"{cnn}-{family}"
    if family not in SWIN_FAMILIES:
        raise UnknownWeights(f"unknown Swin weight source {family!r}; choose one of {', '.join(SWIN_FAMILIES)}, "
                             "a weight id or a file")
    if family == "imagenet":
        return "swin-t-imagenet"
    intermediate = tuple(swin_depths or ()) == SWIN_T_INTERMEDIATE
    return f"swin-t-{'intermediate-' if intermediate else ''}{family}"
