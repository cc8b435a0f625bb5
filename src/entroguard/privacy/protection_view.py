"""What an observer sees under a protection, for measuring leakage (not a wire path).

* ``none``: the plain model.
* ``keyed_noise`` / ``keyed_permutation`` (:mod:`entroguard.privacy.keyed`): the latent that
  travels is protected under a key and a per-image nonce; deeper points are the tail's, which
  holds the key and undoes the protection, so they are unchanged.
* ``capr_noise``: CapRecover's protection: Gaussian noise of ``sigma`` times each feature
  map's standard deviation added after ``g_s`` and after each of the tail's first two stages,
  removed in the next (the noise is known to the tail). It covers the intermediate features a
  compromised server's memory shows, not the latent that travels.

The attacker is adaptive: it trains on shadow data seen through the same protection with its
own key and noise draws (another ``seed``), never the victim's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from entroguard.privacy.keyed import (
    KEYED_PROTECTIONS,
    KeyedProtection,
    SplitKey,
    recover_batch,
)

PROTECTIONS: tuple[str, ...] = ("none", "keyed_noise", "keyed_permutation", "capr_noise")
CAPR_SIGMA = 1.0
"""Noise of the CapRecover protection, in standard deviations of each feature map."""


def key_for(seed: int) -> SplitKey:
    """A deterministic 32-byte key for ``seed`` (the victim's and the attacker's differ)."""
    return SplitKey(hashlib.sha256(f"entroguard-leak-key-{seed}".encode()).digest())


def nonce_for(seed: int, index: int) -> bytes:
    """The 8-byte nonce of image ``index`` in a measurement seeded ``seed``."""
    return hashlib.sha256(f"nonce-{seed}-{index}".encode()).digest()[:8]


@dataclass
class ProtectionView:
    """A protection as seen by one party: ``seed`` picks its key, nonces and noise draws."""

    protection: str = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.protection not in PROTECTIONS:
            raise ValueError(f"unknown protection {self.protection!r}: choose from "
                             f"{', '.join(PROTECTIONS)}")  # fmt: skip
        self.key = key_for(self.seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    @property
    def keyed(self) -> KeyedProtection | None:
        cls = KEYED_PROTECTIONS.get(self.protection)
        return cls() if cls is not None else None

    def nonces(self, start: int, n: int) -> list[bytes]:
        """The nonces of images ``start`` .. ``start + n - 1`` of a measurement."""
        return [nonce_for(self.seed, start + i) for i in range(n)]

    def head_latent(self, y: Tensor, start: int) -> Tensor:
        """The latent (B, C, h, w) the head codes for images ``start``.. of a measurement."""
        keyed = self.keyed
        if keyed is None:
            return y
        return torch.stack([keyed.protect(y[i], self.key, nonce)
                            for i, nonce in enumerate(self.nonces(start, len(y)))])  # fmt: skip

    def protect_all(self, latents: Tensor, batch: int = 500) -> Tensor:
        """The latents (N, C, h, w) the head codes for images 0..N-1 of a measurement
        (``latents`` itself when the protection leaves the latent alone)."""
        if self.keyed is None:
            return latents
        pieces = zip(range(0, len(latents), batch), latents.split(batch), strict=True)
        return torch.cat([self.head_latent(y, start) for start, y in pieces])

    def tail_latent(self, y_hat: Tensor, start: int) -> Tensor:
        """The decoded latent (B, C, h, w) with the protection undone, as the keyed tail has it."""
        keyed = self.keyed
        if keyed is None:
            return y_hat
        return recover_batch(y_hat, self.nonces(start, len(y_hat)), keyed, self.key)

    def observed(self, point: str, features: Tensor) -> Tensor:
        """``features`` at ``point`` as an observer of the tail's memory sees them."""
        if self.protection != "capr_noise":
            return features
        scale = features.flatten(2).std(dim=2, keepdim=True).unsqueeze(-1) if features.dim() == 4 \
            else features.std()  # fmt: skip
        noise = torch.randn(features.shape, generator=self._generator)
        return features + CAPR_SIGMA * scale * noise
