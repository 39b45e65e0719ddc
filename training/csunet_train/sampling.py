"""Random training crops biased toward labelled pixels, with label-safe augmentation.

Sample ``i`` of a rank is a pure function of ``(seed, rank, i)``, so runs repeat exactly under a
seed whatever the number of loader workers. Intensities follow the model files'
``{"mode": "image"}`` normalisation: each image is standardised by its own statistics (as
:func:`napari_csunet.images.reading.standardize` does at inference); augmentation then perturbs gamma,
contrast, brightness, blur and noise so the model tolerates what standardisation does not remove.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from napari_csunet.images.reading import image_stats, to_model_channels

from .data import LabelledImage

__all__ = ["PreparedImage", "CropDataset", "prepare_image"]

_MAX_INDEX = 200_000  # labelled pixel positions kept per class for centre sampling
_STAT_SAMPLES = 65_536


class PreparedImage:
    """One training image in [0, 1] (C, H, W), padded to at least the crop, with a label index."""

    def __init__(self, item: LabelledImage, in_chans: int, crop: int, seed: int, pseudo: bool = False) -> None:
        x = to_model_channels(item.image, in_chans)
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / max(hi - lo, 1e-8)
        rng = np.random.default_rng(seed)
        self.stats = image_stats(x)
        self.stat_sample = x.ravel()[rng.integers(0, x.size, min(_STAT_SAMPLES, x.size))]  # for gamma-changed stats
        labels = item.labels
        pad_h, pad_w = max(0, crop - x.shape[1]), max(0, crop - x.shape[2])
        if pad_h or pad_w:  # a tiny image: mirror it, and leave the mirrored part unlabelled
            x = np.pad(x, ((0, 0), (0, pad_h), (0, pad_w)), mode="symmetric")
            labels = np.pad(labels, ((0, pad_h), (0, pad_w)))
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        flat = labels.ravel()
        self.classes: dict[int, np.ndarray] = {}
        for c in np.unique(flat):
            if c == 0:
                continue
            idx = np.flatnonzero(flat == c)
            if idx.size > _MAX_INDEX:
                idx = np.sort(rng.choice(idx, _MAX_INDEX, replace=False))
            self.classes[int(c)] = idx.astype(np.int64)
        self.labelled = np.concatenate(list(self.classes.values())) if self.classes else np.zeros(0, np.int64)
        self.weight = float(self.labelled.size)  # images are drawn by their corrected pixels
        if pseudo and item.pseudo is not None:
            self._add_pseudo(item.pseudo, pad_h, pad_w, rng)
        self.soft: torch.Tensor | None = None  # (K, H, W) float16: the starting model's probabilities
        if item.soft is not None:
            soft = np.pad(item.soft, ((0, 0), (0, pad_h), (0, pad_w)), mode="symmetric")
            self.soft = torch.from_numpy(np.ascontiguousarray(soft, dtype=np.float16))

    def _add_pseudo(self, pseudo: np.ndarray, pad_h: int, pad_w: int, rng: np.random.Generator) -> None:
        """Uncorrected predictions as negative labels (see ``segmentation_loss``); crops that are not
        class-balanced may centre on them, so the model also sees the image away from the corrections."""
        pseudo = np.pad(pseudo, ((0, pad_h), (0, pad_w))).astype(np.int64)
        self.labels = torch.where(self.labels > 0, self.labels, -torch.from_numpy(pseudo))
        idx = np.flatnonzero(pseudo.ravel())
        if idx.size > _MAX_INDEX:
            idx = np.sort(rng.choice(idx, _MAX_INDEX, replace=False))
        self.labelled = np.concatenate([self.labelled, idx])


def prepare_image(item: LabelledImage, in_chans: int, crop: int, seed: int = 0, pseudo: bool = False) -> PreparedImage:
    """``pseudo``: also train on the item's uncorrected predictions (negative labels)."""
    return PreparedImage(item, in_chans, crop, seed, pseudo)


def _log_uniform(rng: np.random.Generator, spread: float) -> float:
    """exp(U(-log(1+spread), log(1+spread))): symmetric multiplicative jitter."""
    return math.exp(rng.uniform(-1.0, 1.0) * math.log1p(spread))


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0]


class CropDataset(Dataset):
    """``length`` random crops of ``crop`` x ``crop`` pixels: (x float32 (C, crop, crop), labels int64)."""

    def __init__(self, images: list[PreparedImage], crop: int, length: int, aug_strength: float = 0.5,
                 class_balance: float = 0.5, seed: int = 0, rank: int = 0, context: float = 0.0,
                 unlabelled: list[PreparedImage] | None = None, unlabelled_share: float = 0.0,
                 weak_view: bool = False) -> None:
        """``class_balance``: share of crops centred on a class drawn uniformly from the classes of
        the whole set (on an image that has it), so a phase labelled in one image of four is seen
        as often as the matrix. ``context``: share of crops centred anywhere in an image with soft
        targets (distillation), so the model also sees, and keeps, the image away from the
        corrections. ``unlabelled``: images without labels (with soft targets when distilling),
        ``unlabelled_share`` of the crops, centred anywhere. ``weak_view``: targets are (labels,
        the crop without intensity perturbation) for a teacher (:mod:`csunet_train.semi`)."""
        if not images:
            raise ValueError("no training images")
        if weak_view and any(im.soft is not None for im in images):
            raise ValueError("a weak view is for semi-supervised training, not with soft targets (distillation)")
        self.weak_view = weak_view
        self.set_classes = sorted({c for im in images for c in im.classes})
        # per class: the images that have it, drawn by their pixels of it (built once, not per crop)
        self.having: dict[int, tuple[list[int], np.ndarray]] = {}
        for c in self.set_classes:
            idx = [i for i, im in enumerate(images) if c in im.classes]
            sizes = np.array([images[i].classes[c].size for i in idx], dtype=np.float64)
            self.having[c] = (idx, sizes / sizes.sum())
        self.images = images
        self.unlabelled = list(unlabelled or [])
        self.unlabelled_share = float(unlabelled_share) if self.unlabelled else 0.0
        self.crop = crop
        self.length = length
        self.s = float(aug_strength)
        self.class_balance = class_balance
        self.seed = seed
        self.rank = rank
        self.context = float(context)
        self.soft = any(im.soft is not None for im in images + self.unlabelled)
        if self.soft and not all(im.soft is not None for im in images + self.unlabelled):
            raise ValueError("soft targets for some training images but not all")
        weights = np.array([im.weight for im in images])
        self.image_p = weights / weights.sum()  # images with more labels are drawn more often

    def __len__(self) -> int:
        return self.length

    def _window(self, rng: np.random.Generator, im: PreparedImage) -> tuple[PreparedImage, int, int, int]:
        """(image, top, left, side): a square around a labelled pixel (of a uniformly drawn class
        of the set, at times, on an image that has it), or anywhere on an image without labels."""
        side = self.crop
        if self.s > 0 and rng.random() < 0.5:
            side = int(round(self.crop * _log_uniform(rng, 0.5 * self.s)))
        h, w = im.labels.shape
        if not im.classes or (im.soft is not None and rng.random() < self.context):
            centre = int(rng.integers(h * w))
            idx = None
        elif rng.random() < self.class_balance:
            c = int(rng.choice(self.set_classes))
            im = self._image_for(rng, im, c)
            h, w = im.labels.shape
            idx = im.classes[c]
        else:
            idx = im.labelled
        side = max(8, min(side, h, w))
        if idx is not None:
            centre = int(idx[rng.integers(idx.size)])
        cy, cx = divmod(centre, w)
        cy += int(rng.integers(-side // 4, side // 4 + 1))
        cx += int(rng.integers(-side // 4, side // 4 + 1))
        top = min(max(cy - side // 2, 0), h - side)
        left = min(max(cx - side // 2, 0), w - side)
        return im, top, left, side

    def _image_for(self, rng: np.random.Generator, im: PreparedImage, c: int) -> PreparedImage:
        """``im`` if it has class ``c``, else an image that has it, drawn by its pixels of ``c``."""
        if c in im.classes:
            return im
        idx, p = self.having[c]
        return self.images[idx[int(rng.choice(len(idx), p=p))]]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """(x, labels), or (x, (labels, soft targets)) when the images carry the starting model's
        probabilities (the soft targets see the clean image: augmentation only moves them), or
        (x, (labels, weak view)) with ``weak_view``."""
        rng = np.random.default_rng([self.seed, self.rank, int(i)])
        if self.unlabelled_share and rng.random() < self.unlabelled_share:
            im = self.unlabelled[int(rng.integers(len(self.unlabelled)))]
        else:
            im = self.images[int(rng.choice(len(self.images), p=self.image_p))]
        im, top, left, side = self._window(rng, im)
        x = im.x[:, top:top + side, left:left + side]
        y = im.labels[top:top + side, left:left + side]
        soft = im.soft[:, top:top + side, left:left + side].float() if im.soft is not None else None
        if side != self.crop:
            x = F.interpolate(x[None], size=(self.crop, self.crop), mode="bilinear", align_corners=False,
                              antialias=side > self.crop)[0]
            y = F.interpolate(y[None, None].float(), size=(self.crop, self.crop), mode="nearest")[0, 0].long()
            if soft is not None:
                soft = F.interpolate(soft[None], size=(self.crop, self.crop), mode="bilinear", align_corners=False,
                                     antialias=side > self.crop)[0]
        if self.weak_view:  # the teacher's view: standardised, not perturbed; the same geometry below
            soft = (x - im.stats[0]) / im.stats[1]
        x = self._intensity(rng, im, x)
        if self.s > 0:
            x, y, soft = self._geometry(rng, x, y, soft)
        if soft is None:
            return x.contiguous(), y.contiguous()
        if self.weak_view:
            return x.contiguous(), (y.contiguous(), soft.contiguous())
        return x.contiguous(), (y.contiguous(), soft.to(torch.float16).contiguous())

    def _intensity(self, rng: np.random.Generator, im: PreparedImage, x: torch.Tensor) -> torch.Tensor:
        """Standardise by the image's statistics (after a gamma change, if drawn), then perturb."""
        mean, std = im.stats
        s = self.s
        if s > 0 and rng.random() < 0.5:
            gamma = _log_uniform(rng, 0.6 * s)
            x = x.clamp(0, 1) ** gamma
            sample = im.stat_sample ** gamma
            mean, std = float(sample.mean()), max(float(sample.std()), 1e-6)
        x = (x - mean) / std
        if s == 0:
            return x
        x = x * _log_uniform(rng, 0.3 * s) + rng.uniform(-0.3, 0.3) * s
        if rng.random() < 0.3 * s:
            x = _gaussian_blur(x, rng.uniform(0.4, 0.4 + 1.6 * s))
        if rng.random() < 0.5 * s:
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            x = x + torch.randn(x.shape, generator=gen) * rng.uniform(0.0, 0.15 * s)
        return x

    @staticmethod
    def _geometry(rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Flips and 90-degree rotations: exact on the image, its labels and soft targets."""
        flip, k = rng.random() < 0.5, int(rng.integers(4))
        out = []
        for t in (x, y, soft):
            if t is not None and flip:
                t = t.flip(-1)
            if t is not None and k:
                t = torch.rot90(t, k, (-2, -1))
            out.append(t)
        return out[0], out[1], out[2]
