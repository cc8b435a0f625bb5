"""A codec with several rate settings in one model: learned gains and one entropy model each.

Rate setting ``r`` scales the latent by a learned per-channel gain before quantisation (a
larger gain keeps more precision, so more bytes), codes it with its own entropy model, and
multiplies the decoded symbols by a learned per-channel inverse gain before the synthesis
transform (gain units, Cui et al. 2021). Every setting is resident; :attr:`rate` picks the one
the head codes with, and the tail decodes any setting with :meth:`decompress_at` without
changing it. The inverse gain is one float multiplication per element, so a decoded latent is
bit-identical on every machine like the inner codec's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from entroguard.codec.base import CodecOutput, LatentCodec, Quantization


def default_gains(settings: int) -> list[float]:
    """Initial gains, log-spaced from 1/8 (setting 0, fewest bytes) to 1 (the last)."""
    if settings == 1:
        return [1.0]
    return [2.0 ** (-3 * (settings - 1 - r) / (settings - 1)) for r in range(settings)]


class RateSwitchedCodec(LatentCodec):
    """``settings`` rate settings over a ``channels``-channel latent.

    Args:
        channels: latent channels C.
        settings: number of rate settings R (at most 16: the packet's rate nibble).
        build_inner: ``build_inner() -> LatentCodec``, one fresh entropy model per setting.
    """

    def __init__(self, channels: int, settings: int, build_inner: Callable[[], LatentCodec]):
        super().__init__(channels)
        if not 1 <= settings <= 16:
            raise ValueError(f"settings must be in 1..16, got {settings}")
        self.inner = nn.ModuleList(build_inner() for _ in range(settings))
        self.prior = self.inner[0].prior
        self.string_names = self.inner[0].string_names
        log_gains = torch.tensor([math.log(g) for g in default_gains(settings)])
        self.log_gain = nn.Parameter(log_gains[:, None].repeat(1, channels))
        self.log_inverse_gain = nn.Parameter(-log_gains[:, None].repeat(1, channels))
        self.rate = settings - 1

    @property
    def settings(self) -> int:
        """Number of rate settings R."""
        return len(self.inner)

    def check_rate(self, rate: int) -> int:
        """``rate`` if it is a trained setting, else ``ValueError`` naming the valid ones."""
        if not isinstance(rate, int) or isinstance(rate, bool) or not 0 <= rate < self.settings:
            raise ValueError(f"rate setting {rate!r} is not trained: use 0..{self.settings - 1}")
        return rate

    def gains(self, rate: int) -> tuple[Tensor, Tensor]:
        """Setting ``rate``'s per-channel gain and inverse gain, each (C,)."""
        rate = self.check_rate(rate)
        return self._gain(rate).flatten().detach(), self._inverse_gain(rate).flatten().detach()

    def _gain(self, rate: int) -> Tensor:
        return self.log_gain[rate].exp().view(1, -1, 1, 1)

    def _inverse_gain(self, rate: int) -> Tensor:
        return self.log_inverse_gain[rate].exp().view(1, -1, 1, 1)

    def likelihoods(
        self,
        y: Tensor,
        quantization: Quantization = "noise",
        generator: torch.Generator | None = None,
    ) -> CodecOutput:
        out = self.inner[self.rate].likelihoods(y * self._gain(self.rate), quantization, generator)
        return CodecOutput(out.y_hat * self._inverse_gain(self.rate), out.likelihoods)

    def quantize(self, y: Tensor) -> Tensor:
        """The symbols the coder transmits at the current rate (gained latent, quantised)."""
        return self.inner[self.rate].quantize(y * self._gain(self.rate))

    def compress(self, y: Tensor) -> list[list[bytes]]:
        with torch.no_grad():
            return self.inner[self.rate].compress(y * self._gain(self.rate))

    def decompress(self, strings: list[list[bytes]], latent_hw: tuple[int, int]) -> Tensor:
        return self.decompress_at(strings, latent_hw, self.rate)

    def decompress_at(
        self, strings: list[list[bytes]], latent_hw: tuple[int, int], rate: int
    ) -> Tensor:
        """Decode strings coded at rate setting ``rate`` into the latent for ``g_s``."""
        rate = self.check_rate(rate)
        with torch.no_grad():
            symbols = self.inner[rate].decompress(strings, latent_hw)
            return symbols * self._inverse_gain(rate)

    def decompress_settings(
        self, strings: list[list[bytes]], latent_hw: tuple[int, int], rates: Sequence[int]
    ) -> Tensor:
        """Decode a batch whose images were coded at different rate settings, in order."""
        if len(rates) != len(strings):
            raise ValueError(f"{len(rates)} rate settings for {len(strings)} images")
        out: Tensor | None = None
        for rate in sorted(set(rates)):
            index = [i for i, r in enumerate(rates) if r == rate]
            part = self.decompress_at([strings[i] for i in index], latent_hw, rate)
            if out is None:
                out = part.new_empty(len(strings), *part.shape[1:])
            out[index] = part
        assert out is not None
        return out

    def update_tables(self) -> None:
        for codec in self.inner:
            codec.update_tables()

    def tables_changed(self) -> None:
        for codec in self.inner:
            codec.tables_changed()

    def tables_ready(self) -> bool:
        return all(codec.tables_ready() for codec in self.inner)

    def entropy_models(self) -> list[nn.Module]:
        return [m for codec in self.inner for m in codec.entropy_models()]
