"""Image-plane measures that explain the rate: total variation and DCT bands."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from entroguard.defenses.dct import project_low_band


def tv_map(images: Tensor, patch: int = 4) -> Tensor:
    """Local total variation (B, H, W): mean |dx| + |dy| over channels and a ``patch`` window.

    Args:
        images: (B, C, H, W) in [0, 1].
        patch: side of the averaging window in pixels (odd or even; same-size output).
    """
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs()
    tv = F.pad(dx, (0, 1)) + F.pad(dy, (0, 0, 0, 1))
    tv = tv.mean(dim=1, keepdim=True)
    tv = F.avg_pool2d(tv, patch, stride=1, padding=patch // 2, count_include_pad=False)
    return tv[..., : images.shape[-2], : images.shape[-1]].squeeze(1)


def _ranks(x: Tensor) -> Tensor:
    """Average ranks along the last dimension (ties share their mean rank)."""
    order = x.argsort(dim=-1)
    ranks = torch.empty_like(x)
    ranks.scatter_(-1, order, torch.arange(x.shape[-1], dtype=x.dtype).expand_as(x).contiguous())
    # ties: replace each rank by the mean rank of its value (exact for the discrete maps here)
    out = torch.empty_like(ranks)
    for i in range(x.shape[0]):
        _, inverse = torch.unique(x[i], return_inverse=True)
        sums = torch.zeros(int(inverse.max()) + 1, dtype=x.dtype).index_add_(0, inverse, ranks[i])
        counts = torch.bincount(inverse).to(x.dtype)
        out[i] = (sums / counts)[inverse]
    return out


def spearman_per_image(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation between two maps per image: (B, ...) x 2 -> (B,)."""
    ra = _ranks(a.flatten(1).double())
    rb = _ranks(b.flatten(1).double())
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    denom = (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)
    return ((ra * rb).sum(dim=1) / denom).float()


def band_filtered(images: Tensor, fraction: float, keep: str) -> Tensor:
    """Images with only the lowest ``fraction`` of 2-D DCT frequencies (``keep="low"``), or
    with that band removed except the mean (``keep="high"``), clipped to [0, 1]."""
    low = project_low_band(images, fraction)
    if keep == "low":
        return low.clamp(0, 1)
    if keep == "high":
        mean = images.mean(dim=(-2, -1), keepdim=True)
        return (images - low + mean).clamp(0, 1)
    raise ValueError(f"keep must be 'low' or 'high', got {keep!r}")
