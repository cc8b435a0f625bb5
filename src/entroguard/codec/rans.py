"""CompressAI's rANS coder for several symbol groups in one stream, safe on untrusted bytes.

CompressAI's C++ decoder (``compressai.ans.RansDecoder``) trusts its input: it reads 32-bit
words forward without looking at the string's length, and a corrupt or crafted string (e.g. all
``0xff`` bytes behind a valid packet header and checksum) sends it far past the end of its
buffer, which kills the process with a segmentation fault (CompressAI issue #300). So
:class:`StreamDecoder` never hands it a group of symbols before :class:`RansWalker` has replayed
the decoder over that group (in a compiled C loop, :mod:`entroguard.codec.rans_kernel`, or in
pure Python on a machine without a C compiler), with exactly the decoder's integer arithmetic
(64-bit state, 16-bit precision, 4-bit bypass words, renormalise below 2**31), and found that:

* the string is a whole number of 32-bit words, at least 2 (the encoder's flushed state);
* every word the decoder would read lies inside the string;
* every bypass-coded value announces at most 8 nibbles (an encoder never writes more: the raw
  value is 32 bits), so no loop of the decoder runs away;

and :meth:`StreamDecoder.finish` checks that decoding ended exactly at the last word, in the
encoder's initial state 2**31: rANS decoding mirrors encoding, so every string an encoder wrote
passes, and almost every corrupted one fails. Anything else raises :class:`BitstreamError`.
The decoded symbols are still CompressAI's (the walk produces none), so decoding stays exact.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import EntropyModel
from torch import Tensor

from entroguard.codec import rans_kernel
from entroguard.errors import EntroguardError

RANS64_L = 1 << 31
"""Lower bound of the normalised rANS state (ryg_rans ``RANS64_L``)."""
PRECISION = 16
"""Bits of probability precision of CompressAI's coder."""
BYPASS_BITS = 4
"""Bits per bypass word."""
MAX_BYPASS_WORDS = 8
"""Most bypass words an encoder writes for one value (32 bits / 4)."""

_WORD = "I"
"""``memoryview`` format of one coder word: the C++ coder reads native 32-bit words."""
_RESEND = "the packet is corrupt, cut or crafted, or was coded by another model: resend it"


class BitstreamError(EntroguardError, ValueError):
    """A coder string that cannot be decoded safely and exactly (corrupt, cut or crafted).

    Raised before CompressAI's decoder reads past the string; a server answers it with 400
    ``undecodable`` (:attr:`reason`).
    """

    reason = "undecodable"


WalkRow = tuple[list[int], int, int, list[int], array, int]
"""One table as the walk reads it: (cdf, cdf length, bypass symbol, frequency of each symbol,
symbol lookup, lookup shift); see :func:`_walk_row`."""


@dataclass(frozen=True)
class CdfTables:
    """An entropy model's quantised CDF tables as the coder takes them (Python lists).

    ``rows`` (derived, checked once) are the same tables as :class:`RansWalker` reads them.
    """

    cdfs: list[list[int]]
    lengths: list[int]
    offsets: list[int]
    rows: list[WalkRow] = field(default_factory=list, repr=False, compare=False)

    @property
    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tables as the compiled check reads them (built once): every table's entries
        end to end (int32), where each starts (int64) and its length (int32)."""
        if "_flat" not in self.__dict__:
            starts = np.cumsum([0, *self.lengths[:-1]], dtype=np.int64)
            entries = np.fromiter((v for c, n in zip(self.cdfs, self.lengths, strict=True)
                                   for v in c[:n]), np.int32)  # fmt: skip
            object.__setattr__(self, "_flat", (entries, starts,
                                               np.asarray(self.lengths, np.int32)))  # fmt: skip
        return self.__dict__["_flat"]

    def __post_init__(self) -> None:
        if not self.rows and self.cdfs:
            rows = [_walk_row(c, n) for c, n in zip(self.cdfs, self.lengths, strict=True)]
            object.__setattr__(self, "rows", rows)

    @classmethod
    def of(cls, model: EntropyModel) -> CdfTables:
        """The tables of ``model``, each cut to its own length: CompressAI stores them padded
        to the longest (a hyperprior's 64 Gaussian tables: 3,133 entries each against 426 on
        average), its coder never reads past a table's length, and the coder converts every
        entry it is given from Python on each call, so the padding only cost time."""
        lengths = model._cdf_length.reshape(-1).int().tolist()
        rows = model._quantized_cdf.tolist()
        return cls([row[:n] for row, n in zip(rows, lengths, strict=True)], lengths,
                   model._offset.reshape(-1).int().tolist())  # fmt: skip

    def used_by(self, indexes: Tensor) -> tuple[CdfTables, list[int]]:
        """Only the tables ``indexes`` refer to, and the indexes renumbered into them.

        The coder copies every table it is given on each call; a hyperprior has 64 long
        Gaussian tables of which one image uses a few, so passing those few is much faster
        and codes exactly the same symbols with exactly the same CDFs.
        """
        flat = indexes.reshape(-1).int().tolist()
        used = sorted(set(flat))
        if used and (used[0] < 0 or used[-1] >= len(self.cdfs)):
            raise ValueError(f"CDF indexes {used[0]}..{used[-1]} outside 0..{len(self.cdfs) - 1}")
        position = {u: i for i, u in enumerate(used)}
        subset = CdfTables(
            [self.cdfs[u] for u in used],
            [self.lengths[u] for u in used],
            [self.offsets[u] for u in used],
            [self.rows[u] for u in used],
        )
        return subset, [position[i] for i in flat]


def _walk_row(cdf: list[int], length: int) -> WalkRow:
    """``cdf`` as the walk reads it, after checking it is a table the C++ decoder can use.

    The symbol of a cumulative frequency ``cum`` is the last ``s`` with ``cdf[s] <= cum`` (what
    the decoder finds). The lookup splits 0 .. 2**16 - 1 into buckets of ``2**shift`` values:
    ``lookup[cum >> shift]`` is that symbol when one symbol covers the whole bucket, else
    ``~s`` for the bucket's first symbol ``s``, where a binary search starts. ``shift`` is the
    largest (8 down to 4) for which such searches have at most 5% probability.
    """
    valid = 2 <= length <= len(cdf) and cdf[0] == 0 and cdf[length - 1] == 1 << PRECISION
    freqs = [b - a for a, b in zip(cdf[: length - 1], cdf[1:length], strict=True)] if valid else []
    if not valid or min(freqs) <= 0:
        raise ValueError(
            "not a quantised CDF of CompressAI's rANS coder (0 first, strictly increasing to "
            f"2**{PRECISION}): rebuild the tables with update_tables()"
        )
    for shift in range(8, 3, -1):
        width, lookup, searched = 1 << shift, array("i"), 0
        for start in range(0, 1 << PRECISION, width):
            s = bisect_right(cdf, start, 0, length) - 1
            whole = cdf[s + 1] >= start + width
            lookup.append(s if whole else ~s)
            searched += 0 if whole else width
        if searched <= (1 << PRECISION) // 20:
            break
    return cdf, length, length - 2, freqs, lookup, shift


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


class RansWalker:
    """Replays CompressAI's rANS decoder over one string without producing symbols.

    :meth:`walk` advances over one group of symbols (several groups may share one stream, as
    ``decode_stream`` does) and raises :class:`BitstreamError` at the first read the C++
    decoder would make past the string's end, or at a bypass count no encoder writes.
    :meth:`finished` says whether the stream was consumed exactly, ending in the encoder's
    initial state. Cost per symbol: a few nanoseconds in the compiled loop, 0.2 to 0.35 us in
    Python.

    Args:
        data: the coder string; must be a whole number (>= 2) of 32-bit words.
    """

    def __init__(self, data: bytes, compiled: bool | None = None) -> None:
        n_bytes = len(data)
        if n_bytes % 4 or n_bytes < 8:
            raise BitstreamError(
                f"coder string of {n_bytes} bytes is not a whole number (>= 2) of 32-bit words: "
                + _RESEND
            )
        self._data = bytes(data)
        self._words = memoryview(self._data).cast(_WORD)
        self._x = self._words[0] | (self._words[1] << 32)
        self._p = 2
        self.compiled = rans_kernel.available() if compiled is None else compiled

    def walk(self, indexes: Sequence[int] | Tensor | np.ndarray, tables: CdfTables) -> None:
        """Advance over the symbols whose CDF indexes into ``tables`` are ``indexes`` (decoding
        order), in the compiled loop when it is available (``compiled`` None or True), else
        in Python."""
        if self.compiled:
            self._walk_compiled(np.ascontiguousarray(np.asarray(indexes), dtype=np.int32)
                                .reshape(-1), tables)  # fmt: skip
        else:
            flat = indexes.reshape(-1).tolist() if hasattr(indexes, "reshape") else indexes
            self._walk_python(flat, tables)

    def _walk_compiled(self, indexes: np.ndarray, tables: CdfTables) -> None:
        n = len(self._words)
        code, p, x, bad = rans_kernel.walk(self._data, n, (self._p, self._x), indexes,
                                           tables.flat)  # fmt: skip
        if code == rans_kernel.PAST_END:
            raise _past_end(n)
        if code == rans_kernel.BAD_BYPASS:
            raise _bad_bypass(bad)
        if code == rans_kernel.BAD_INDEX:
            raise ValueError(f"CDF indexes outside 0..{len(tables.lengths) - 1}")
        self._p, self._x = p, x

    def _walk_python(self, indexes: Sequence[int], tables: CdfTables) -> None:
        words, n = self._words, len(self._words)
        x, p = self._x, self._p
        rows = tables.rows
        low, mask, find = RANS64_L, (1 << PRECISION) - 1, bisect_right
        for idx in indexes:
            cdf, size, bypass, freqs, lookup, shift = rows[idx]
            cum = x & mask
            s = lookup[cum >> shift]
            if s < 0:  # the bucket holds a symbol boundary
                s = find(cdf, cum, ~s, size) - 1
            x = freqs[s] * (x >> PRECISION) + cum - cdf[s]
            if x < low:
                if p == n:
                    raise _past_end(n)
                x = (x << 32) | words[p]
                p += 1
            if s == bypass:  # a count of nibbles, then the nibbles
                count = x & 15
                if count > MAX_BYPASS_WORDS:
                    raise _bad_bypass(count)
                for _ in range(count + 1):
                    x >>= BYPASS_BITS
                    if x < low:
                        if p == n:
                            raise _past_end(n)
                        x = (x << 32) | words[p]
                        p += 1
        self._x, self._p = x, p

    def finished(self) -> bool:
        """Whether every word was read and the state is back to the encoder's initial one."""
        return self._p == len(self._words) and self._x == RANS64_L


def _bad_bypass(count: int) -> BitstreamError:
    return BitstreamError(
        f"a coded value announces {count} bypass words, an encoder writes at most "
        f"{MAX_BYPASS_WORDS}: " + _RESEND
    )


def _past_end(n_words: int) -> BitstreamError:
    return BitstreamError(
        f"the decoder would read past the end of the {4 * n_words}-byte coder string: " + _RESEND
    )


class StreamDecoder:
    """Decodes the groups of one stream in the order they were encoded; safe on any bytes.

    Each group is walked (:class:`RansWalker`) before CompressAI's decoder decodes it, so the
    decoder never reads outside the string; call :meth:`finish` after the last group. Raises
    :class:`BitstreamError` for a string that cannot be decoded, and for every call after one
    that raised.
    """

    def __init__(self, string: bytes) -> None:
        if not isinstance(string, bytes):
            if not isinstance(string, (bytearray, memoryview)):
                raise TypeError(f"coder string must be bytes, got {type(string).__name__}")
            string = bytes(string)
        self._walker: RansWalker | None = RansWalker(string)
        self._decoder = RansDecoder()
        self._decoder.set_stream(string)

    def decode(self, indexes: Tensor, tables: CdfTables) -> Tensor:
        """Symbols (int32, shape of ``indexes``) of the next group."""
        used, renumbered = tables.used_by(indexes)
        walker, self._walker = self._walker, None  # unusable if the walk fails half-way
        if walker is None:
            raise BitstreamError("this coder string was already refused: " + _RESEND)
        if walker.compiled:  # the whole tables: their flat arrays are built once
            walker.walk(indexes.cpu().numpy(), tables)
        else:
            walker.walk(renumbered, used)
        self._walker = walker
        values = self._decoder.decode_stream(renumbered, used.cdfs, used.lengths, used.offsets)
        symbols = torch.from_numpy(np.asarray(values, dtype=np.int32))  # 3x torch.tensor's speed
        return symbols.to(indexes.device).reshape(indexes.shape)

    def finish(self) -> None:
        """Raise :class:`BitstreamError` unless the string ended exactly with the last group."""
        if self._walker is None:
            raise BitstreamError("this coder string was already refused: " + _RESEND)
        if not self._walker.finished():
            raise BitstreamError(
                "the coder string does not end where its symbols do (words left over, or a final "
                "state that is not the encoder's initial one): " + _RESEND
            )
