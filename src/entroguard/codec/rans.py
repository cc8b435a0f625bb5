"""Thin helpers over CompressAI's rANS coder for several symbol groups in one stream."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import EntropyModel
from torch import Tensor


@dataclass(frozen=True)
class CdfTables:
    """An entropy model's quantised CDF tables as the coder takes them (Python lists)."""

    cdfs: list[list[int]]
    lengths: list[int]
    offsets: list[int]

    @classmethod
    def of(cls, model: EntropyModel) -> CdfTables:
        return cls(
            model._quantized_cdf.tolist(),
            model._cdf_length.reshape(-1).int().tolist(),
            model._offset.reshape(-1).int().tolist(),
        )


def encode_groups(groups: list[tuple[Tensor, Tensor, CdfTables]]) -> bytes:
    """Code ``(symbols, cdf indexes, tables)`` groups, in order, into ONE rANS stream.

    One stream pays the coder's 8-byte flush once, where one stream per group pays it per group.
    """
    encoder = BufferedRansEncoder()
    for symbols, indexes, tables in groups:
        encoder.encode_with_indexes(
            symbols.reshape(-1).int().tolist(),
            indexes.reshape(-1).int().tolist(),
            tables.cdfs,
            tables.lengths,
            tables.offsets,
        )
    return encoder.flush()


class StreamDecoder:
    """Decodes the groups of one stream in the order they were encoded."""

    def __init__(self, string: bytes) -> None:
        self._decoder = RansDecoder()
        self._decoder.set_stream(string)

    def decode(self, indexes: Tensor, tables: CdfTables) -> Tensor:
        """Symbols (int32, shape of ``indexes``) of the next group."""
        values = self._decoder.decode_stream(
            indexes.reshape(-1).int().tolist(), tables.cdfs, tables.lengths, tables.offsets
        )
        return torch.tensor(values, dtype=torch.int32, device=indexes.device).reshape(indexes.shape)
