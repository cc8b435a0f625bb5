"""Random-noise baseline: a random sign pattern of magnitude eps."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from entroguard.threats.attacks.base import Attack
from entroguard.threats.attacks.projection import random_signs


class SignNoise(Attack):
    """Add ``eps * s`` with ``s`` a random +-1 pattern (per pixel and channel), clip to [0, 1].

    The paper's random-noise baseline: the same L-infinity magnitude as the gradient attacks,
    no model knowledge (the model is not called). The signs come from ``generator``.

    Args:
        eps: magnitude in [0, 1] pixel units.

    Shape:
        images (B, 3, H, W) float in [0, 1] -> noisy images (B, 3, H, W) in [0, 1]; every
        pixel moves by exactly ``eps`` unless clipping at 0 or 1 stops it.

    Example::

        >>> x_noisy = SignNoise(8 / 255)(model, images, generator=torch.Generator().manual_seed(0))
    """

    name = "noise"

    def perturb(
        self,
        model: nn.Module,
        images: Tensor,
        labels: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        signs = random_signs(images.shape, images, generator)
        return (images + self.eps * signs).clamp(0.0, 1.0)
