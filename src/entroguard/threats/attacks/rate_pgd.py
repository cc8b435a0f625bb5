"""Rate attack: PGD that maximises the bits the entropy model spends on each image."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from entroguard.models.split import SplitClassifier
from entroguard.threats.attacks.base import PGDAttack
from entroguard.threats.attacks.precision import Precision
from entroguard.threats.attacks.projection import Norm

AttackQuantization = Literal["noise", "ste"]


def rate_bits(
    model: SplitClassifier,
    x: Tensor,
    quantization: AttackQuantization,
    generator: torch.Generator,
    noise_copies: int = 1,
) -> Tensor:
    """Differentiable estimated bits per image, shape (B,), for images ``x`` (B, 3, H, W).

    The sum of -log2 likelihood over every symbol the coder sends: the latent ``y`` and, for a
    hyperprior, the hyper-latent ``z``. With ``"noise"`` the bits are averaged over
    ``noise_copies`` draws of uniform quantisation noise, evaluated as one batch of
    ``noise_copies * B`` latents (the analysis transform is deterministic, so it runs once on
    the B images and its output is repeated). With ``"ste"`` the latent is rounded as the coder
    rounds it, with a straight-through gradient. Either way the gradient reaches the input
    through the latent itself and, for a hyperprior, through the means, the scales and ``z``.
    """
    y = model.analyze(x)
    copies = noise_copies if quantization == "noise" else 1
    if copies > 1:
        y = y.repeat(copies, 1, 1, 1)
    bits = model.codec.likelihoods(y, quantization, generator).bits()
    return bits.view(copies, x.shape[0]).mean(dim=0)


class RatePGD(PGDAttack):
    """Entropy (rate) attack: PGD ascent on the estimated rate of the coded latent.

    The loss is the mean over images of the total -log2 likelihood of all the model's coded
    symbols (``y`` and, for MSHP, ``z``): see :func:`rate_bits`. The paper's setting is 20
    steps of sign-gradient ascent with an expectation over 16 noisy copies; its published code
    rounded ``y`` (so the gradient only went through the hyperprior's scales) and left the bits
    of ``z`` out: both are fixed here.

    Step size: ``step_ratio`` is a fraction of ``eps``; each step moves every pixel by
    ``alpha = step_ratio * eps`` (``"linf"``) or the image by ``alpha`` in L2 norm (``"l2"``).
    The default 0.1 with 20 steps gives a path of 2 eps, enough to reach any corner of the
    budget and still refine it (an absolute step of 0.1 would jump to the corners at every step
    for every eps <= 25/255 and make the attack a repeated FGSM).

    Randomness: the noise of every copy and the random start are drawn from the call's
    generator for the whole batch, so they depend on the batch an image is in; with
    ``quantization="ste"`` and no random start the attack of an image does not depend on the
    rest of its batch.

    Args:
        eps: budget in [0, 1] pixel units (L-infinity bound, or L2 radius per image).
        steps: ascent steps.
        step_ratio: step length as a fraction of ``eps``.
        norm: ``"linf"`` or ``"l2"``.
        quantization: ``"noise"`` (expectation over uniform quantisation noise, the training
            proxy) or ``"ste"`` (one copy, rounded as the coder rounds, straight-through
            gradient).
        noise_copies: noisy copies per step with ``"noise"`` (ignored with ``"ste"``).
        random_start: start from a uniform random point of the budget.
        alpha: the step in [0, 1] pixel units instead of ``step_ratio`` (torchattacks'
            convention, e.g. ``2 / 255``).
        precision: ``"float32"``, ``"bf16"`` or ``"tf32"`` for the loss's forward pass (see
            :mod:`entroguard.threats.attacks.precision`).
        compiled: run the loss through ``torch.compile`` (see
            :mod:`entroguard.threats.attacks.compiled`).

    Shape:
        images (B, 3, H, W) float in [0, 1] -> adversarial images (B, 3, H, W) in [0, 1].

    Example::

        >>> attack = RatePGD(eps=8 / 255)
        >>> x_adv = attack(model, images, generator=torch.Generator().manual_seed(0))
        >>> model.compress(x_adv).payload_bytes()  # more bytes than for ``images``
    """

    name = "rate_pgd"
    hparams = (
        "eps",
        "steps",
        "step_ratio",
        "norm",
        "quantization",
        "noise_copies",
        "random_start",
        "precision",
        "compiled",
    )

    def __init__(
        self,
        eps: float = 8 / 255,
        steps: int = 20,
        step_ratio: float = 0.1,
        norm: Norm = "linf",
        quantization: AttackQuantization = "noise",
        noise_copies: int = 16,
        random_start: bool = False,
        alpha: float | None = None,
        precision: Precision = "float32",
        compiled: bool = False,
        **unknown: object,
    ) -> None:
        super().__init__(eps, steps, step_ratio, norm, random_start, alpha=alpha,
                         precision=precision, compiled=compiled, **unknown)  # fmt: skip
        if quantization not in ("noise", "ste"):
            raise ValueError(
                f"quantization must be 'noise' or 'ste' (hard rounding has no gradient), "
                f"got {quantization!r}"
            )
        if int(noise_copies) != noise_copies or noise_copies < 1:
            raise ValueError(f"noise_copies must be a positive integer, got {noise_copies}")
        self.quantization = quantization
        self.noise_copies = int(noise_copies)

    def loss(
        self,
        model: SplitClassifier,
        x: Tensor,
        labels: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        """Mean estimated bits per image (the quantity to maximise)."""
        return rate_bits(model, x, self.quantization, generator, self.noise_copies).mean()
