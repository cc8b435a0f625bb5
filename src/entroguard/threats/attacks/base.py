"""The contract every attack follows, and the PGD loop the gradient attacks share.

``attack(model, images, labels=None, generator=None) -> adversarial images``

* images in and out are float tensors (B, 3, H, W) in [0, 1]; normalisation is inside the model;
* the whole batch is attacked at once;
* every random draw (random start, noise copies, sign patterns) comes from ``generator``; when
  it is ``None`` a fresh generator seeded with 0 is used, so a call is reproducible and the
  global random state is never read or changed;
* the images are checked once, before the first step; a gradient attack projects every step
  onto [0, 1], so the model does not check their range at each step
  (:func:`entroguard.models.split.range_kept`: no device synchronisation per step on a GPU);
* during the call the model is in eval mode with ``requires_grad`` off on every parameter, and
  gradients are taken with :func:`torch.autograd.grad` with respect to the input only: nothing
  is ever accumulated into a parameter's ``.grad``. Each module's mode and each parameter's
  ``requires_grad`` are restored afterwards, also when the attack raises.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from entroguard.errors import InputError
from entroguard.models.split import check_unit_float, range_kept
from entroguard.threats.attacks.compiled import compiled as compiled_loss
from entroguard.threats.attacks.compiled import compiling
from entroguard.threats.attacks.precision import Precision, attack_precision, check_precision
from entroguard.threats.attacks.projection import (
    Norm,
    ascent_step,
    check_norm,
    project,
    random_start,
)


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with frozen parameters; restore both on exit.

    The mode is restored module by module (a model with some sub-modules deliberately in eval
    mode keeps them so), and so is each parameter's ``requires_grad``.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def check_attack_inputs(images: Tensor, labels: Tensor | None, needs_labels: bool) -> None:
    """Raise ``InputError`` unless ``images`` is a float (B, C, H, W) batch in [0, 1] and
    ``labels`` (when given or needed) is an integer tensor of shape (B,)."""
    if not isinstance(images, Tensor):
        raise InputError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise InputError(
            f"images must be a batch (B, 3, H, W), got shape {tuple(images.shape)}"
            + ("; add a batch dimension with x.unsqueeze(0)" if images.dim() == 3 else "")
        )
    check_unit_float(images)
    if labels is None:
        if needs_labels:
            raise InputError("this attack needs the true labels: pass labels=(B,) int64 tensor")
        return
    if not isinstance(labels, Tensor) or labels.shape != images.shape[:1]:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise InputError(f"labels must be a tensor of shape ({images.shape[0]},), got {shape}")
    if labels.is_floating_point() or labels.is_complex():
        raise InputError(f"labels must be integer class indices, got {labels.dtype}")


def resolve_generator(generator: torch.Generator | None, images: Tensor) -> torch.Generator:
    """``generator``, checked to live on the images' device, or a fresh one seeded with 0."""
    if generator is None:
        return torch.Generator(device=images.device).manual_seed(0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != images.device.type:
        raise ValueError(
            f"generator is on {generator.device} but the images are on {images.device}: "
            f"create it with torch.Generator(device={str(images.device)!r})"
        )
    return generator


def _format(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


class Attack(ABC):
    """Base class: validation, frozen eval mode, reproducible randomness, ``__repr__``.

    Subclasses set ``name`` (the key in ``ATTACKS``), ``needs_labels``, store their
    hyper-parameters as attributes listed in ``hparams`` and implement :meth:`perturb`.
    """

    name: str = ""
    needs_labels: bool = False
    hparams: tuple[str, ...] = ("eps",)

    def __init__(self, eps: float, norm: str = "linf") -> None:
        eps = float(eps)
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0 (in [0, 1] pixel units, e.g. 8/255), got {eps}")
        if norm == "linf" and eps > 1.0:
            raise ValueError(
                f"eps={eps:g} is not an L-infinity budget: in Python eps is in [0, 1] pixel units "
                f"as in torchattacks; for {eps:g} grey levels pass eps={eps:g}/255 "
                f"(= {eps / 255:.4f})"
            )
        self.eps = eps

    def __call__(
        self,
        model: nn.Module,
        images: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Attack ``images`` (B, 3, H, W) in [0, 1]; returns adversarial images of the same
        shape, dtype and device, in [0, 1] and within the budget of each clean image."""
        check_attack_inputs(images, labels, self.needs_labels)
        generator = resolve_generator(generator, images)
        images = images.detach()
        with frozen_eval(model), torch.enable_grad():
            adv = self.perturb(model, images, labels, generator)
        return adv.detach()

    @abstractmethod
    def perturb(
        self,
        model: nn.Module,
        images: Tensor,
        labels: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        """The attack proper; ``model`` is already frozen in eval mode, inputs are checked."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_format(getattr(self, k))}" for k in self.hparams)
        return f"{type(self).__name__}({args})"


RENAMED = {
    "step_size": "step_size was renamed step_ratio: the step as a fraction of eps (0.1 = "
    "eps/10); for an absolute step in [0, 1] pixel units as in torchattacks, give alpha "
    "(alpha=2/255)",
}


def refuse_unknown(cls: type, unknown: dict) -> None:
    """``TypeError`` for keyword arguments ``cls`` does not take, naming a renamed one's new
    name or the closest known one."""
    import difflib
    import inspect

    for name in unknown:
        if name in RENAMED:
            raise TypeError(f"{cls.__name__}: {RENAMED[name]}")
        inits = [vars(c)["__init__"] for c in cls.__mro__ if "__init__" in vars(c)]
        skip = ("self", "unknown", "args", "kwargs")
        known = list(dict.fromkeys(p for f in inits for p in inspect.signature(f).parameters
                                   if p not in skip))  # fmt: skip
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; it takes {', '.join(known)}"
        raise TypeError(f"{cls.__name__} got an unexpected argument {name!r}{hint}")


class PGDAttack(Attack):
    """Projected gradient ascent on a loss of the model's output (Madry et al. 2018).

    Each of ``steps`` iterations takes the gradient of :meth:`loss` with respect to the input
    only, moves ``alpha = step_ratio * eps`` along it (sign for ``"linf"``, unit-L2 direction
    per image for ``"l2"``) and projects back onto the budget and [0, 1]. Subclasses define the
    loss; it must be a sum or mean of per-image terms so that images do not interact.

    Args:
        eps: budget in [0, 1] pixel units (L-infinity bound or L2 radius per image).
        steps: ascent steps.
        step_ratio: step length as a fraction of ``eps`` (0.1: ten steps cross the budget).
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a random point of the budget (drawn from the generator)
            instead of the clean images.
        alpha: the step length in [0, 1] pixel units instead, as torchattacks' ``alpha``
            (``alpha=2/255``); it sets ``step_ratio = alpha / eps``.
        precision: the arithmetic of the loss's forward pass: ``"float32"`` (default),
            ``"bf16"`` (autocast) or ``"tf32"`` (CUDA matrix products); see
            :mod:`entroguard.threats.attacks.precision`.
        compiled: run the loss through ``torch.compile`` (built once per process, per loss
            and architecture; see :mod:`entroguard.threats.attacks.compiled`).

    The old name ``step_size`` (a fraction of eps that read like torchattacks' absolute step)
    is refused with a pointer to both.
    """

    hparams: tuple[str, ...] = (
        "eps",
        "steps",
        "step_ratio",
        "norm",
        "random_start",
        "precision",
        "compiled",
    )

    def __init__(
        self,
        eps: float,
        steps: int = 20,
        step_ratio: float = 0.1,
        norm: Norm = "linf",
        random_start: bool = False,
        alpha: float | None = None,
        precision: Precision = "float32",
        compiled: bool = False,
        **unknown: object,
    ) -> None:
        refuse_unknown(type(self), unknown)
        super().__init__(eps, norm)
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        if alpha is not None:
            if not 0 < alpha <= 1:
                raise ValueError(f"alpha is a step in [0, 1] pixel units (e.g. 2/255), got {alpha}")
            step_ratio = alpha / self.eps if self.eps > 0 else step_ratio
        if not step_ratio > 0:
            raise ValueError(f"step_ratio must be > 0 (a fraction of eps), got {step_ratio}")
        self.steps = int(steps)
        self.step_ratio = float(step_ratio)
        self.norm = check_norm(norm)
        self.random_start = bool(random_start)
        self.precision = check_precision(precision)
        if not isinstance(compiled, bool):
            raise ValueError(f"compiled must be true or false, got {compiled!r}")
        self.compiled = compiled

    @property
    def alpha(self) -> float:
        """Step length in [0, 1] pixel units: ``step_ratio * eps``."""
        return self.step_ratio * self.eps

    @abstractmethod
    def loss(
        self,
        model: nn.Module,
        x: Tensor,
        labels: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        """Scalar loss to maximise at ``x`` (B, 3, H, W); differentiable with respect to ``x``."""

    def gradient(
        self,
        model: nn.Module,
        x: Tensor,
        labels: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        """The gradient (B, 3, H, W) of :meth:`loss` at ``x`` (in [0, 1]) with respect to ``x``
        only, the model trusting its range (:func:`~entroguard.models.split.range_kept`); the
        loss's forward pass in the attack's precision, compiled when ``compiled`` is set."""
        x = x.detach().requires_grad_(True)
        loss_fn = compiled_loss(type(self).loss) if self.compiled else type(self).loss
        with compiling() if self.compiled else contextlib.nullcontext(), range_kept():
            with attack_precision(self.precision, x.device):
                loss = loss_fn(self, model, x, labels, generator)
            (grad,) = torch.autograd.grad(loss, x)
        return grad

    def transform_gradient(self, grad: Tensor) -> Tensor:
        """Hook for adaptive attacks (e.g. keep only low frequencies); identity here."""
        return grad

    def perturb(
        self,
        model: nn.Module,
        images: Tensor,
        labels: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        if self.eps == 0.0:
            return images.clone()
        if self.random_start:
            x_adv = random_start(images, self.eps, self.norm, generator)
        else:
            x_adv = images.clone()
        for _ in range(self.steps):
            grad = self.gradient(model, x_adv, labels, generator)
            step = ascent_step(self.transform_gradient(grad), self.alpha, self.norm)
            x_adv = project(x_adv.detach() + step, images, self.eps, self.norm)
        return x_adv
