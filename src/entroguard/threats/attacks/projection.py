"""Steps, projections and random starts shared by every attack (the one place they live).

All functions work on whole batches: images are float tensors (B, C, H, W) in [0, 1], and
every norm is taken per image over (C, H, W). ``eps`` is in [0, 1] pixel units (8/255 is an
eight-grey-level budget for ``"linf"``; the Euclidean radius of the perturbation for ``"l2"``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")
_TINY = 1e-12


def check_norm(norm: str) -> Norm:
    """Return ``norm`` if it is ``"linf"`` or ``"l2"``, else raise a ``ValueError``."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm  # type: ignore[return-value]


def per_image_l2(t: Tensor) -> Tensor:
    """Euclidean norm of each image of ``t`` (B, ...), shaped (B, 1, 1, 1) for broadcasting."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def ascent_step(grad: Tensor, alpha: float, norm: Norm) -> Tensor:
    """The perturbation change of one ascent step of length ``alpha`` along ``grad``.

    ``"linf"``: ``alpha * sign(grad)`` (steepest ascent for the L-infinity norm);
    ``"l2"``: ``alpha * grad / ||grad||_2`` per image (an image with a zero gradient stays).
    """
    if norm == "linf":
        return alpha * grad.sign()
    return alpha * grad / per_image_l2(grad).clamp_min(_TINY)


def project(x_adv: Tensor, x: Tensor, eps: float, norm: Norm) -> Tensor:
    """Project ``x_adv`` onto {x' in [0, 1]: ||x' - x|| <= eps} (per image).

    The norm ball comes first, then the [0, 1] box; since ``x`` is in the box, clipping to it
    only shrinks every coordinate of the perturbation, so the result stays in the ball.
    """
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / per_image_l2(delta).clamp_min(_TINY)).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def random_start(x: Tensor, eps: float, norm: Norm, generator: torch.Generator) -> Tensor:
    """A random point of the budget around ``x`` (B, C, H, W), drawn from ``generator``.

    ``"linf"``: uniform in [-eps, eps] per pixel; ``"l2"``: a uniformly random direction with a
    radius uniform in [0, eps] per image. The result is projected into [0, 1].
    """
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        delta = (2.0 * u - 1.0) * eps
    else:
        d = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        r = torch.rand((x.shape[0],), generator=generator, dtype=x.dtype, device=x.device)
        delta = d / per_image_l2(d).clamp_min(_TINY) * (eps * r).view(-1, 1, 1, 1)
    return project(x + delta, x, eps, norm)


def random_signs(shape: torch.Size | tuple[int, ...], like: Tensor, generator: torch.Generator):
    """A tensor of ``shape`` filled with -1 or +1 with equal odds, dtype/device of ``like``."""
    bits = torch.randint(0, 2, tuple(shape), generator=generator, device=like.device)
    return bits.to(like.dtype).mul_(2.0).sub_(1.0)
