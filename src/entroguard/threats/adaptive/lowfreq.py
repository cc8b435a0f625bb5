"""Low-frequency rate attack: rate PGD whose perturbation lives in the low 2-D DCT band."""

from __future__ import annotations

import torch
from torch import Tensor

from entroguard.defenses import check_defense_name
from entroguard.defenses.dct import project_low_band
from entroguard.models.split import SplitClassifier
from entroguard.threats.attacks.projection import (
    ascent_step,
    per_image_l2,
    project,
    random_start,
)
from entroguard.threats.attacks.rate_pgd import RatePGD

_TINY = 1e-12


def _per_image_max(t: Tensor) -> Tensor:
    return t.abs().flatten(1).max(dim=1).values.view(-1, *([1] * (t.dim() - 1)))


class RateLowFreq(RatePGD):
    """Rate PGD restricted to the lowest ``fraction`` of 2-D DCT frequencies (adaptive attack
    on TV-type defences, which remove high frequencies and keep low ones).

    The band is :func:`entroguard.defenses.dct.low_band_mask` over the SPATIAL dimensions
    (H, W) of each image and channel (the paper's published code built its mask over the batch
    and channel dimensions, so nothing was masked). The attack keeps a perturbation ``delta``
    that is exactly in the band and returns ``clip(x + delta, 0, 1)``:

    1. the gradient of the rate at ``clip(x + delta)`` is projected onto the band (DCT,
       mask, inverse DCT: an orthogonal projection, so it is still an ascent direction);
    2. the step moves along it by ``alpha = step_ratio * eps``: scaled so that its largest
       pixel change is ``alpha`` (``"linf"``: a sign step would leave the band) or its L2
       norm is ``alpha`` (``"l2"``); scaling keeps the band;
    3. ``box_iters`` rounds of alternating projections between the band and the box
       ``{delta: x + delta in [0, 1], ||delta|| <= eps}`` pull ``delta`` toward perturbations
       that are both in the band and need no clipping; the last projection is onto the band;
    4. ``delta`` is scaled down onto the budget ball (exact, and it keeps the band).

    Budget guarantee: the output is within ``eps`` of the clean image and in [0, 1] exactly
    (the final clip to [0, 1] only shrinks the perturbation). Its perturbation is exactly in
    the band (to float rounding, relative out-of-band energy ~1e-12) wherever ``x + delta``
    stays in [0, 1]; where it would leave the box (dark or bright saturated pixels, e.g. the
    black background of Fashion-MNIST), the clip removes a residual that is out of band. The
    alternating projections keep that residual small; tests measure it.

    Args:
        eps, and by keyword steps, step_ratio, norm, quantization, noise_copies, random_start,
            alpha: as
            :class:`~entroguard.threats.attacks.RatePGD` (the random start is drawn in the
            band).
        fraction: fraction of the H x W DCT frequencies the perturbation may use (paper: 0.1).
        box_iters: alternating projections between the band and the box per step.
        defense: the defence this attack is meant to evade (recorded in ``adapts_to``, the
            ``defense`` column of results; the attack itself does not run it).
    """

    name = "rate_lowfreq"
    hparams = (*RatePGD.hparams, "fraction", "box_iters", "adapts_to")

    def __init__(
        self,
        eps: float = 8 / 255,
        *,
        fraction: float = 0.1,
        box_iters: int = 10,
        defense: str = "object_tv",
        **rate_pgd: object,
    ) -> None:
        super().__init__(eps, **rate_pgd)  # steps, step_ratio, norm, ...: RatePGD's
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if int(box_iters) != box_iters or box_iters < 0:
            raise ValueError(f"box_iters must be a non-negative integer, got {box_iters}")
        self.fraction = float(fraction)
        self.box_iters = int(box_iters)
        self.adapts_to = check_defense_name(defense)

    def transform_gradient(self, grad: Tensor) -> Tensor:
        """The gradient's component in the low band (orthogonal projection, spatial dims)."""
        return project_low_band(grad, self.fraction)

    def _step(self, direction: Tensor) -> Tensor:
        if self.norm == "l2":
            return ascent_step(direction, self.alpha, "l2")
        return self.alpha * direction / _per_image_max(direction).clamp_min(_TINY)

    def _onto_ball(self, delta: Tensor) -> Tensor:
        size = _per_image_max(delta) if self.norm == "linf" else per_image_l2(delta)
        return delta * (self.eps / size.clamp_min(_TINY)).clamp(max=1.0)

    def _feasible(self, images: Tensor, delta: Tensor) -> Tensor:
        """``delta`` in the band and the budget ball, near the box (see the class doc)."""
        delta = project_low_band(delta, self.fraction)
        for _ in range(self.box_iters):
            delta = project(images + delta, images, self.eps, self.norm) - images
            delta = project_low_band(delta, self.fraction)
        return self._onto_ball(delta)

    def perturb(
        self,
        model: SplitClassifier,
        images: Tensor,
        labels: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        if self.eps == 0.0:
            return images.clone()
        if self.random_start:
            start = random_start(images, self.eps, self.norm, generator) - images
            delta = self._feasible(images, start)
        else:
            delta = torch.zeros_like(images)
        for _ in range(self.steps):
            x_adv = project(images + delta, images, self.eps, self.norm)
            grad = self.gradient(model, x_adv, labels, generator)
            step = self._step(self.transform_gradient(grad))
            delta = self._feasible(images, delta + step)
        return project(images + delta, images, self.eps, self.norm)
