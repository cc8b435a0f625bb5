"""Where the entropy model spends its bits, on the image plane.

:func:`bit_map` turns the coded latent's per-position rate into a map of bits per image pixel;
:func:`rate_mask` normalises it per image to [0, 1] (0 = where the model spends the fewest
bits, the background; 1 = where it spends the most, the object and its edges). The paper's
object-aware TV uses "the latent's mean likelihood map upsampled to the image"; we use the
rate itself (-log2 likelihood summed over channels), which is what the coder actually pays and
is a monotone function of the likelihood for each symbol.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from entroguard.models.split import SplitClassifier
from entroguard.threats.attacks.base import frozen_eval

_TINY = 1e-12


def latent_bit_map(model: SplitClassifier, images: Tensor) -> Tensor:
    """Bits per latent position (B, h, w) of the symbols the coder sends for ``images``.

    The latent is hard-rounded as the coder rounds it (``"round"``: exact estimate, no
    gradient). For a hyperprior, the hyper-latent's bits (B, hz, wz) are spread evenly over
    the latent positions each of its positions covers (nearest upsampling, rescaled so that
    every image's total is kept) and added. The model runs frozen in eval mode; its modes are
    restored.
    """
    with frozen_eval(model), torch.no_grad():
        maps = model.codec.likelihoods(model.analyze(images), "round").bit_maps()
    total = maps["y"]
    for name, extra in maps.items():
        if name == "y":
            continue
        up = F.interpolate(extra.unsqueeze(1), size=total.shape[-2:], mode="nearest").squeeze(1)
        scale = extra.flatten(1).sum(1) / up.flatten(1).sum(1).clamp_min(_TINY)
        total = total + up * scale.view(-1, 1, 1)
    return total


def bit_map(model: SplitClassifier, images: Tensor) -> Tensor:
    """Bits per image pixel (B, 1, H, W): :func:`latent_bit_map` upsampled bilinearly to the
    image size and divided by the number of pixels per latent position."""
    bits = latent_bit_map(model, images).unsqueeze(1)
    h, w = images.shape[-2:]
    pixels_per_position = (h * w) / (bits.shape[-2] * bits.shape[-1])
    up = F.interpolate(bits, size=(h, w), mode="bilinear", align_corners=False)
    return up / pixels_per_position


def normalise_per_image(maps: Tensor, rtol: float = 1e-4) -> Tensor:
    """Min-max normalise each map of ``maps`` (B, ...) to [0, 1].

    A map whose span is at most ``rtol`` times its largest magnitude counts as constant (its
    differences are float rounding, which normalising would blow up to [0, 1]) and becomes 0
    everywhere: no position spends more bits than another.
    """
    flat = maps.flatten(1)
    shape = (-1, *([1] * (maps.dim() - 1)))
    lo = flat.min(dim=1).values.view(shape)
    hi = flat.max(dim=1).values.view(shape)
    span = hi - lo
    flat_map = span <= rtol * flat.abs().max(dim=1).values.view(shape) + _TINY
    return torch.where(flat_map, torch.zeros_like(maps), (maps - lo) / span.clamp_min(_TINY))


def rate_mask(model: SplitClassifier, images: Tensor) -> Tensor:
    """The rate map of ``images`` normalised per image to [0, 1], shape (B, 1, H, W)."""
    return normalise_per_image(bit_map(model, images))
