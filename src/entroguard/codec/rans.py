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

    def used_by(self, indexes: Tensor) -> tuple[CdfTables, list[int]]:
        """Only the tables ``indexes`` refer to, and the indexes renumbered into them.

        The coder copies every table it is given on each call; a hyperprior has 64 long
        Gaussian tables of which one image uses a few, so passing those few is much faster
        and codes exactly the same symbols with exactly the same CDFs.
        """
        flat = indexes.reshape(-1).int().tolist()
        used = sorted(set(flat))
        position = {u: i for i, u in enumerate(used)}
        subset = CdfTables(
            [self.cdfs[u] for u in used],
            [self.lengths[u] for u in used],
            [self.offsets[u] for u in used],
        )
        return subset, [position[i] for i in flat]


def encode_groups(groups: list[tuple[Tensor, Tensor, CdfTables]]) -> bytes:
    """Code ``(symbols, cdf indexes, tables)`` groups, in order, into ONE rANS stream.

    One stream pays the coder's 8-byte flush once, where one stream per group pays it per group.
    """
    encoder = BufferedRansEncoder()
    for symbols, indexes, tables in groups:
        used, renumbered = tables.used_by(indexes)
        encoder.encode_with_indexes(
            symbols.reshape(-1).int().tolist(), renumbered, used.cdfs, used.lengths, used.offsets
        )
    return encoder.flush()


class StreamDecoder:
    """Decodes the groups of one stream in the order they were encoded."""

    def __init__(self, string: bytes) -> None:
        self._decoder = RansDecoder()
        self._decoder.set_stream(string)

    def decode(self, indexes: Tensor, tables: CdfTables) -> Tensor:
        """Symbols (int32, shape of ``indexes``) of the next group."""
        used, renumbered = tables.used_by(indexes)
        values = self._decoder.decode_stream(renumbered, used.cdfs, used.lengths, used.offsets)
        return torch.tensor(values, dtype=torch.int32, device=indexes.device).reshape(indexes.shape)
