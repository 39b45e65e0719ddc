"""The accumulator of tiled prediction: a band one tile high that slides down the image.

Why: blended tile probabilities must be summed before they become labels, but holding a sum for
the whole image would make memory grow with it. Tiles arrive row by row; once a row of tiles is
complete, the rows above the next tile row are final, so they are normalised, turned into labels
(and probabilities/uncertainty if asked) and leave the band. Memory is K x tile rows x width
floats on the model's device, whatever the image's height. torch is imported inside the methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .tiling import TileLayout

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Band", "CHUNK"]

CHUNK = 4096  # columns handled at once when finished rows leave the band (small temporaries)


class Band:
    """Sums window-weighted tile probabilities and writes finished rows into ``out``.

    ``out`` has ``labels`` (H, W), optional ``probs`` (K, H, W) and ``uncertainty`` (H, W): numpy
    arrays are written in place, other array-likes (zarr) once per band through a buffer.
    """

    def __init__(self, layout: TileLayout, num_classes: int, device: torch.device, out: Any) -> None:
        import torch

        self.layout, self.out = layout, out
        self.wy, self.wx = (torch.from_numpy(w).to(device) for w in layout.windows())
        self.sy, self.sx = (torch.from_numpy(s).to(device) for s in layout.weight_sums())
        self.acc = torch.zeros((num_classes, layout.tile[0], layout.padded[1]), dtype=torch.float32, device=device)
        self.base = 0  # padded row held by acc[:, 0]

    def add(self, i: int, j: int, y: int, x: int, probs: torch.Tensor) -> None:
        """Add tile (i, j) at padded (y, x); the last tile of a row releases the finished rows."""
        lay, acc = self.layout, self.acc
        th, tw = lay.tile
        acc[:, y - self.base:y - self.base + th, x:x + tw].addcmul_(probs, self.wy[i, :, None] * self.wx[j])
        if j != len(lay.xs) - 1:
            return
        nxt = lay.ys[i + 1] if i + 1 < len(lay.ys) else lay.padded[0]
        self._emit(self.base, nxt)
        d = nxt - self.base
        for c in range(0, acc.shape[2], CHUNK):
            acc[:, :th - d, c:c + CHUNK] = acc[:, d:, c:c + CHUNK].clone()
        acc[:, th - d:] = 0
        self.base = nxt

    def _emit(self, r0: int, r1: int) -> None:
        """Write the finished padded rows [r0, r1) (held from ``acc[:, 0]`` on) into ``out``."""
        import torch

        lay, out = self.layout, self.out
        src, dst = lay.row_slice(r0, r1)
        if src.stop == src.start:
            return  # padding rows only
        left, width, rows, k = lay.pad[1], lay.shape[1], src.stop - src.start, self.acc.shape[0]
        direct = [a is None or isinstance(a, np.ndarray) for a in (out.labels, out.probs, out.uncertainty)]
        labels = out.labels[dst] if direct[0] else np.empty((rows, width), np.uint8)
        probs = out.probs if out.probs is None else out.probs[:, dst] if direct[1] else np.empty((k, rows, width), np.float16)
        unc = out.uncertainty if out.uncertainty is None else out.uncertainty[dst] if direct[2] else np.empty((rows, width), np.float32)
        wy = self.sy[r0 + src.start:r0 + src.stop, None]
        for c in range(0, width, CHUNK):
            c1 = min(c + CHUNK, width)
            band = self.acc[:, src, left + c:left + c1] / (wy * self.sx[None, left + c:left + c1])
            top, idx = band.max(0)
            labels[:, c:c1] = (idx + 1).to(torch.uint8).cpu().numpy()
            if probs is not None:
                probs[:, :, c:c1] = band.half().cpu().numpy()
            if unc is not None:
                unc[:, c:c1] = (1.0 - top).cpu().numpy()
        if not direct[0]:
            out.labels[dst] = labels
        if not direct[1]:
            out.probs[:, dst] = probs
        if not direct[2]:
            out.uncertainty[dst] = unc
