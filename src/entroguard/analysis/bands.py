"""Image energy per 2-D DCT band, and how a threat moves it between bands.

The bands follow :func:`entroguard.defenses.dct.low_band_mask`, so "the lowest fraction f of
frequencies" means here what it means for the ``lowpass`` defence and the ``rate_lowfreq``
attack: frequencies ``(k_h, k_w)`` are ordered by their normalised radius
``sqrt((k_h / H)^2 + (k_w / W)^2)`` and band ``k`` (1..n) holds those in the lowest ``k / n``
but not in the lowest ``(k - 1) / n`` of them. Band 0 is the DC coefficient (the image mean)
alone, so a brightness shift is not mistaken for low-frequency texture. The n + 1 bands
partition the H x W frequencies; with ties kept together a band may hold slightly more or
fewer than ``1 / n`` of them (:func:`band_sizes`).

Energies are sums of squared orthonormal DCT coefficients over channels, in squared pixel
units (pixels in [0, 1]); by Parseval they add up to ``||x||^2``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entroguard.defenses.dct import dct2, low_band_mask

#: Number of AC bands (equal shares of the frequencies, lowest first), besides the DC band.
N_BANDS = 8
_TINY = 1e-12


def band_edges(n_bands: int = N_BANDS) -> list[float]:
    """Fractions of the frequencies at the band edges: ``[0, 1/n, ..., 1]`` (n + 1 values)."""
    if n_bands < 1:
        raise ValueError(f"n_bands must be positive, got {n_bands}")
    return [k / n_bands for k in range(n_bands + 1)]


def band_labels(n_bands: int = N_BANDS) -> list[str]:
    """``["DC", "0-12.5%", ..., "87.5-100%"]``: the n + 1 band names, lowest first."""
    edges = band_edges(n_bands)
    return ["DC"] + [f"{100 * a:g}-{100 * b:g}%" for a, b in zip(edges, edges[1:], strict=False)]


def band_masks(
    h: int, w: int, n_bands: int = N_BANDS, *, dtype: torch.dtype = torch.float64, device=None
) -> Tensor:
    """0/1 masks (n_bands + 1, h, w) of the DC band and the ``n_bands`` AC bands.

    Every frequency is in exactly one band; band ``k >= 1`` is
    ``low_band_mask(k / n) - low_band_mask((k - 1) / n)`` (band 1 without the DC).
    """
    cumulative = torch.zeros(n_bands + 1, h, w, dtype=torch.float64)
    cumulative[0, 0, 0] = 1.0  # the DC coefficient, always in the lowest band
    for k, fraction in enumerate(band_edges(n_bands)[1:], start=1):
        cumulative[k] = low_band_mask(h, w, fraction, dtype=torch.float64)
    masks = torch.cat([cumulative[:1], cumulative[1:] - cumulative[:-1]])
    return masks.to(dtype=dtype, device=device)


def band_sizes(h: int, w: int, n_bands: int = N_BANDS) -> list[float]:
    """The fraction of the h x w frequencies each band really holds (n + 1 values, sum 1)."""
    return [float(m.mean()) for m in band_masks(h, w, n_bands)]


def band_energy(images: Tensor, n_bands: int = N_BANDS) -> Tensor:
    """Energy per band (B, n_bands + 1) of ``images`` (B, C, H, W), in float64.

    The sum over channels of the squared 2-D DCT coefficients in each band; the row sums are
    ``||x||^2`` per image (Parseval).
    """
    x = images.detach().to(torch.float64)
    power = dct2(x).pow(2).sum(dim=1)  # (B, H, W)
    masks = band_masks(*x.shape[-2:], n_bands, device=x.device)
    return torch.einsum("bhw,khw->bk", power, masks)


def energy_change(clean: Tensor, threatened: Tensor, n_bands: int = N_BANDS) -> Tensor:
    """Band energy of ``threatened`` minus that of ``clean``, relative to the clean image's
    total AC energy (all bands but the DC), per image: (B, n_bands + 1), in %.

    Positive where the threat adds energy to a band (noise to the high bands), negative where
    it removes some (blur from the high bands). ``clean`` and ``threatened``: (B, C, H, W).
    """
    before = band_energy(clean, n_bands)
    after = band_energy(threatened, n_bands)
    ac = before[:, 1:].sum(dim=1, keepdim=True).clamp_min(_TINY)
    return 100.0 * (after - before) / ac


def perturbation_share(clean: Tensor, threatened: Tensor, n_bands: int = N_BANDS) -> Tensor:
    """Share (%) of the perturbation's energy ``||threatened - clean||^2`` in each band,
    per image: (B, n_bands + 1), rows summing to 100 (0 where nothing changed)."""
    energy = band_energy(threatened.to(torch.float64) - clean.to(torch.float64), n_bands)
    total = energy.sum(dim=1, keepdim=True)
    return torch.where(total > _TINY, 100.0 * energy / total.clamp_min(_TINY), 0.0)


def high_bands(n_bands: int = N_BANDS) -> slice:
    """Columns of :func:`band_energy` in the upper half of the frequencies (for an odd
    ``n_bands`` the middle band counts as low)."""
    return slice(1 + (n_bands + 1) // 2, n_bands + 1)


def low_ac_bands(n_bands: int = N_BANDS) -> slice:
    """Columns of the lower half of the frequencies, DC excluded."""
    return slice(1, 1 + (n_bands + 1) // 2)
