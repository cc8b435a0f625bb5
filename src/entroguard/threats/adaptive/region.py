"""Region rate attack: rate PGD on the bits of the clean image's high-rate region only."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from entroguard.defenses import check_defense_name
from entroguard.defenses.rate_mask import latent_bit_map
from entroguard.models.split import SplitClassifier
from entroguard.threats.attacks.base import PGDAttack
from entroguard.threats.attacks.rate_pgd import RatePGD


def high_rate_region(bit_maps: Tensor, top_fraction: float) -> Tensor:
    """0/1 mask (B, h, w) of the ``ceil(top_fraction * h * w)`` positions of each map of
    ``bit_maps`` (B, h, w) with the most bits (ties broken by position, deterministically)."""
    b, h, w = bit_maps.shape
    count = max(1, math.ceil(top_fraction * h * w - 1e-9))
    order = torch.sort(bit_maps.flatten(1), dim=1, descending=True, stable=True).indices
    mask = torch.zeros(b, h * w, dtype=bit_maps.dtype, device=bit_maps.device)
    mask.scatter_(1, order[:, :count], 1.0)
    return mask.view(b, h, w)


class RateRegion(RatePGD):
    """Rate PGD whose loss counts only the bits in the clean image's high-rate region
    (adaptive attack on the object-aware TV, which smooths the high-rate region least).

    The region is the top ``top_fraction`` of the latent positions of the CLEAN image's bit
    map (bits per latent position, hyper-latent bits spread over the positions they cover;
    hard rounding, as the coder codes it), fixed for the whole attack. The loss is the mean
    over images of ``sum_positions region * bits_y`` plus, for a hyperprior, the hyper-latent's
    bits weighted by the fraction of each of its positions that the region covers (the region
    average-pooled to the hyper-latent's grid). Bits are averaged over ``noise_copies`` draws
    of quantisation noise (``"noise"``) or rounded straight-through (``"ste"``), as in
    :func:`~entroguard.threats.attacks.rate_bits`. The perturbation itself is not restricted:
    only the loss is.

    Args:
        eps, and by keyword steps, step_ratio, norm, quantization, noise_copies, random_start,
            alpha: as
            :class:`~entroguard.threats.attacks.RatePGD`.
        top_fraction: fraction of the latent positions in the region (default 0.25).
        defense: the defence this attack is meant to evade (recorded in ``adapts_to``; the
            attack itself does not run it).
    """

    name = "rate_region"
    hparams = (*RatePGD.hparams, "top_fraction", "adapts_to")

    def __init__(
        self,
        eps: float = 8 / 255,
        *,
        top_fraction: float = 0.25,
        defense: str = "object_tv",
        **rate_pgd: object,
    ) -> None:
        super().__init__(eps, **rate_pgd)  # steps, step_ratio, norm, ...: RatePGD's
        if not 0.0 < top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        self.top_fraction = float(top_fraction)
        self.adapts_to = check_defense_name(defense)
        self._region: Tensor | None = None

    def region(self, model: SplitClassifier, images: Tensor) -> Tensor:
        """The high-rate region (B, h, w) of ``images`` on the latent grid (0/1)."""
        return high_rate_region(latent_bit_map(model, images.detach()), self.top_fraction)

    def region_bits(
        self,
        model: SplitClassifier,
        x: Tensor,
        region: Tensor,
        generator: torch.Generator,
    ) -> Tensor:
        """Differentiable bits per image (B,) inside ``region`` (B, h, w) for images ``x``."""
        y = model.analyze(x)
        copies = self.noise_copies if self.quantization == "noise" else 1
        if copies > 1:
            y = y.repeat(copies, 1, 1, 1)
        maps = model.codec.likelihoods(y, self.quantization, generator).bit_maps()
        weight_y = region.repeat(copies, 1, 1)
        bits = (maps["y"] * weight_y).flatten(1).sum(1)
        for name, extra in maps.items():
            if name != "y":
                weight = F.adaptive_avg_pool2d(weight_y.unsqueeze(1), extra.shape[-2:])
                bits = bits + (extra * weight.squeeze(1)).flatten(1).sum(1)
        return bits.view(copies, x.shape[0]).mean(dim=0)

    def loss(
        self,
        model: SplitClassifier,
        x: Tensor,
        labels: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        """Mean bits per image in the region bound by :meth:`perturb`."""
        if self._region is None:
            raise RuntimeError("RateRegion.loss needs the region: call the attack, not loss()")
        return self.region_bits(model, x, self._region, generator).mean()

    def perturb(
        self,
        model: SplitClassifier,
        images: Tensor,
        labels: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        # The region belongs to this batch: bind it to a per-call copy, so the attack object
        # itself keeps no state between calls.
        bound = copy.copy(self)
        bound._region = self.region(model, images)
        return PGDAttack.perturb(bound, model, images, labels, generator)
