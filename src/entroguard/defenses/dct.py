"""Orthonormal 2-D DCT-II over the spatial dimensions, and low-frequency band projections.

Shared by the ``lowpass`` defence and the ``rate_lowfreq`` adaptive attack, so that "the
lowest fraction of frequencies" means the same thing in both. Everything acts on the LAST
TWO dimensions (H, W) of a tensor (B, C, H, W) only: batch and channels are never mixed (the
paper's published low-frequency attack built its mask over batch and channels, so nothing was
masked).

The 2-D transform is two matrix products, ``X = D_H @ x @ D_W^T`` with ``D_N`` the orthonormal
DCT-II matrix, so a batch is transformed at once, gradients flow through it, and the inverse
is ``x = D_H^T @ X @ D_W``. Because the transform is orthonormal, keeping a set of
coefficients and transforming back is the orthogonal (least-squares) projection onto the
subspace of images made of those frequencies.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def dct_matrix(n: int, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """The orthonormal DCT-II matrix ``D`` (n, n): ``D[k, i] = s_k cos(pi (2i + 1) k / 2n)``.

    ``s_0 = sqrt(1/n)``, ``s_k = sqrt(2/n)`` for ``k > 0``; ``D @ D.T`` is the identity.
    Computed in float64 and cast to ``dtype``.
    """
    if n < 1:
        raise ValueError(f"DCT size must be positive, got {n}")
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


def _matrices(x: Tensor) -> tuple[Tensor, Tensor]:
    h, w = x.shape[-2:]
    return (
        dct_matrix(h, dtype=x.dtype, device=x.device),
        dct_matrix(w, dtype=x.dtype, device=x.device),
    )


def dct2(x: Tensor) -> Tensor:
    """2-D orthonormal DCT-II of ``x`` (..., H, W) over its last two dimensions."""
    dh, dw = _matrices(x)
    return dh @ x @ dw.T


def idct2(coeffs: Tensor) -> Tensor:
    """Inverse of :func:`dct2` (a DCT-III), over the last two dimensions."""
    dh, dw = _matrices(coeffs)
    return dh.T @ coeffs @ dw


def low_band_mask(
    h: int, w: int, fraction: float, *, dtype: torch.dtype = torch.float32, device=None
) -> Tensor:
    """0/1 mask (h, w) of the lowest ``fraction`` of 2-D DCT frequencies.

    Frequencies ``(k_h, k_w)`` are ordered by their normalised radius
    ``sqrt((k_h / h)^2 + (k_w / w)^2)``; the band holds every frequency whose radius is at
    most that of the ``ceil(fraction * h * w)``-th lowest one (ties are kept together, so the
    band is symmetric and may hold slightly more than ``fraction``: see :func:`band_fraction`).
    The DC coefficient is always in the band. Only the spatial dimensions are involved.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    kh = torch.arange(h, dtype=torch.float64).unsqueeze(1) / h
    kw = torch.arange(w, dtype=torch.float64).unsqueeze(0) / w
    radius = torch.sqrt(kh**2 + kw**2)
    count = max(1, math.ceil(fraction * h * w - 1e-9))
    threshold = radius.flatten().sort().values[count - 1]
    return (radius <= threshold + 1e-12).to(dtype=dtype, device=device)


def band_fraction(h: int, w: int, fraction: float) -> float:
    """The fraction of the h x w frequencies :func:`low_band_mask` really keeps."""
    return float(low_band_mask(h, w, fraction).mean())


def project_low_band(x: Tensor, fraction: float) -> Tensor:
    """Orthogonal projection of ``x`` (..., H, W) onto the lowest ``fraction`` of its 2-D DCT
    frequencies, per image and channel (DCT, zero the rest, inverse DCT). Differentiable and
    linear; its gradient is the same projection."""
    mask = low_band_mask(*x.shape[-2:], fraction, dtype=x.dtype, device=x.device)
    return idct2(dct2(x) * mask)


def out_of_band_energy(x: Tensor, fraction: float) -> Tensor:
    """Per-image energy (sum of squares) of ``x`` (B, ..., H, W) OUTSIDE the low band,
    shape (B,). By Parseval this equals ``||x - project_low_band(x)||^2``."""
    mask = low_band_mask(*x.shape[-2:], fraction, dtype=x.dtype, device=x.device)
    return (dct2(x) * (1 - mask)).pow(2).flatten(1).sum(dim=1)
