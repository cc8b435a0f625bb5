"""Keyed protections of the transmitted latent: the head transforms it with a secret key and a
per-packet nonce, the tail undoes it; an eavesdropper who decodes the packet sees the
transformed latent.

The key is shared at deployment and never travels. Each packet (format 4) carries its 8-byte
nonce and a 4-byte tag, HMAC-SHA256(key, nonce) truncated, so a tail with another key refuses
the packet (``bad_key``) instead of classifying garbage. Every pseudo-random draw comes from
SHA-256 in counter mode over (key, nonce) and integer arithmetic, so the tail regenerates
exactly what the head drew on any machine.

* :class:`KeyedNoise` adds integer noise, uniform in [-spread, spread], to the latent before
  quantisation. Rounding commutes with adding integers, so for the factorized prior the tail
  removes it exactly; the coder pays for the wider symbols. With the hyperprior the noise also
  moves the predicted means, so the recovered latent is quantised around other offsets: close
  to, not exactly, the noiseless one.
* :class:`KeyedPermutation` permutes the spatial positions of every channel independently.
  The factorized prior codes each element with its channel's density wherever it sits, so the
  estimated rate is unchanged by construction (the coded bytes differ by the rANS coder's
  rounding only); with the hyperprior it would change the hyper-latent, so it is refused there.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from entroguard.models.split import EncodedBatch, SplitClassifier
from entroguard.packet import NONCE_BYTES, TAG_BYTES, Packet, PacketError


@dataclass(frozen=True)
class SplitKey:
    """A deployment's shared secret (at least 16 bytes)."""

    secret: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) < 16:
            raise ValueError("a split key needs at least 16 secret bytes (e.g. os.urandom(32))")

    def tag(self, nonce: bytes) -> bytes:
        """The 4-byte tag a packet with ``nonce`` carries under this key."""
        return hmac.new(self.secret, nonce, hashlib.sha256).digest()[:TAG_BYTES]

    def stream(self, nonce: bytes, n_bytes: int, purpose: bytes) -> bytes:
        """``n_bytes`` pseudo-random bytes for (key, nonce, purpose): SHA-256 in counter mode."""
        seed = hmac.new(self.secret, purpose + nonce, hashlib.sha256).digest()
        blocks = (n_bytes + 31) // 32
        out = b"".join(hashlib.sha256(seed + i.to_bytes(8, "big")).digest() for i in range(blocks))
        return out[:n_bytes]


def new_nonces(n: int, random_bytes=os.urandom) -> list[bytes]:
    """``n`` fresh 8-byte nonces (tests pass a seeded source)."""
    return [random_bytes(NONCE_BYTES) for _ in range(n)]


class KeyedProtection(ABC):
    """A keyed, invertible transform of one image's latent (C, h, w)."""

    name: str
    priors: tuple[str, ...] = ("fp", "mshp")

    @abstractmethod
    def protect(self, y: Tensor, key: SplitKey, nonce: bytes) -> Tensor:
        """The head's side: the latent to code, from the latent ``y`` (C, h, w)."""

    @abstractmethod
    def recover(self, y_hat: Tensor, key: SplitKey, nonce: bytes) -> Tensor:
        """The tail's side: the decoded latent (C, h, w) with the protection undone."""


@dataclass(frozen=True)
class KeyedNoise(KeyedProtection):
    """Integer noise uniform in [-spread, spread], added before quantisation."""

    spread: int = 4
    name = "keyed_noise"

    def noise(self, shape: Sequence[int], key: SplitKey, nonce: bytes) -> Tensor:
        n = int(torch.Size(shape).numel())
        raw = np.frombuffer(key.stream(nonce, 2 * n, b"noise"), dtype="<u2")  # little-endian
        values = torch.from_numpy(raw.astype(np.int64) % (2 * self.spread + 1)) - self.spread
        return values.reshape(tuple(shape)).to(torch.float32)

    def protect(self, y: Tensor, key: SplitKey, nonce: bytes) -> Tensor:
        return y + self.noise(y.shape, key, nonce).to(y)

    def recover(self, y_hat: Tensor, key: SplitKey, nonce: bytes) -> Tensor:
        return y_hat - self.noise(y_hat.shape, key, nonce).to(y_hat)


@dataclass(frozen=True)
class KeyedPermutation(KeyedProtection):
    """An independent keyed permutation of the spatial positions of every channel."""

    name = "keyed_permutation"
    priors = ("fp",)

    @staticmethod
    def order(channels: int, positions: int, key: SplitKey, nonce: bytes) -> Tensor:
        """(C, h*w) indexes: row c is channel c's permutation (Fisher-Yates on key bytes)."""
        draws = key.stream(nonce, 4 * channels * positions, b"permutation")
        steps = positions - 1  # channel c draws words c * steps .. (c + 1) * steps - 1
        words = np.frombuffer(draws, dtype=">u4")[: channels * steps].astype(np.int64)
        words = words.reshape(channels, steps)
        perm = np.tile(np.arange(positions, dtype=np.int64), (channels, 1))
        rows = np.arange(channels)
        for step, i in enumerate(range(positions - 1, 0, -1)):  # every channel's swap at once
            j = words[:, step] % (i + 1)
            held = perm[rows, i].copy()
            perm[rows, i] = perm[rows, j]
            perm[rows, j] = held
        return torch.from_numpy(perm)

    def protect(self, y: Tensor, key: SplitKey, nonce: bytes) -> Tensor:
        c, h, w = y.shape
        index = self.order(c, h * w, key, nonce).to(y.device)
        return y.reshape(c, -1).gather(1, index).reshape(c, h, w)

    def recover(self, y_hat: Tensor, key: SplitKey, nonce: bytes) -> Tensor:
        c, h, w = y_hat.shape
        index = self.order(c, h * w, key, nonce).to(y_hat.device)
        out = torch.empty_like(y_hat.reshape(c, -1))
        out.scatter_(1, index, y_hat.reshape(c, -1))
        return out.reshape(c, h, w)


KEYED_PROTECTIONS = {"keyed_noise": KeyedNoise, "keyed_permutation": KeyedPermutation}


def check_protection(model: SplitClassifier, protection: KeyedProtection) -> None:
    """``ValueError`` unless ``protection`` works with ``model``'s prior."""
    if model.spec.prior not in protection.priors or model.slimmable:
        raise ValueError(
            f"{protection.name} protects {'/'.join(protection.priors)} models (not slimmable), "
            f"not a {'slimmable ' if model.slimmable else ''}{model.spec.prior} model"
        )


@torch.no_grad()
def protected_packets(
    model: SplitClassifier,
    images: Tensor,
    protection: KeyedProtection,
    key: SplitKey,
    nonces: Sequence[bytes] | None = None,
) -> list[bytes]:
    """The head: images (B, 3, H, W) in [0, 1] -> format-4 packets under ``key``.

    A head with a byte cap is refused: a keyed packet has no field for the cap's reset share
    (packet formats 4 and 5 do not combine), and coding past the cap would silently break it.
    """
    check_protection(model, protection)
    if model.byte_cap is not None:
        raise ValueError(
            "keyed packets cannot be byte-capped (packet formats 4 and 5 do not combine): "
            "remove the head's cap with model.set_byte_cap(None), or send unprotected packets"
        )
    nonces = list(nonces) if nonces is not None else new_nonces(len(images))
    y = model.analyze(images)
    y = torch.stack([protection.protect(y[i], key, n) for i, n in enumerate(nonces)])
    strings = model.codec.compress(y)
    fp, hw = model.fingerprint_bytes, tuple(y.shape[-2:])
    return [Packet(model.spec.prior, fp, hw, tuple(s), keyed=(n, key.tag(n))).to_bytes()
            for s, n in zip(strings, nonces, strict=True)]  # fmt: skip


def verify_tags(encoded: EncodedBatch, key: SplitKey) -> list[bytes]:
    """Each packet's nonce; ``PacketError("bad_key")`` for a tag that is not ``key``'s."""
    if encoded.keyed is None:
        raise PacketError("bad_key", "the packets carry no nonce: they are not key-protected")
    nonces = []
    for i, (nonce, tag) in enumerate(encoded.keyed):
        if not hmac.compare_digest(tag, key.tag(nonce)):
            raise PacketError("bad_key", f"packet {i} was protected with another key: the head "
                              "and the tail must share the deployment's key")  # fmt: skip
        nonces.append(nonce)
    return nonces


def recover_batch(
    y_hat: Tensor, nonces: Sequence[bytes], protection: KeyedProtection, key: SplitKey
) -> Tensor:
    """Undo ``protection`` on a decoded latent batch (B, C, h, w), image by image."""
    return torch.stack([protection.recover(y_hat[i], key, n) for i, n in enumerate(nonces)])


@torch.no_grad()
def protected_latent(
    model: SplitClassifier, packets: Sequence[bytes], protection: KeyedProtection, key: SplitKey
) -> Tensor:
    """The tail up to ``g_s``: format-4 packets -> the recovered latent (B, C, h, w).

    Raises ``PacketError("bad_key")`` for a packet whose tag is not this key's (or that carries
    no nonce), besides the usual packet and model checks.
    """
    check_protection(model, protection)
    encoded = model.packets_to_batch(packets, keyed=True)
    nonces = verify_tags(encoded, key)
    return recover_batch(model.decompress(encoded), nonces, protection, key)


@torch.no_grad()
def eavesdropped_latent(model: SplitClassifier, packets: Sequence[bytes]) -> Tensor:
    """What an eavesdropper decodes from format-4 packets with the public model: the
    protected latent (B, C, h, w)."""
    return model.decompress(model.packets_to_batch(packets, keyed=True))
