"""The contract every defence follows (an ART-style pre-processor with a gradient path).

``defense(model, images) -> images``: float (B, 3, H, W) in [0, 1] in, same shape, dtype and
device out, in [0, 1]; the whole batch at once; the input is never modified in place; no
gradient is recorded; the model (used by model-aware defences such as ``object_tv``) runs in
eval mode with frozen parameters and gets its modes and ``requires_grad`` flags back.

``defense.differentiable(model, images) -> images``: the path an adaptive attack
differentiates through. Its forward value is the defence's output; its gradient is

* ``gradient == "exact"``: the true gradient of the (differentiable) defence, e.g. a fixed
  number of unrolled TV descent steps, a linear filter;
* ``gradient == "bpda"``: Backward Pass Differentiable Approximation (Athalye, Carlini and
  Wagner 2018, "Obfuscated gradients give a false sense of security"): the forward runs the
  real, non-differentiable defence and the backward pass treats it as the identity. Athalye et
  al. broke the JPEG and total-variation input transformations of Guo et al. 2018
  ("Countering adversarial images using input transformations") exactly this way.

A defence that draws random numbers sets ``randomized = True`` and takes them from the
``generator`` argument, so that an adaptive attack can average over them (EOT); of the built-in
defences only ``object_tv`` with ``jitter`` or ``dither`` is randomised.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import torch
from torch import Tensor, nn

from entroguard.threats.attacks.base import check_attack_inputs

Gradient = Literal["exact", "bpda"]


def _format(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


class Defense(ABC):
    """Base class: validation, no-grad forward, the gradient path, ``__repr__``.

    Subclasses set ``name`` (the key in ``DEFENSES`` and the ``defense`` column of results),
    ``gradient`` (``"exact"`` or ``"bpda"``), ``needs_model``, list their hyper-parameters
    (stored as attributes) in ``hparams`` and implement :meth:`forward`. An exact defence whose
    fast forward is not itself differentiable also overrides :meth:`transform`.
    """

    name: str = ""
    gradient: Gradient = "exact"
    needs_model: bool = False
    randomized: bool = False
    hparams: tuple[str, ...] = ()

    def __call__(
        self,
        model: nn.Module | None,
        images: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Defended copy of ``images`` (B, 3, H, W) in [0, 1]; same shape, dtype, device."""
        self._check(model, images)
        with torch.no_grad():
            out = self.forward(model, images.detach(), generator)
        return out.detach()

    def differentiable(
        self,
        model: nn.Module | None,
        images: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The defence's output with a gradient path for adaptive attacks (see module doc)."""
        self._check(model, images)
        if self.gradient == "bpda":
            with torch.no_grad():
                out = self.forward(model, images.detach(), generator)
            return out + (images - images.detach())  # value: exactly ``out``; gradient: 1
        return self.transform(model, images, generator)

    @abstractmethod
    def forward(
        self,
        model: nn.Module | None,
        images: Tensor,
        generator: torch.Generator | None,
    ) -> Tensor:
        """The defence proper on checked images; called without gradient by ``__call__``."""

    def transform(
        self,
        model: nn.Module | None,
        images: Tensor,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Differentiable version of :meth:`forward` (``gradient == "exact"``); by default
        :meth:`forward` itself, which must then be made of differentiable operations."""
        return self.forward(model, images, generator)

    def _check(self, model: nn.Module | None, images: Tensor) -> None:
        check_attack_inputs(images, None, needs_labels=False)
        if self.needs_model and model is None:
            raise ValueError(f"the {self.name} defence needs the model (it reads its rate map)")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_format(getattr(self, k))}" for k in self.hparams)
        return f"{type(self).__name__}({args})"
