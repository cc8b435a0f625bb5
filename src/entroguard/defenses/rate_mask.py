"""Where the entropy model spends its bits, on the image plane.

:func:`bit_map` turns the coded latent's per-position rate into a map of bits per image pixel;
:func:`rate_mask` normalises it per image to [0, 1] (0 = where the model spends the fewest
bits, the background; 1 = where it spends the most, the object and its edges). The paper's
object-aware TV uses "the latent's mean likelihood map upsampled to the image"; we use the
rate itself (-log2 likelihood summed over channels), which is what the coder actually pays and
is a monotone function of the likelihood for each symbol.

Cost: on the CPU the head runs on chunks of :data:`CPU_CHUNK` images (its activations then stay
in the cache; the result does not depend on the chunking), and the bits of a factorized prior
are looked up in a per-channel table of the symbols that occur (its density is one function
per channel, so each distinct symbol's bits are computed once instead of once per position).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from entroguard.codec.factorized import FactorizedPrior, bottleneck_center
from entroguard.models.split import SplitClassifier
from entroguard.threats.attacks.base import frozen_eval

_TINY = 1e-12
#: Images per run of the head on the CPU.
CPU_CHUNK = 32
#: A factorized prior's bits are looked up in a table when the table has at most this
#: fraction of the latent's elements.
TABLE_FRACTION = 0.25


def factorized_bits(codec: FactorizedPrior, y: Tensor) -> Tensor | None:
    """Bits (B, C, h, w) of the symbols the factorized prior ``codec`` codes for the latent
    ``y`` (B, C, h, w), as ``-log2`` of ``codec.likelihoods(y, "round")``, computed once per
    channel and distinct symbol and looked up; ``None`` when the symbols span too wide a range
    for a table to be cheaper (more than :data:`TABLE_FRACTION` of ``y``'s elements)."""
    center = bottleneck_center(codec.entropy_bottleneck)  # (1, C, 1, 1)
    symbols = torch.round(y - center)  # the integers the coder sends
    if symbols.numel() == 0:
        return None
    lo_f, hi_f = (float(v) for v in torch.aminmax(symbols))
    if not (math.isfinite(lo_f) and math.isfinite(hi_f)):
        return None
    lo, hi = int(lo_f), int(hi_f)
    span = hi - lo + 1
    if span * y.shape[1] > TABLE_FRACTION * symbols.numel():
        return None
    values = torch.arange(lo, hi + 1, dtype=y.dtype, device=y.device).view(1, 1, 1, span)
    table = -torch.log2(codec.likelihoods(values + center, "round").likelihoods["y"])[0, :, 0]
    channel = torch.arange(y.shape[1], device=y.device).view(1, -1, 1, 1)
    return table[channel, (symbols - lo).long()]


def _latent_bits(model: SplitClassifier, images: Tensor) -> dict[str, Tensor]:
    """Bits per latent position of each coded latent, ``{name: (B, h, w)}`` (no gradient)."""
    y = model.analyze(images)
    if isinstance(model.codec, FactorizedPrior):
        bits = factorized_bits(model.codec, y)
        if bits is not None:
            return {"y": bits.sum(dim=1)}
    return model.codec.likelihoods(y, "round").bit_maps()


def latent_bit_map(model: SplitClassifier, images: Tensor) -> Tensor:
    """Bits per latent position (B, h, w) of the symbols the coder sends for ``images``.

    The latent is hard-rounded as the coder rounds it (``"round"``: exact estimate, no
    gradient). For a hyperprior, the hyper-latent's bits (B, hz, wz) are spread evenly over
    the latent positions each of its positions covers (nearest upsampling, rescaled so that
    every image's total is kept) and added. The model runs frozen in eval mode; its modes are
    restored.
    """
    chunk = CPU_CHUNK if images.device.type == "cpu" else max(1, len(images))
    with frozen_eval(model), torch.no_grad():
        parts = [_latent_bits(model, images[i : i + chunk]) for i in range(0, len(images), chunk)]
        if not parts:
            parts = [_latent_bits(model, images)]
    maps = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
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
