"""Factorized prior (FP): one learned density per channel (Balle et al. 2018)."""

from __future__ import annotations

import torch
from compressai.entropy_models import EntropyBottleneck
from torch import Tensor, nn

from entroguard.codec.base import (
    CodecOutput,
    LatentCodec,
    Quantization,
    check_latent,
    straight_through_round,
    uniform_noise,
)
from entroguard.codec.rans import CdfTables, StreamDecoder, encode_groups


def bottleneck_likelihood(bottleneck: EntropyBottleneck, values: Tensor) -> Tensor:
    """Likelihood of already-quantised (or noisy) ``values`` (B, C, H, W) under ``bottleneck``.

    Differentiable with respect to ``values``; lower-bounded like CompressAI's forward.
    """
    b, c = values.shape[:2]
    flat = values.transpose(0, 1).reshape(c, 1, -1)
    likelihood, _, _ = bottleneck._likelihood(flat)
    if bottleneck.use_likelihood_bound:
        likelihood = bottleneck.likelihood_lower_bound(likelihood)
    return likelihood.reshape(c, b, *values.shape[2:]).transpose(0, 1)


def bottleneck_center(bottleneck: EntropyBottleneck) -> Tensor:
    """Per-channel quantisation offsets (the learned medians), shape (1, C, 1, 1)."""
    return bottleneck._get_medians().detach().reshape(1, -1, 1, 1)


def quantize_factorized(
    bottleneck: EntropyBottleneck,
    y: Tensor,
    quantization: Quantization,
    generator: torch.Generator | None,
) -> CodecOutput:
    """The differentiable FP path shared by the factorized prior and the hyperprior's z."""
    center = bottleneck_center(bottleneck)
    if quantization == "round":
        y_hat = (torch.round(y - center) + center).detach()
        coded = y_hat
    else:
        y_hat = straight_through_round(y, center)
        coded = y + uniform_noise(y, generator) if quantization == "noise" else y_hat
    return CodecOutput(y_hat=y_hat, likelihoods={"y": bottleneck_likelihood(bottleneck, coded)})


class FactorizedPrior(LatentCodec):
    """Factorized-prior entropy model on CompressAI's ``EntropyBottleneck``.

    Each image becomes one byte string (``string_names == ("y",)``).
    """

    prior = "fp"
    string_names = ("y",)

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.entropy_bottleneck = EntropyBottleneck(channels)
        self._cdf_tables: CdfTables | None = None

    def entropy_models(self) -> list[nn.Module]:
        return [self.entropy_bottleneck]

    def likelihoods(
        self,
        y: Tensor,
        quantization: Quantization = "noise",
        generator: torch.Generator | None = None,
    ) -> CodecOutput:
        check_latent(y, self.channels)
        return quantize_factorized(self.entropy_bottleneck, y, quantization, generator)

    def quantize(self, y: Tensor) -> Tensor:
        check_latent(y, self.channels)
        center = bottleneck_center(self.entropy_bottleneck)
        return torch.round(y - center) + center

    def _indexes(self, latent_hw: tuple[int, int], device: torch.device) -> Tensor:
        return self.entropy_bottleneck._build_indexes((1, self.channels, *latent_hw)).to(device)

    def _tables(self) -> CdfTables:
        if self._cdf_tables is None:
            self._cdf_tables = CdfTables.of(self.entropy_bottleneck)
        return self._cdf_tables

    @torch.no_grad()
    def compress(self, y: Tensor) -> list[list[bytes]]:
        """One rANS stream per image, as CompressAI's ``EntropyBottleneck.compress`` writes it
        (the coder tables are converted once, not once per image)."""
        check_latent(y, self.channels)
        self._require_tables()
        symbols = torch.round(y.detach() - bottleneck_center(self.entropy_bottleneck))
        indexes = self._indexes(tuple(y.shape[-2:]), y.device)
        tables = self._tables()
        return [[encode_groups([(s, indexes, tables)])] for s in symbols]

    @torch.no_grad()
    def decompress(self, strings: list[list[bytes]], latent_hw: tuple[int, int]) -> Tensor:
        self._require_tables()
        center = bottleneck_center(self.entropy_bottleneck)
        indexes = self._indexes(tuple(latent_hw), center.device)
        tables = self._tables()
        symbols = [_decode_one(s[0], indexes, tables) for s in strings]
        return torch.cat(symbols).to(center.dtype) + center

    @torch.no_grad()
    def update_tables(self) -> None:
        refit_tables(self.entropy_bottleneck)
        self.tables_changed()

    def tables_changed(self) -> None:
        self._cdf_tables = None


def _decode_one(string: bytes, indexes: Tensor, tables: CdfTables) -> Tensor:
    """The symbols of one image's string; ``BitstreamError`` unless it decodes exactly."""
    decoder = StreamDecoder(string)
    symbols = decoder.decode(indexes, tables)
    decoder.finish()
    return symbols


@torch.no_grad()
def refit_tables(bottleneck: EntropyBottleneck) -> None:
    """Rebuild ``bottleneck``'s CDF tables with exact tail quantiles, keeping its medians.

    The medians are the quantisation offsets the tail was trained with, so they stay; the
    lower and upper quantiles, which only bound the CDF tables, are found by bisection
    (deterministic). Call after training or loading.
    """
    medians = bottleneck.quantiles[:, :, 1].clone()
    bottleneck._update_quantiles()
    bottleneck.quantiles[:, :, 1] = medians
    bottleneck.update(force=True)
