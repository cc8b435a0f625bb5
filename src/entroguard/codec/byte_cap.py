"""A hard byte cap in the head: no payload exceeds a budget, whatever the image.

An attacker (or fog, or noise) that inflates the latent's rate cannot push a capped head's
packet past ``budget`` bytes. When an image's payload would exceed it, the head resets the
latent's most expensive symbols to 0 (the cheapest symbol of every entropy model here: the
median of a factorized density, the predicted mean of a hyperprior's Gaussian) until the real
rANS output fits, and marks the packet as capped (format 5). The tail decodes it as any packet:
a reset symbol is the value the entropy model expected there.

**Which symbols.** The fewest changes that fit: symbols are reset most expensive first, their
cost read exactly from the coder's own integer CDF tables (escaped symbols first, then the
least probable), ties broken by position, so the order is integer arithmetic and the same on
every machine. A rate attack spends its bytes on improbable symbols, so the reset takes back
exactly what it added first; the smallest count that fits is found by bisection on the real
coder output (about log2(N) codings), so every packet is checked against the budget, never
estimated. For ``mshp`` the hyper-latent ``z`` is reset (most expensive first, with every ``y``
symbol at its mean) only if resetting all of ``y`` is not enough.

**The floor.** With every symbol reset the payload is the smallest this model can send at that
latent size; a budget below it is refused when the cap is made, never discovered mid-stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from entroguard.codec.factorized import FactorizedPrior, bottleneck_center
from entroguard.codec.hyperprior import MeanScaleHyperprior
from entroguard.codec.rans import PRECISION, CdfTables, encode_groups
from entroguard.device import module_device
from entroguard.errors import InputError

MAX_SHARE = 255
"""The cap byte's unit: the reset share is written in 255ths."""


def _symbol_bits(s: int, i: int, tables: CdfTables) -> float:
    """Bits the coder spends on symbol ``s`` under table ``i``: -log2 of its probability, or
    for an escaped symbol the escape's plus its 4-bit bypass words (CompressAI's scheme: the
    word count in 4-bit chunks of at most 15, then the words)."""
    v, escape, cdf = s - tables.offsets[i], tables.lengths[i] - 2, tables.cdfs[i]
    if 0 <= v < escape:
        return PRECISION - math.log2(max(cdf[v + 1] - cdf[v], 1))
    raw = -2 * v - 1 if v < 0 else 2 * (v - escape)
    words = 0
    while raw >> (4 * words):
        words += 1
    bits = PRECISION - math.log2(max(cdf[escape + 1] - cdf[escape], 1))
    return bits + 4 * (words // 15 + 1) + 4 * words


def _cost_order(symbols: Tensor, indexes: Tensor, tables: CdfTables) -> tuple[Tensor, list]:
    """Flat positions of ``symbols`` (any shape; ``indexes`` the same shape) most expensive
    first, by the coder's integer tables: escaped symbols (outside a table's range) first, the
    farther out the earlier, then by ascending frequency; ties by position. Also the bits each
    reset saves, in that order (an estimate that guides the search; lengths are measured)."""
    flat_s = symbols.reshape(-1).int().tolist()
    flat_i = indexes.expand_as(symbols).reshape(-1).int().tolist()
    keys = []
    for pos, (s, i) in enumerate(zip(flat_s, flat_i, strict=True)):
        v = s - tables.offsets[i]
        escape = tables.lengths[i] - 2  # symbols from here on are escaped (bypass coded)
        if v < 0 or v >= escape:
            keys.append((0, -abs(v - min(max(v, 0), escape)), pos))
        else:
            cdf = tables.cdfs[i]
            keys.append((1, cdf[v + 1] - cdf[v], pos))
    keys.sort()
    order = [k[2] for k in keys]
    saving = [_symbol_bits(flat_s[p], flat_i[p], tables) - _symbol_bits(0, flat_i[p], tables)
              for p in order]  # fmt: skip
    return torch.tensor(order, dtype=torch.long), saving


def _reset(symbols: Tensor, order: Tensor, k: int) -> Tensor:
    """``symbols`` with its first ``k`` positions of ``order`` set to 0."""
    out = symbols.reshape(-1).clone()
    out[order[:k]] = 0
    return out.view_as(symbols)


@dataclass
class _FactorizedImage:
    """One image's y symbols under a factorized prior."""

    symbols: Tensor
    indexes: Tensor
    tables: CdfTables

    def __post_init__(self) -> None:
        self.order, self.saving = _cost_order(self.symbols, self.indexes, self.tables)
        self.size = self.first_stage = self.symbols.numel()

    def encode(self, k: int) -> bytes:
        return encode_groups([(_reset(self.symbols, self.order, k), self.indexes, self.tables)])


@dataclass
class _HyperImage:
    """One image's z and y symbols under a mean-scale hyperprior: y is reset first, then z."""

    codec: MeanScaleHyperprior
    latent_hw: tuple[int, int]
    z: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        self.z_indexes = self.codec._z_indexes(1, tuple(self.z.shape[-2:]), self.z.device)[0]
        self.z_tables, self.y_tables = self.codec._tables()
        self.y_indexes = self.codec.coding_params(self.z[None], self.latent_hw)[0][0]
        self.y_order, self.saving = _cost_order(self.y, self.y_indexes, self.y_tables)
        self.z_order, _ = _cost_order(self.z, self.z_indexes, self.z_tables)
        self.size = self.y.numel() + self.z.numel()
        self.first_stage = self.y.numel()  # reset counts up to here touch y only

    def encode(self, k: int) -> bytes:
        n_y = self.y.numel()
        if k <= n_y:
            z, y, y_indexes = self.z, _reset(self.y, self.y_order, k), self.y_indexes
        else:
            z = _reset(self.z, self.z_order, k - n_y)
            y_indexes = self.codec.coding_params(z[None], self.latent_hw)[0][0]
            y = torch.zeros_like(self.y)
        return encode_groups([(z, self.z_indexes, self.z_tables), (y, y_indexes, self.y_tables)])


def _images(codec, y: Tensor) -> list:
    """Per-image symbol plans of the latent ``y`` (B, C, h, w) the way ``codec`` codes it."""
    codec._require_tables()
    y = y.detach()
    if isinstance(codec, MeanScaleHyperprior):
        z = torch.round(codec.h_a(y) - codec._z_medians())
        _, means = codec.coding_params(z, tuple(y.shape[-2:]))
        y_symbols = torch.round(y - means)
        hw = tuple(y.shape[-2:])
        return [_HyperImage(codec, hw, zi, yi) for zi, yi in zip(z, y_symbols, strict=True)]
    if isinstance(codec, FactorizedPrior):
        symbols = torch.round(y - bottleneck_center(codec.entropy_bottleneck))
        indexes = codec._indexes(tuple(y.shape[-2:]), y.device)[0]
        tables = codec._tables()
        return [_FactorizedImage(s, indexes, tables) for s in symbols]
    raise InputError(
        f"a byte cap needs a factorized (fp) or hyperprior (mshp) entropy model, not "
        f"{type(codec).__name__}: a fixed-rate bottleneck's payload never varies, and a "
        "slimmable head caps its bytes with its rate setting"
    )


@dataclass(frozen=True)
class CappedStrings:
    """A batch coded under a byte cap: per-image coder strings (as ``codec.compress``
    returns them) and the reset share of each image in 255ths (0: not capped)."""

    strings: list[list[bytes]]
    reset_share: list[int]


class ByteCap:
    """Code latents so that no image's payload exceeds ``budget_bytes`` (see module doc)."""

    def __init__(self, budget_bytes: int) -> None:
        if not isinstance(budget_bytes, int) or isinstance(budget_bytes, bool) or budget_bytes < 1:
            raise InputError(f"a byte cap must be a positive number of bytes, got {budget_bytes!r}")
        self.budget_bytes = budget_bytes
        self._floors: dict[tuple, int] = {}

    def floor_bytes(self, codec, latent_hw: tuple[int, int]) -> int:
        """The smallest payload ``codec`` codes at ``latent_hw``: every symbol reset."""
        key = (id(codec), tuple(latent_hw))
        if key not in self._floors:
            probe = torch.zeros(1, codec.channels, *latent_hw, device=module_device(codec))
            image = _images(codec, probe)[0]
            self._floors[key] = len(image.encode(image.size))
        return self._floors[key]

    def check(self, codec, latent_hw: tuple[int, int]) -> None:
        """``InputError`` unless the budget is at least the codec's floor at ``latent_hw``."""
        floor = self.floor_bytes(codec, latent_hw)
        if self.budget_bytes < floor:
            raise InputError(
                f"a byte cap of {self.budget_bytes} B is below the smallest payload this model "
                f"codes at a {latent_hw[0]}x{latent_hw[1]} latent ({floor} B): raise the budget"
            )

    @torch.no_grad()
    def compress(self, codec, y: Tensor) -> CappedStrings:
        """Code ``y`` (B, C, h, w) as ``codec.compress`` does, each image within the budget."""
        self.check(codec, tuple(y.shape[-2:]))
        strings, shares = [], []
        for image in _images(codec, y):
            k, data = self._fit(image)
            strings.append([data])
            shares.append(0 if k == 0 else max(1, -(-MAX_SHARE * k // image.size)))
        return CappedStrings(strings, shares)

    def _fit(self, image) -> tuple[int, bytes]:
        """The fewest reset symbols whose coding fits, and that coding: a first guess from the
        estimated bits each reset saves, a bracket around it, then bisection on the real coder
        output (every returned string is measured, never estimated)."""
        data = image.encode(0)
        if len(data) <= self.budget_bytes:
            return 0, data

        def fits(k: int) -> bool:
            return len(image.encode(k)) <= self.budget_bytes

        if image.first_stage < image.size and not fits(image.first_stage):
            low, high = image.first_stage, image.size  # resetting y is not enough: z too
        else:
            guess = _guess(len(data), self.budget_bytes, image.saving, image.first_stage)
            low, high = _bracket(fits, guess, image.first_stage)
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if fits(mid) else (mid, high)
        best = image.encode(high)
        if len(best) > self.budget_bytes:  # unreachable past check(): kept as the guarantee
            raise AssertionError("byte cap: the floor does not fit the budget")
        return high, best


def _guess(size: int, budget: int, saving: list[float], limit: int) -> int:
    """The reset count whose estimated savings bring ``size`` bytes to the budget."""
    need, saved = 8 * (size - budget), 0.0
    for k, bits in enumerate(saving, start=1):
        saved += bits
        if saved >= need:
            return k
    return limit


def _bracket(fits, guess: int, limit: int) -> tuple[int, int]:
    """``(low, high)`` with ``high`` fitting and ``low`` not (or 0), found by doubling steps
    away from ``guess``."""
    step = 1
    if fits(guess):
        high = guess
        while high > 1 and fits(max(high - step, 1)):
            high, step = max(high - step, 1), 2 * step
        return max(high - step, 0), high
    low = guess
    while low + step < limit and not fits(low + step):
        low, step = low + step, 2 * step
    return low, min(low + step, limit)
