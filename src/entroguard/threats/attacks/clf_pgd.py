"""Classifier attack: untargeted PGD on the cross-entropy of the split model's logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from entroguard.models.split import SplitClassifier
from entroguard.threats.attacks.base import PGDAttack
from entroguard.threats.attacks.precision import Precision
from entroguard.threats.attacks.projection import Norm


class ClassifierPGD(PGDAttack):
    """Untargeted PGD (Madry et al. 2018) through the whole split model.

    The loss is the cross-entropy of the logits of ``model.forward_train(x, "ste")``: the
    latent is rounded as the coder rounds it, and the gradient passes the quantiser straight
    through, so the attack sees the tail the server runs.

    Args:
        eps: budget in [0, 1] pixel units (L-infinity bound, or L2 radius per image).
        steps: ascent steps.
        step_ratio: step length as a fraction of ``eps`` (``alpha = step_ratio * eps``).
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a uniform random point of the budget.
        precision: ``"float32"``, ``"bf16"`` or ``"tf32"`` for the loss's forward pass (see
            :mod:`entroguard.threats.attacks.precision`).
        compiled: run the loss through ``torch.compile`` (see
            :mod:`entroguard.threats.attacks.compiled`).

    Shape:
        images (B, 3, H, W) float in [0, 1], labels (B,) int64 -> adversarial images
        (B, 3, H, W) in [0, 1].

    Example::

        >>> attack = ClassifierPGD(eps=4 / 255)
        >>> x_adv = attack(model, images, labels)
        >>> (model(x_adv).argmax(1) == labels).float().mean()  # lower than on ``images``
    """

    name = "clf_pgd"
    needs_labels = True

    def __init__(
        self,
        eps: float = 8 / 255,
        steps: int = 20,
        step_ratio: float = 0.1,
        norm: Norm = "linf",
        random_start: bool = False,
        alpha: float | None = None,
        precision: Precision = "float32",
        compiled: bool = False,
        **unknown: object,
    ) -> None:
        super().__init__(eps, steps, step_ratio, norm, random_start, alpha=alpha,
                         precision=precision, compiled=compiled, **unknown)  # fmt: skip

    def loss(
        self,
        model: SplitClassifier,
        x: Tensor,
        labels: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        """Mean cross-entropy of the logits against ``labels``."""
        assert labels is not None
        logits = model.forward_train(x, "ste", generator).logits
        return F.cross_entropy(logits, labels.to(logits.device))
