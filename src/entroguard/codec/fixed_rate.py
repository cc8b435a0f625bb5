"""Fixed-rate 8-bit bottleneck (``q8``): BottleFit's quantiser, one byte per latent element.

BottleFit (Matsubara et al., 2022) sends its bottleneck tensor quantised to 8 bits with one
affine (min / max) scale per tensor. Here the tensor is one image's latent: each image's
string is ``scale`` and ``offset`` (two big-endian float32, 8 bytes), then one uint8 per latent
element in (C, H, W) order. The payload is ``8 + C*H*W`` bytes whatever the image: an attack
cannot inflate it, only change what it carries.

Quantisation: ``offset = min(y)``, ``scale = (max(y) - min(y)) / 255`` (1 where the latent is
constant), ``q = clamp(round((y - offset) / scale), 0, 255)``; the tail sees
``q * scale + offset``, computed with the very float32 ``scale`` and ``offset`` the packet
carries, so head and tail hold the same tensor bit for bit.
"""

from __future__ import annotations

import struct

import numpy as np
import torch
from torch import Tensor, nn

from entroguard.codec.base import CodecOutput, LatentCodec, Quantization, check_latent
from entroguard.codec.rans import BitstreamError

LEVELS = 255
"""Largest quantised value (8 bits)."""
SIDE_BYTES = 8
"""Bytes of side information per image: scale and offset as float32."""
_SIDE = struct.Struct(">ff")


class AffineUint8(LatentCodec):
    """Per-image min/max affine quantisation of the latent to uint8 (BottleFit's ``q8``).

    ``likelihoods`` reports the fixed rate as likelihoods (``2**-8`` per element and
    ``2**-64`` for the side information), so estimated bytes equal payload bytes and carry no
    gradient: the rate of a fixed-rate bottleneck does not depend on the input.
    """

    prior = "q8"
    string_names = ("y",)

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)

    def entropy_models(self) -> list[nn.Module]:
        return []

    @staticmethod
    def affine(y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-image ``scale`` and ``offset``, each (B, 1, 1, 1) float32."""
        flat = y.detach().float().flatten(1)
        low, high = flat.amin(dim=1), flat.amax(dim=1)
        scale = (high - low) / LEVELS
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return scale.reshape(-1, 1, 1, 1), low.reshape(-1, 1, 1, 1)

    @staticmethod
    def _levels(y: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
        return torch.round((y.float() - offset) / scale).clamp_(0, LEVELS)

    def likelihoods(
        self,
        y: Tensor,
        quantization: Quantization = "noise",
        generator: torch.Generator | None = None,
    ) -> CodecOutput:
        """Straight-through 8-bit quantisation (every ``quantization`` mode codes the same)."""
        check_latent(y, self.channels)
        scale, offset = self.affine(y)
        y_hat = (self._levels(y, scale, offset) * scale + offset).to(y.dtype)
        if quantization != "round":
            y_hat = y + (y_hat - y).detach()
        else:
            y_hat = y_hat.detach()
        b = y.shape[0]
        likelihoods = {  # constants tied to y with a zero gradient: attacks see a flat rate
            "y": torch.full_like(y, 2.0**-8) + 0.0 * y,
            "side": torch.full(
                (b, 1, 1, 1), 2.0 ** -(8 * SIDE_BYTES), dtype=y.dtype, device=y.device
            ),
        }
        return CodecOutput(y_hat=y_hat, likelihoods=likelihoods)

    def quantize(self, y: Tensor) -> Tensor:
        check_latent(y, self.channels)
        scale, offset = self.affine(y)
        return (self._levels(y, scale, offset) * scale + offset).to(y.dtype)

    @torch.no_grad()
    def compress(self, y: Tensor) -> list[list[bytes]]:
        """One string per image: scale, offset (float32), then C*H*W uint8 levels."""
        check_latent(y, self.channels)
        scale, offset = self.affine(y)
        levels = self._levels(y, scale, offset).to(torch.uint8).cpu().numpy()
        return [
            [_SIDE.pack(float(s), float(o)) + q.tobytes()]
            for s, o, q in zip(
                scale.flatten().tolist(), offset.flatten().tolist(), levels, strict=True
            )
        ]

    @torch.no_grad()
    def decompress(self, strings: list[list[bytes]], latent_hw: tuple[int, int]) -> Tensor:
        expected = SIDE_BYTES + self.channels * latent_hw[0] * latent_hw[1]
        out = []
        for image_strings in strings:
            data = image_strings[0]
            if len(data) != expected:
                raise BitstreamError(
                    f"a q8 string of {len(data)} bytes for a {self.channels}x{latent_hw[0]}x"
                    f"{latent_hw[1]} latent, expected {expected}: the packet is corrupt or from "
                    "another model: resend it"
                )
            scale, offset = _SIDE.unpack_from(data)
            if not (np.isfinite(scale) and np.isfinite(offset) and scale > 0):
                raise BitstreamError(
                    f"q8 side information scale={scale}, offset={offset} is not a finite "
                    "positive scale and a finite offset: the packet is corrupt or crafted"
                )
            levels = np.frombuffer(data, dtype=np.uint8, offset=SIDE_BYTES)
            q = torch.from_numpy(levels.astype(np.float32)).reshape(1, self.channels, *latent_hw)
            out.append(q * torch.tensor(scale) + torch.tensor(offset))
        return torch.cat(out).to(self._device_anchor.device)

    def update_tables(self) -> None:
        """Nothing to build: a fixed-rate quantiser has no coder tables."""
