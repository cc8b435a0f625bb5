"""The contract every latent codec follows.

A codec has three named paths, never a hidden mode flag:

* ``likelihoods(y, quantization=...)``: differentiable; returns the latent handed on to the
  synthesis transform and the likelihood of every coded symbol (training, attacks, estimates);
* ``compress(y)``: real entropy coding with CompressAI's rANS coder, one list of byte strings
  per image;
* ``decompress(strings, latent_hw)``: the exact inverse; the decoded latent equals the
  encoder's quantised latent bit for bit. Safe on untrusted bytes: a string that cannot be
  decoded exactly raises :class:`~entroguard.codec.rans.BitstreamError` before CompressAI's
  decoder reads past it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

Quantization = Literal["noise", "ste", "round"]
"""How the latent is quantised on the differentiable path.

* ``noise``: additive uniform noise in [-0.5, 0.5) for the likelihoods (the usual training
  proxy), straight-through rounding for the latent passed on to the decoder;
* ``ste``: straight-through rounding for both (what the coder really sees, with gradients);
* ``round``: hard rounding, no gradient through the quantiser (exact estimate of the coded rate).
"""


@dataclass
class CodecOutput:
    """Result of the differentiable path.

    Attributes:
        y_hat: quantised latent for the synthesis transform, shape (B, C, H, W).
        likelihoods: per-symbol likelihoods, ``{"y": (B, C, H, W)}`` and, for a hyperprior,
            ``"z": (B, Cz, Hz, Wz)``; values in (0, 1].
    """

    y_hat: Tensor
    likelihoods: dict[str, Tensor]

    def bits(self) -> Tensor:
        """Estimated bits per image, shape (B,): sum of -log2 likelihood over all symbols."""
        total = None
        for lik in self.likelihoods.values():
            b = -torch.log2(lik).flatten(1).sum(dim=1)
            total = b if total is None else total + b
        assert total is not None
        return total

    def bit_maps(self) -> dict[str, Tensor]:
        """Bits per latent position, ``{name: (B, H, W)}``, summed over channels."""
        return {k: -torch.log2(v).sum(dim=1) for k, v in self.likelihoods.items()}


class LatentCodec(nn.Module, ABC):
    """An entropy model for a latent of ``channels`` channels.

    Subclasses set ``prior`` (the short name used in packets, results and checkpoints) and
    ``string_names`` (the byte strings each image is coded into, in packet order).
    """

    prior: str
    string_names: tuple[str, ...]

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels <= 0:
            raise ValueError(f"channels must be positive, got {channels}")
        self.channels = channels

    @abstractmethod
    def likelihoods(
        self,
        y: Tensor,
        quantization: Quantization = "noise",
        generator: torch.Generator | None = None,
    ) -> CodecOutput:
        """Differentiable quantisation and likelihoods of ``y`` (B, C, H, W)."""

    @abstractmethod
    def compress(self, y: Tensor) -> list[list[bytes]]:
        """Entropy-code ``y`` (B, C, H, W); returns ``B`` lists of ``len(string_names)`` strings."""

    @abstractmethod
    def decompress(self, strings: list[list[bytes]], latent_hw: tuple[int, int]) -> Tensor:
        """Decode per-image strings into the quantised latent (B, C, H, W).

        Raises :class:`~entroguard.codec.rans.BitstreamError` for a string that cannot be
        decoded exactly (corrupt, cut or crafted); any bytes are safe to pass.
        """

    @abstractmethod
    def quantize(self, y: Tensor) -> Tensor:
        """The quantised latent the coder transmits for ``y``, without coding it."""

    @abstractmethod
    def update_tables(self) -> None:
        """(Re)build the coder's CDF tables from the learned densities; call after training."""

    def tables_changed(self) -> None:
        """Forget what was derived from the coder tables; call after setting them directly
        (a checkpoint's stored tables). ``update_tables`` calls it."""

    def tables_ready(self) -> bool:
        """Whether ``update_tables`` has run since the densities last changed."""
        return all(m._offset.numel() > 0 for m in self.entropy_models())

    @abstractmethod
    def entropy_models(self) -> list[nn.Module]:
        """The CompressAI entropy models inside this codec."""

    def _require_tables(self) -> None:
        if not self.tables_ready():
            raise RuntimeError(
                "entropy coder tables are not built: call update_tables() after training or "
                "loading weights (entroguard's checkpoint loader does this for you)"
            )


def check_latent(y: Tensor, channels: int) -> None:
    """Raise a clear error unless ``y`` is a finite (B, channels, H, W) float tensor."""
    if not isinstance(y, Tensor):
        raise TypeError(f"latent must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() != 4 or y.shape[1] != channels:
        raise ValueError(f"latent must have shape (B, {channels}, H, W), got {tuple(y.shape)}")
    if not y.is_floating_point():
        raise TypeError(f"latent must be a float tensor, got {y.dtype}")


def uniform_noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform noise in [-0.5, 0.5) with the shape, dtype and device of ``like``, drawn on the
    ``generator``'s device (a CPU generator gives the same noise whatever device trains)."""
    device = like.device if generator is None else generator.device
    noise = torch.rand(like.shape, generator=generator, dtype=like.dtype, device=device)
    return noise.to(like.device) - 0.5


def straight_through_round(x: Tensor, center: Tensor | float = 0.0) -> Tensor:
    """``round(x - center) + center`` forward, identity gradient backward."""
    rounded = torch.round(x - center) + center
    return x + (rounded - x).detach()


LOG2 = math.log(2.0)
