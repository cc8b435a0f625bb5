"""Mean-scale hyperprior (MSHP): a hyper-latent ``z = h_a(y)`` coded with a factorized prior,
and ``h_s(z_hat)`` giving a Gaussian mean and scale per latent element (Minnen et al. 2018).
"""

from __future__ import annotations

import math

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import Tensor, nn

from entroguard.codec.base import (
    CodecOutput,
    LatentCodec,
    Quantization,
    check_latent,
    uniform_noise,
)
from entroguard.codec.factorized import quantize_factorized, refit_tables
from entroguard.codec.integer_hs import IntegerHyperSynthesis
from entroguard.codec.rans import CdfTables, StreamDecoder, encode_groups

SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64


def default_scale_table() -> Tensor:
    """CompressAI's 64 log-spaced Gaussian scales from 0.11 to 256."""
    return torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


def _straight_through(x: Tensor) -> Tensor:
    return x + (torch.round(x) - x).detach()


class MeanScaleHyperprior(LatentCodec):
    """Mean-scale hyperprior on CompressAI's ``EntropyBottleneck`` and ``GaussianConditional``.

    Each image becomes one byte string holding the hyper-latent's symbols, then the latent's.
    ``h_s`` must output ``2 * channels`` maps: scales first, then means (CompressAI's and
    sc2bench's ``chunk(2, 1)`` order).

    The differentiable path (training, attacks, estimates) runs the float ``h_s``. Coding runs
    its integer form (:class:`~entroguard.codec.integer_hs.IntegerHyperSynthesis`): the CDF
    index and the mean of every latent element are then bit-identical on any machine, batch
    size or kernel, so a packet made on one computer decodes exactly on any other.
    """

    prior = "mshp"
    string_names = ("z+y",)

    def __init__(self, channels: int, hyper_channels: int, h_a: nn.Module, h_s: nn.Module):
        super().__init__(channels)
        self.hyper_channels = hyper_channels
        self.h_a = h_a
        self.h_s = h_s
        self.entropy_bottleneck = EntropyBottleneck(hyper_channels)
        self.gaussian_conditional = GaussianConditional(default_scale_table().tolist())
        self._hyper_hw_cache: dict[tuple[int, int], tuple[int, int]] = {}
        self._cdf_tables: tuple[CdfTables, CdfTables] | None = None
        self._integer_hs: IntegerHyperSynthesis | None = None

    def entropy_models(self) -> list[nn.Module]:
        return [self.entropy_bottleneck, self.gaussian_conditional]

    def gaussian_params(self, z_hat: Tensor, latent_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Scales and means, each (B, C, H, W), from the quantised hyper-latent.

        ``h_s`` may upsample past the latent's size (a 55x55 latent has a 14x14 hyper-latent,
        which ``h_s`` maps back to 56x56); the output is cropped to ``latent_hw``.

        This is the float ``h_s`` of the differentiable path; coding uses
        :meth:`coding_params`, whose result does not depend on layout, batch or kernel.
        """
        params = self.h_s(z_hat.contiguous())[..., : latent_hw[0], : latent_hw[1]]
        if params.shape[1] != 2 * self.channels or tuple(params.shape[-2:]) != tuple(latent_hw):
            raise ValueError(
                f"h_s must output {2 * self.channels} channels (scales, means) of at least "
                f"{tuple(latent_hw)}, got {tuple(params.shape[1:])}"
            )
        scales, means = params.chunk(2, dim=1)
        return scales, means

    def _gaussian_likelihood(self, residual: Tensor, scales: Tensor) -> Tensor:
        lik = self.gaussian_conditional._likelihood(residual, scales, None)
        if self.gaussian_conditional.use_likelihood_bound:
            lik = self.gaussian_conditional.likelihood_lower_bound(lik)
        return lik

    def likelihoods(
        self,
        y: Tensor,
        quantization: Quantization = "noise",
        generator: torch.Generator | None = None,
    ) -> CodecOutput:
        """Differentiable path.

        The gradient reaches ``y`` through the latent itself, the means and the scales, and
        the hyper-latent's bits are part of the likelihoods (``"z"``).
        """
        check_latent(y, self.channels)
        z_out = quantize_factorized(self.entropy_bottleneck, self.h_a(y), quantization, generator)
        scales, means = self.gaussian_params(z_out.y_hat, y.shape[-2:])
        if quantization == "round":
            residual = torch.round(y - means).detach()
            y_hat = (residual + means).detach()
        else:
            residual = _straight_through(y - means)
            y_hat = residual + means
            if quantization == "noise":
                residual = y - means + uniform_noise(y, generator)
        likelihoods = {
            "y": self._gaussian_likelihood(residual, scales),
            "z": z_out.likelihoods["y"],
        }
        return CodecOutput(y_hat=y_hat, likelihoods=likelihoods)

    def quantize(self, y: Tensor) -> Tensor:
        check_latent(y, self.channels)
        self._require_tables()
        medians = self._z_medians()
        z_symbols = torch.round(self.h_a(y) - medians)
        _, means = self.coding_params(z_symbols, y.shape[-2:])
        return torch.round(y - means) + means

    def hyper_hw(self, latent_hw: tuple[int, int]) -> tuple[int, int]:
        """Spatial size (Hz, Wz) of the hyper-latent for a latent of size ``latent_hw``."""
        key = (int(latent_hw[0]), int(latent_hw[1]))
        if key not in self._hyper_hw_cache:
            param = next(self.h_a.parameters())
            probe = torch.zeros(1, self.channels, *key, device=param.device, dtype=param.dtype)
            with torch.no_grad():
                self._hyper_hw_cache[key] = tuple(self.h_a(probe).shape[-2:])
        return self._hyper_hw_cache[key]

    def _z_indexes(self, n: int, hyper_hw: tuple[int, int], device: torch.device) -> Tensor:
        return self.entropy_bottleneck._build_indexes((n, self.hyper_channels, *hyper_hw)).to(
            device
        )

    def _z_medians(self) -> Tensor:
        return self.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)

    def coding_params(self, z_symbols: Tensor, latent_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """CDF indexes (int32) and means (float32), each (B, C, H, W), from the hyper-latent's
        symbols (B, Cz, Hz, Wz): the integer ``h_s``, bit-identical on every machine.

        Returned on the device of ``z_symbols`` (the integer network itself runs on the CPU).
        """
        if self._integer_hs is None:
            raise RuntimeError("the integer h_s is not built: call update_tables() first")
        q = self._integer_hs(z_symbols)[..., : latent_hw[0], : latent_hw[1]]
        if q.shape[1] != 2 * self.channels or tuple(q.shape[-2:]) != tuple(latent_hw):
            raise ValueError(
                f"h_s must output {2 * self.channels} channels (scales, means) of at least "
                f"{tuple(latent_hw)}, got {tuple(q.shape[1:])}"
            )
        scales_q, means_q = q.chunk(2, dim=1)
        indexes = self._integer_hs.scale_indexes(scales_q)
        means = IntegerHyperSynthesis.to_float(means_q)
        return indexes.to(z_symbols.device), means.to(z_symbols.device)

    @torch.no_grad()
    def compress(self, y: Tensor) -> list[list[bytes]]:
        """One rANS stream per image: the hyper-latent's symbols, then the latent's.

        CompressAI's hyperprior models write two streams (y and z), paying the coder's 8-byte
        flush twice; one stream decodes the same way (z first, then y with the scales and
        means it gives) and is 8 bytes smaller per image.
        """
        check_latent(y, self.channels)
        self._require_tables()
        y = y.detach()
        z_symbols = torch.round(self.h_a(y) - self._z_medians())
        z_indexes = self._z_indexes(1, tuple(z_symbols.shape[-2:]), y.device)
        y_indexes, means = self.coding_params(z_symbols, y.shape[-2:])
        y_symbols = torch.round(y - means)
        z_tables, y_tables = self._tables()
        groups = zip(z_symbols, y_symbols, y_indexes, strict=True)
        return [
            [encode_groups([(z, z_indexes, z_tables), (y_i, index, y_tables)])]
            for z, y_i, index in groups
        ]

    @torch.no_grad()
    def decompress(self, strings: list[list[bytes]], latent_hw: tuple[int, int]) -> Tensor:
        self._require_tables()
        hyper_hw = self.hyper_hw(latent_hw)
        medians = self._z_medians()
        z_indexes = self._z_indexes(1, hyper_hw, medians.device)
        z_tables, y_tables = self._tables()
        out = []
        for image_strings in strings:
            decoder = StreamDecoder(image_strings[0])
            z_symbols = decoder.decode(z_indexes, z_tables)
            y_indexes, means = self.coding_params(z_symbols, latent_hw)
            out.append(decoder.decode(y_indexes, y_tables).to(means.dtype) + means)
            decoder.finish()
        return torch.cat(out)

    def _tables(self) -> tuple[CdfTables, CdfTables]:
        if self._cdf_tables is None:
            self._cdf_tables = (
                CdfTables.of(self.entropy_bottleneck),
                CdfTables.of(self.gaussian_conditional),
            )
        return self._cdf_tables

    @torch.no_grad()
    def update_tables(self) -> None:
        refit_tables(self.entropy_bottleneck)
        self.gaussian_conditional.update_scale_table(default_scale_table(), force=True)
        self.tables_changed()

    def tables_changed(self) -> None:
        self._cdf_tables = None
        self._integer_hs = IntegerHyperSynthesis(
            self.h_s, self._z_medians().flatten(), self.gaussian_conditional.scale_table
        )

    def tables_ready(self) -> bool:
        return super().tables_ready() and self._integer_hs is not None
