"""``SplitClassifier``: a classifier cut in two around an entropy-coded bottleneck.

Head (device): normalise -> encoder ``g_a`` -> codec.compress -> packet bytes.
Tail (server): packet bytes -> codec.decompress -> decoder ``g_s`` -> rest of the backbone.

All image inputs are float tensors in [0, 1] of shape (B, 3, H, W); normalisation happens
inside the model.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from entroguard.codec import CodecOutput, LatentCodec, Quantization
from entroguard.errors import InputError, ModelMismatchError
from entroguard.packet import VERSION, Packet, PacketError, parse_packet

if TYPE_CHECKING:
    from entroguard.codec.byte_cap import ByteCap


_RANGE_KEPT: contextvars.ContextVar[bool] = contextvars.ContextVar("range_kept", default=False)


@contextlib.contextmanager
def range_kept() -> Iterator[None]:
    """Inside the block the caller vouches that every image it passes stays in [0, 1] (an
    attack checks its images once and projects every step onto [0, 1]), so
    :func:`check_unit_float` checks only the dtype: the value check reads the tensor's minimum
    and maximum, which on a GPU waits for the device at every step."""
    token = _RANGE_KEPT.set(True)
    try:
        yield
    finally:
        _RANGE_KEPT.reset(token)


def check_unit_float(images: Tensor) -> None:
    """Raise ``InputError`` unless ``images`` is a float tensor with values in [0, 1].

    Only the dtype is checked inside :func:`range_kept` and inside a function being compiled by
    ``torch.compile`` (where the value check would split the graph)."""
    if not images.is_floating_point():
        raise InputError(f"images must be float in [0, 1], got {images.dtype}: divide by 255")
    if torch.compiler.is_compiling() or _RANGE_KEPT.get():  # no context read while tracing
        return
    if images.numel() and (images.min() < -1e-6 or images.max() > 1 + 1e-6):
        raise InputError(
            f"images must be in [0, 1], got values in [{images.min():.3g}, {images.max():.3g}]; "
            "do not normalise them, the model does"
        )


CODER_TABLE_SUFFIXES = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


@dataclass(frozen=True)
class SplitSpec:
    """What a split model is, independent of its weights (saved with every checkpoint).

    Attributes:
        arch: architecture name in the model registry, e.g. ``"resnet_s"``.
        prior: ``"fp"`` (factorized prior), ``"mshp"`` (mean-scale hyperprior) or ``"q8"``
            (fixed-rate 8-bit quantiser, BottleFit's).
        num_classes: number of output classes.
        input_size: (H, W) of the images the model takes, in pixels.
        mean, std: per-channel normalisation applied inside the head.
        options: builder keyword arguments (channel counts ...), JSON-serialisable.
    """

    arch: str
    prior: str
    num_classes: int
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SplitSpec:
        return cls(
            arch=d["arch"],
            prior=d["prior"],
            num_classes=int(d["num_classes"]),
            input_size=tuple(d["input_size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            options=dict(d.get("options", {})),
        )


@dataclass
class SplitOutput:
    """Differentiable forward result.

    Attributes:
        logits: (B, K).
        y: the latent before quantisation, (B, C, h, w).
        codec: quantised latent and likelihoods.
        features: ``g_s`` output, the tail's features at the split point.
    """

    logits: Tensor
    y: Tensor
    codec: CodecOutput
    features: Tensor

    def bits(self) -> Tensor:
        """Estimated bits per image, shape (B,)."""
        return self.codec.bits()


@dataclass
class EncodedBatch:
    """Real coder output for a batch: per-image byte strings and the latent size (h, w).

    ``settings`` holds each image's slimmable-head setting ``(members, rate)`` when the
    packets carried one, ``keyed`` each image's keyed-protection ``(nonce, tag)`` (None
    otherwise), ``capped`` each image's byte-cap reset share in 255ths (0: not capped; None
    when no cap was involved).
    """

    strings: list[list[bytes]]
    latent_hw: tuple[int, int]
    settings: list[tuple[int, int]] | None = None
    keyed: list[tuple[bytes, bytes]] | None = None
    capped: list[int] | None = None

    def payload_bytes(self) -> list[int]:
        """Bytes of coder output per image (no header)."""
        return [sum(len(s) for s in image) for image in self.strings]

    def take(self, start: int, stop: int) -> EncodedBatch:
        """The images ``start:stop`` of this batch."""
        cut = slice(start, stop)
        return EncodedBatch(self.strings[cut], self.latent_hw,
                            None if self.settings is None else self.settings[cut],
                            None if self.keyed is None else self.keyed[cut],
                            None if self.capped is None else self.capped[cut])  # fmt: skip


class SplitClassifier(nn.Module):
    """A split classifier with a real entropy-coded bottleneck.

    ``slimmable`` is False here: the head has one setting and its packets carry none
    (:class:`~entroguard.models.slimmable.SlimmableSplitClassifier` has several).

    Args:
        spec: the architecture description (saved with checkpoints).
        encoder: ``g_a`` (plus any backbone layers before it), image -> latent (B, C, h, w).
        codec: the entropy model of the latent.
        decoder: ``g_s``, latent -> features for ``backbone_tail``.
        backbone_tail: the rest of the backbone, features -> logits (B, num_classes).
    """

    slimmable: bool = False

    def __init__(
        self,
        spec: SplitSpec,
        encoder: nn.Module,
        codec: LatentCodec,
        decoder: nn.Module,
        backbone_tail: nn.Module,
    ) -> None:
        super().__init__()
        if codec.prior != spec.prior:
            raise ValueError(f"codec prior {codec.prior!r} does not match spec {spec.prior!r}")
        self.spec = spec
        self.encoder = encoder
        self.codec = codec
        self.decoder = decoder
        self.backbone_tail = backbone_tail
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self._fingerprint: str | None = None
        self._latent_hw: tuple[int, int] | None = None
        self.byte_cap: ByteCap | None = None  # set_byte_cap: a hard bound on every payload

    # ------------------------------------------------------------------ checks
    def check_images(self, x: Tensor) -> None:
        """Raise ``InputError`` unless ``x`` is a float (B, 3, H, W) batch in [0, 1]."""
        h, w = self.spec.input_size
        if not isinstance(x, Tensor):
            raise InputError(f"images must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 3:
            raise InputError(
                f"images must be a batch (B, 3, {h}, {w}); got {tuple(x.shape)}: "
                "add a batch dimension with x.unsqueeze(0)"
            )
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (h, w):
            hint = ""
            if x.dim() == 4 and x.shape[1] == 1:
                hint = "; grayscale images: repeat the channel with x.expand(-1, 3, -1, -1)"
            raise InputError(
                f"{self.spec.arch} expects images of shape (B, 3, {h}, {w}), got "
                f"{tuple(x.shape)}{hint}; resize or pad them (entroguard.data does this)"
            )
        check_unit_float(x)

    # ------------------------------------------------------------- the head
    def analyze(self, x: Tensor) -> Tensor:
        """Normalise and run ``g_a``: images (B, 3, H, W) in [0, 1] -> latent (B, C, h, w), on
        the model's device (images elsewhere are moved there)."""
        self.check_images(x)
        x = x.to(self.mean.device)
        return self.encoder((x - self.mean) / self.std)

    def compress(self, x: Tensor) -> EncodedBatch:
        """Entropy-code a batch of images into per-image byte strings."""
        with torch.no_grad():
            return self.encode(self.analyze(x))

    @torch.no_grad()
    def encode(self, y: Tensor) -> EncodedBatch:
        """Entropy-code latents (B, C, h, w): under the head's byte cap when it has one
        (:meth:`set_byte_cap`), every payload within its budget."""
        hw = tuple(y.shape[-2:])
        if self.byte_cap is None:
            return EncodedBatch(self.codec.compress(y), hw)
        capped = self.byte_cap.compress(self.codec, y)
        return EncodedBatch(capped.strings, hw, capped=capped.reset_share)

    def set_byte_cap(self, budget_bytes: int | None) -> None:
        """Cap every payload this head codes at ``budget_bytes`` (None: no cap); see
        :mod:`entroguard.codec.byte_cap`. Raises ``InputError`` for a budget below the
        smallest payload the model can code, or a model that cannot be capped."""
        from entroguard.codec.byte_cap import ByteCap

        if budget_bytes is None:
            self.byte_cap = None
            return
        cap = ByteCap(budget_bytes)
        cap.check(self.codec, self.latent_hw)
        self.byte_cap = cap

    def to_packets(self, x: Tensor) -> list[bytes]:
        """Images -> one wire packet per image (header + strings)."""
        return self.packets(self.compress(x))

    def packets(self, encoded: EncodedBatch) -> list[bytes]:
        """Wrap coder output into one wire packet per image (header + strings)."""
        fp = self.fingerprint_bytes
        capped = encoded.capped or [0] * len(encoded.strings)
        return [
            Packet(self.spec.prior, fp, encoded.latent_hw, tuple(strings),
                   capped=share or None).to_bytes()
            for strings, share in zip(encoded.strings, capped, strict=True)
        ]  # fmt: skip

    # ------------------------------------------------------------- the tail
    def decompress(self, encoded: EncodedBatch) -> Tensor:
        """Decode per-image strings into the quantised latent (B, C, h, w)."""
        return self.codec.decompress(encoded.strings, encoded.latent_hw)

    def classify(self, y_hat: Tensor) -> Tensor:
        """``g_s`` and the rest of the backbone: latent (B, C, h, w) -> logits (B, K)."""
        return self.backbone_tail(self.decoder(y_hat))

    def packets_to_batch(
        self, packets: Sequence[bytes], *, keyed: bool = False, max_bytes: int | None = None
    ) -> EncodedBatch:
        """Parse untrusted packets and check they were coded by this model.

        Raises ``PacketError`` for malformed bytes (or a packet over ``max_bytes``) and
        ``ModelMismatchError`` for packets of another model or latent size; every message
        names the packet's index in ``packets``. Keyed-protection packets (format 4) are
        refused with reason ``bad_key`` unless ``keyed`` (:mod:`entroguard.privacy.keyed`
        undoes them), and then every packet must be one.
        """
        if not packets:
            raise InputError("no packets given")
        parsed = [_parse_nth(data, i, max_bytes) for i, data in enumerate(packets)]
        for i, packet in enumerate(parsed):
            self._check_packet(packet, i)
            if (packet.keyed is not None) != keyed:
                raise PacketError("bad_key", f"packet {i} is {'' if keyed else 'key-'}protected"
                                  f"{' by no key' if keyed else ''}: this tail "
                                  f"{'expects keyed packets' if keyed else 'has no key'}; send "
                                  "it to the tail deployed with the head's key")  # fmt: skip
        strings = [list(packet.strings) for packet in parsed]
        settings = [packet.setting for packet in parsed]
        batch = EncodedBatch(strings, self.latent_hw)
        if not any(s is None for s in settings):
            batch.settings = [(m + 1, r) for m, r in settings]
        if keyed:
            batch.keyed = [packet.keyed for packet in parsed]
        if any(packet.capped for packet in parsed):
            batch.capped = [packet.capped or 0 for packet in parsed]
        return batch

    def _check_packet(self, packet: Packet, index: int) -> None:
        """Raise ``PacketError``/``ModelMismatchError`` unless this model coded ``packet``."""
        _check_arithmetic(packet, index)
        if packet.prior != self.spec.prior:
            raise ModelMismatchError(
                f"packet {index} was coded with prior {packet.prior!r}, this model uses "
                f"{self.spec.prior!r}: send it to a {packet.prior} model"
            )
        if packet.setting is not None and not self.slimmable:
            raise ModelMismatchError(
                f"packet {index} carries a slimmable head's setting, this model is not "
                "slimmable: send it to the model that coded it"
            )
        if packet.fingerprint != self.fingerprint_bytes:
            raise ModelMismatchError(
                f"packet {index} has model fingerprint {packet.fingerprint.hex()}, this model is "
                f"{self.fingerprint_bytes.hex()}: the head and the tail must come from the "
                "same checkpoint"
            )
        if tuple(packet.latent_hw) != self.latent_hw:
            raise ModelMismatchError(
                f"packet {index} carries a {packet.latent_hw} latent, this model expects "
                f"{self.latent_hw}"
            )

    def from_packets(self, packets: Sequence[bytes]) -> Tensor:
        """Wire packets -> logits (B, K), exactly what a server computes.

        Safe on untrusted bytes: raises ``PacketError`` (malformed packet),
        ``ModelMismatchError`` (another model's packet) or ``BitstreamError`` (a checksum-valid
        packet whose coder string cannot be decoded exactly), never crashes the decoder.
        """
        with torch.no_grad():
            return self.classify(self.decompress(self.packets_to_batch(packets)))

    # ---------------------------------------------- differentiable paths
    def forward_train(
        self,
        x: Tensor,
        quantization: Quantization = "noise",
        generator: torch.Generator | None = None,
    ) -> SplitOutput:
        """Differentiable end to end: logits, latent and likelihoods (training and attacks)."""
        y = self.analyze(x)
        codec_out = self.codec.likelihoods(y, quantization, generator)
        features = self.decoder(codec_out.y_hat)
        return SplitOutput(self.backbone_tail(features), y, codec_out, features)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, K) through the quantised latent (hard rounding; no bytes produced)."""
        return self.forward_train(x, quantization="round").logits

    def estimate(self, x: Tensor) -> CodecOutput:
        """Likelihoods of exactly the symbols the coder would send (hard rounding)."""
        return self.codec.likelihoods(self.analyze(x), "round")

    # ---------------------------------------------------------- identity
    @property
    def latent_hw(self) -> tuple[int, int]:
        """Latent spatial size (h, w) for this model's input size."""
        if self._latent_hw is None:
            probe = torch.zeros(1, 3, *self.spec.input_size, device=self.mean.device)
            with torch.no_grad():
                self._latent_hw = tuple(self.encoder(probe).shape[-2:])
        return self._latent_hw

    def prepare_coding(self, tables: dict[str, Tensor] | None = None) -> None:
        """Make the model ready to code: coder tables, integer ``h_s``, fingerprint.

        Without ``tables`` the coder's CDF tables are rebuilt from the learned densities (call
        it so after training). With ``tables`` (a saved model's :meth:`coder_tables`, as
        checkpoints store them) they are used as they are: building tables from floating-point
        densities can differ in the last bits from machine to machine, stored integer tables
        cannot, so every machine that loads the checkpoint codes with the same tables.
        """
        if tables is None:
            self.codec.update_tables()
        else:
            self._set_coder_tables(tables)
            self.codec.tables_changed()
        self._fingerprint = compute_fingerprint(self)

    def _set_coder_tables(self, tables: dict[str, Tensor]) -> None:
        expected = set(self.coder_tables())
        if set(tables) != expected:
            missing, extra = sorted(expected - set(tables)), sorted(set(tables) - expected)
            raise ValueError(
                f"coder tables do not fit this {self.spec.arch}/{self.spec.prior} model "
                f"(missing {missing[:2]}, unexpected {extra[:2]}): they belong to another model"
            )
        for key, value in tables.items():
            owner, _, name = key.rpartition(".")
            setattr(self.get_submodule(owner), name, value.to(self.mean.device).clone())

    @property
    def fingerprint(self) -> str:
        """SHA-256 hex digest of the spec and every learned tensor."""
        if self._fingerprint is None:
            raise RuntimeError("call prepare_coding() before coding (loaders do it for you)")
        return self._fingerprint

    @property
    def fingerprint_bytes(self) -> bytes:
        """The first 4 bytes of the fingerprint, carried by every packet."""
        return bytes.fromhex(self.fingerprint[:8])

    def learned_state(self) -> dict[str, Tensor]:
        """The state dict without the coder tables (what training learns)."""
        return {k: v for k, v in self.state_dict().items() if not k.endswith(CODER_TABLE_SUFFIXES)}

    def coder_tables(self) -> dict[str, Tensor]:
        """The coder's integer CDF tables, offsets, lengths and scale tables (by state key)."""
        return {k: v for k, v in self.state_dict().items() if k.endswith(CODER_TABLE_SUFFIXES)}


def _parse_nth(data: bytes, index: int, max_bytes: int | None) -> Packet:
    """:func:`parse_packet` of the ``index``-th packet; its errors name the index."""
    try:
        if max_bytes is None:
            return parse_packet(data)
        return parse_packet(data, max_bytes=max_bytes)
    except PacketError as exc:
        raise PacketError(exc.reason, f"packet {index}: {exc}") from None


def _check_arithmetic(packet: Packet, index: int) -> None:
    """Refuse a format-1 "mshp" packet: its scale indexes came from the float ``h_s``."""
    if packet.version < VERSION and packet.prior == "mshp":
        raise PacketError(
            "bad_version",
            f"packet {index} is format {packet.version}: its hyperprior scales were computed in "
            "floating point, which does not decode reliably on another machine; re-encode the "
            f"image with a current head (format {VERSION}, integer h_s)",
        )


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over named tensors' names, dtypes, shapes and bytes (coder tables, teachers)."""
    h = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def compute_fingerprint(model: SplitClassifier) -> str:
    """SHA-256 over the spec (JSON) and every learned tensor's name, dtype, shape and bytes."""
    import json

    h = hashlib.sha256(json.dumps(model.spec.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.learned_state().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()
