"""What the leak measurements of one model under several protections share.

The head's latents and the unprotected features of the shadow and victim images are computed
once; each protection derives what its observers see from them. Probe results are memoised on
their exact inputs: a seeded probe trained on bit-identical features, labels and settings is
the same probe, so a point a protection leaves untouched (the tail's features under a keyed
protection, the latent under CapRecover's noise) is not trained twice. Nothing is reused
across different inputs: an adaptive attacker is always trained on what it sees.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future
from functools import cached_property

import torch
from torch import Tensor

from entroguard.data.imageset import ImageSet
from entroguard.device import module_device
from entroguard.models.split import EncodedBatch, SplitClassifier
from entroguard.packet import NONCE_BYTES, TAG_BYTES
from entroguard.privacy.points import head_latents, tail_features, view_features
from entroguard.privacy.probe_pool import ProbePool
from entroguard.privacy.protection_view import ProtectionView
from entroguard.privacy.side_channel import channel_bits, encode_all, packet_lengths

PARTIES = ("shadow", "victim")
VAL_FRACTION = 0.1
"""Share of the shadow set held out for the probes' early stopping."""


def split_shadow(features: Tensor, labels: Tensor) -> tuple[tuple[Tensor, Tensor], ...]:
    """(train, held-out) pairs of (features, labels): the last ``VAL_FRACTION`` is held out."""
    cut = len(labels) - max(1, int(len(labels) * VAL_FRACTION))
    return (features[:cut], labels[:cut]), (features[cut:], labels[cut:])


def digest(*tensors: Tensor) -> str:
    """BLAKE2b of the tensors' dtypes, shapes and bytes: equal digests, equal inputs."""
    h = hashlib.blake2b(digest_size=20)
    for t in tensors:
        t = t.contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().reshape(-1).view("uint8"))
    return h.hexdigest()


class LeakContext:
    """Latents, unprotected features and memoised probes of ``model`` on ``shadow`` (the
    attacker's images) and ``victim`` (the scored test images), at ``points``; probes train
    in ``workers`` processes (:class:`ProbePool`; default one per core). Use it in a ``with``
    block, or call :meth:`close`, to stop the workers."""

    def __init__(self, model: SplitClassifier, shadow: ImageSet, victim: ImageSet,
                 points: tuple[str, ...], workers: int | None = None) -> None:  # fmt: skip
        self.model, self.points = model, points
        self.pool = ProbePool(workers)
        self.sets = {"shadow": shadow, "victim": victim}
        images = {k: s.to_float(slice(0, len(s))) for k, s in self.sets.items()}
        self.latents = {k: head_latents(model, x) for k, x in images.items()}
        self.plain = {k: tail_features(model, y, points) for k, y in self.latents.items()}
        self._coded: dict[tuple, Tensor] = {}
        self._encoded: dict[tuple, list[EncodedBatch]] = {}
        self._lengths: dict[tuple, Tensor] = {}
        self._bits: dict[tuple, Tensor] = {}
        self._probes: dict[tuple, Future] = {}
        self._digests: dict[int, tuple[Tensor, str]] = {}  # id -> (the tensor, kept alive; digest)

    @cached_property
    @torch.no_grad()
    def plain_predictions(self) -> Tensor:
        """The unprotected model's predicted classes (N,) on the victim's images."""
        codec, y, device = self.model.codec, self.latents["victim"], module_device(self.model)
        return torch.cat([self.model.classify(codec.quantize(b.to(device))).argmax(1).cpu()
                          for b in y.split(500)])  # fmt: skip

    @cached_property
    def model_top1(self) -> float:
        """The unprotected model's top-1 on the victim's images (0-1)."""
        return float((self.plain_predictions == self.sets["victim"].labels).float().mean())

    def coded(self, party: str, view: ProtectionView) -> Tensor:
        """The latents (N, C, h, w) the head codes for ``party``'s images under ``view``."""
        key = self._latent_key(party, view)
        if key not in self._coded:
            self._coded[key] = view.protect_all(self.latents[party])
        return self._coded[key]

    def features(self, party: str, view: ProtectionView) -> dict[str, Tensor]:
        """``{point: (N, ...)}`` as ``party``'s images look under ``view``."""
        return view_features(self.model, self.coded(party, view), self.plain[party], view)

    def _latent_key(self, party: str, view: ProtectionView) -> tuple:
        """Views that code the same latent: every unkeyed view codes the plain one."""
        return (party,) if view.keyed is None else (party, view.protection, view.seed)

    def encoded(self, party: str, view: ProtectionView) -> list[EncodedBatch]:
        """The real coder output of :meth:`coded`, in batches of 500 images (coded once per
        distinct latent)."""
        key = self._latent_key(party, view)
        if key not in self._encoded:
            self._encoded[key] = encode_all(self.model, self.coded(party, view))
        return self._encoded[key]

    def lengths(self, party: str, view: ProtectionView) -> Tensor:
        """Packet bytes (N,) of ``party``'s images under ``view`` (real coding)."""
        key = self._latent_key(party, view)
        if key not in self._lengths:
            extra = NONCE_BYTES + TAG_BYTES if view.keyed is not None else 0
            self._lengths[key] = packet_lengths(self.model, self.encoded(party, view), extra)
        return self._lengths[key]

    def bits(self, party: str, view: ProtectionView) -> Tensor:
        """Estimated bits per channel (N, C [+ Cz]) of ``party``'s images under ``view``."""
        key = self._latent_key(party, view)
        if key not in self._bits:
            self._bits[key] = channel_bits(self.model, self.coded(party, view))
        return self._bits[key]

    def _digest(self, t: Tensor) -> str:
        """:func:`digest` of ``t``, computed once per tensor object (a point a protection
        leaves alone is the same object under every protection)."""
        if id(t) not in self._digests:
            self._digests[id(t)] = (t, digest(t))
        return self._digests[id(t)][1]

    def probe(self, kind: str, shadow_x: Tensor, victim_x: Tensor, seed: int) -> Future:
        """A future of :func:`~entroguard.privacy.probes.train_probe`'s result for a ``kind``
        probe trained on the shadow features ``shadow_x`` (N, ...) (the last
        :data:`VAL_FRACTION` held out for early stopping) and scored on the victim's
        ``victim_x``; trained once per distinct (kind, seed, features)."""
        key = (kind, seed, self._digest(shadow_x), self._digest(victim_x))
        if key not in self._probes:
            train, val = split_shadow(shadow_x, self.sets["shadow"].labels)
            test = (victim_x, self.sets["victim"].labels)
            self._probes[key] = self.pool.submit(kind, train, val, test, seed)
        return self._probes[key]

    def close(self) -> None:
        """Stop the probe workers."""
        self.pool.close()

    def __enter__(self) -> LeakContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
