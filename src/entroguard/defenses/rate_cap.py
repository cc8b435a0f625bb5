"""The head's hard byte cap as a campaign defence (``defenses: [rate_cap: {budget_q: 0.99}]``).

Unlike the other defences it changes no pixel: the images pass unchanged, and the head codes
them with every payload capped at a budget (:mod:`entroguard.codec.byte_cap`), the model's
clean payload quantile ``budget_q`` from its checkpoint (``clean_payload``, measured on the
test set when the model was saved). Because the cap is a property of the head, an adaptive
attack through it differentiates through the identity and still meets the cap.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from entroguard.defenses.base import Defense
from entroguard.errors import InputError
from entroguard.measure import STAT_QUANTILES


class RateCap(Defense):
    """Cap every payload at the model's clean payload quantile ``budget_q`` (one of
    0.5, 0.9, 0.99, 0.999); images unchanged.

    Shape:
        images (B, 3, H, W) in [0, 1] -> the same images.
    """

    name = "rate_cap"
    gradient = "exact"
    needs_model = True
    hparams: tuple[str, ...] = ("budget_q",)

    def __init__(self, budget_q: float = 0.99) -> None:
        if str(budget_q) not in STAT_QUANTILES:
            raise ValueError(
                f"budget_q must be one of {', '.join(STAT_QUANTILES)} (the clean payload "
                f"quantiles a checkpoint stores), got {budget_q!r}"
            )
        self.budget_q = float(budget_q)

    def forward(
        self, model: nn.Module | None, images: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        return images.clone()

    def budget_bytes(self, model: nn.Module) -> int:
        """The model's clean payload quantile ``budget_q``, rounded up to whole bytes."""
        stats = getattr(model, "metadata", {}).get("clean_payload")
        if not stats:
            raise InputError(
                "rate_cap needs the model's clean payload statistics (clean_payload in its "
                "checkpoint): measure them with entroguard.train.zoo.annotate_measurements"
            )
        return math.ceil(stats["quantiles"][str(self.budget_q)])

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[int]:
        """The model's head capped at :meth:`budget_bytes` inside the block (its previous
        cap restored after); yields the budget in bytes."""
        previous, budget = model.byte_cap, self.budget_bytes(model)
        model.set_byte_cap(budget)
        try:
            yield budget
        finally:
            model.byte_cap = previous
