"""Check untrusted rANS strings before CompressAI's C++ decoder reads them.

CompressAI's rANS decoder (``RansDecoder.decode_with_indexes`` / ``decode_stream``) trusts its
input: it reads 32-bit words forward without looking at the string's length, and a corrupt
string (or a crafted one, e.g. all ``0xff`` bytes behind a valid packet header and checksum)
sends it far past the end of its buffer, which kills the process with a segmentation fault
(CompressAI issue #300). A server that decodes packets from the network must not let that
happen, so every string is walked first.

:class:`RansWalker` replays the decoder's state machine in pure Python with exactly the
decoder's integer arithmetic (64-bit state, 16-bit precision, 4-bit bypass words, renormalise
below 2**31), without producing symbols, and rejects the string unless:

* its length is a whole number of 32-bit words, at least 2 (the encoder's flushed state);
* every word the decoder would read lies inside the string;
* every bypass-coded value announces at most 8 nibbles (an encoder never writes more: the raw
  value is 32 bits), so no loop of the decoder runs away;
* (whole strings, :func:`check_rans_string`) decoding ends exactly at the last word, in the
  encoder's initial state 2**31: rANS decoding mirrors encoding, so every string an encoder
  wrote passes, and almost every corrupted one fails.

The walk costs about 0.4 us per symbol (0.4 ms for a 16x8x8 latent), less than CompressAI's
own per-call table conversion. :func:`harden_decoder` puts the checks in front of every decode
of a model.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Sequence

from torch import nn

RANS64_L = 1 << 31
"""Lower bound of the normalised rANS state (ryg_rans ``RANS64_L``)."""
PRECISION = 16
"""Bits of probability precision of CompressAI's coder."""
BYPASS_BITS = 4
"""Bits per bypass word."""
MAX_BYPASS_WORDS = 8
"""Most bypass words an encoder writes for one value (32 bits / 4)."""

_PREC_MASK = (1 << PRECISION) - 1
_BYPASS_MASK = (1 << BYPASS_BITS) - 1


class BitstreamError(ValueError):
    """An entropy-coded string that CompressAI's decoder must not be given."""


class RansWalker:
    """Replays CompressAI's rANS decoder over one string without producing symbols.

    ``walk`` advances over one group of symbols (several groups may share one stream, as
    ``decode_stream`` does) and raises :class:`BitstreamError` at the first read the C++
    decoder would make past the string's end, or at a bypass count no encoder writes.
    ``finished`` says whether the stream was consumed exactly, ending in the encoder's
    initial state.

    Args:
        data: the coder string; must be a whole number (>= 2) of 32-bit words.
    """

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray)):
            raise BitstreamError(f"coder string must be bytes, got {type(data).__name__}")
        n_bytes = len(data)
        if n_bytes % 4 or n_bytes < 8:
            raise BitstreamError(
                f"coder string of {n_bytes} bytes is not a whole number (>= 2) of 32-bit words"
            )
        self._words = struct.unpack(f"<{n_bytes // 4}I", data)
        self._x = self._words[0] | (self._words[1] << 32)
        self._p = 2

    def walk(
        self,
        indexes: Sequence[int],
        cdfs: Sequence[Sequence[int]],
        cdf_sizes: Sequence[int],
    ) -> None:
        """Advance over the symbols whose CDF indexes are ``indexes`` (decoding order).

        ``cdfs`` are quantised CDFs as CompressAI passes them to its decoder (each starts at 0
        and reaches 2**16 at position ``cdf_sizes[i] - 1``; entries past that are padding).
        """
        words, n = self._words, len(self._words)
        x, p = self._x, self._p
        n_cdfs = len(cdfs)
        for i, idx in enumerate(indexes):
            if not 0 <= idx < n_cdfs:
                raise BitstreamError(f"symbol {i}: CDF index {idx} outside 0..{n_cdfs - 1}")
            cdf, size = cdfs[idx], cdf_sizes[idx]
            cum = x & _PREC_MASK
            s = bisect_right(cdf, cum, 0, size) - 1
            start = cdf[s]
            x = (cdf[s + 1] - start) * (x >> PRECISION) + cum - start
            if x < RANS64_L:
                if p >= n:
                    raise BitstreamError(_PAST_END.format(i))
                x = (x << 32) | words[p]
                p += 1
            if s == size - 2:  # bypass mode: a count of nibbles, then the nibbles
                count = x & _BYPASS_MASK
                if count > MAX_BYPASS_WORDS:
                    raise BitstreamError(
                        f"symbol {i}: {count} bypass words announced, an encoder writes at most "
                        f"{MAX_BYPASS_WORDS}"
                    )
                for _ in range(count + 1):
                    x >>= BYPASS_BITS
                    if x < RANS64_L:
                        if p >= n:
                            raise BitstreamError(_PAST_END.format(i))
                        x = (x << 32) | words[p]
                        p += 1
        self._x, self._p = x, p

    def finished(self) -> bool:
        """Whether every word was read and the state is back to the encoder's initial one."""
        return self._p == len(self._words) and self._x == RANS64_L


_PAST_END = "symbol {}: the decoder would read past the end of the coder string"


def check_rans_string(
    data: bytes,
    indexes: Sequence[int],
    cdfs: Sequence[Sequence[int]],
    cdf_sizes: Sequence[int],
) -> None:
    """Raise :class:`BitstreamError` unless ``data`` is safe to decode and whole.

    Args:
        data: the coder string (bytes).
        indexes: the CDF index of each symbol to decode, in decoding order.
        cdfs: quantised CDFs, as CompressAI passes them to its decoder.
        cdf_sizes: the length of each CDF.
    """
    walker = RansWalker(data)
    walker.walk(indexes, cdfs, cdf_sizes)
    if not walker.finished():
        raise BitstreamError(
            "coder string does not end where its symbols do (words left over or a final state "
            "that is not the encoder's initial one): it is corrupt or was coded with other tables"
        )


class CheckedRansDecoder:
    """Drop-in for ``compressai.ans.RansDecoder`` that checks every string before decoding.

    ``decode_with_indexes`` checks the whole string (:func:`check_rans_string`);
    ``set_stream`` checks its length and ``decode_stream`` walks each group before the C++
    decoder decodes it, so no read ever passes the stream's end.
    """

    checks_bounds = True
    """Marker: this decoder never reads outside its input."""

    def __init__(self) -> None:
        from compressai.ans import RansDecoder

        self._inner = RansDecoder()
        self._walker: RansWalker | None = None

    def set_stream(self, string: bytes) -> None:
        self._walker = RansWalker(string)
        self._inner.set_stream(string)

    def decode_stream(self, indexes, cdfs, cdf_sizes, offsets):
        if self._walker is None:
            raise BitstreamError("decode_stream called before set_stream")
        walker, self._walker = self._walker, None  # unusable if the walk fails half-way
        walker.walk(indexes, cdfs, cdf_sizes)
        self._walker = walker
        return self._inner.decode_stream(indexes, cdfs, cdf_sizes, offsets)

    def decode_with_indexes(self, string, indexes, cdfs, cdf_sizes, offsets):
        check_rans_string(string, indexes, cdfs, cdf_sizes)
        return self._inner.decode_with_indexes(string, indexes, cdfs, cdf_sizes, offsets)


class CheckedCoder:
    """Stand-in for a CompressAI entropy model's ``_EntropyCoder``: checks before decoding.

    Encoding passes through unchanged; ``decode_with_indexes`` runs :func:`check_rans_string`
    with the very indexes and tables it is given, then CompressAI's decoder.
    """

    checks_bounds = True

    def __init__(self, inner: object) -> None:
        name = getattr(inner, "name", None)
        if name != "ans":
            raise ValueError(
                f"only CompressAI's 'ans' entropy coder can be checked, this model uses {name!r}: "
                "call compressai.set_entropy_coder('ans') before building the model"
            )
        self.inner = inner
        self.name = name

    def encode_with_indexes(self, *args, **kwargs):
        return self.inner.encode_with_indexes(*args, **kwargs)

    def decode_with_indexes(self, string, indexes, cdfs, cdf_sizes, offsets):
        check_rans_string(string, indexes, cdfs, cdf_sizes)
        return self.inner.decode_with_indexes(string, indexes, cdfs, cdf_sizes, offsets)


def harden_decoder(model: nn.Module) -> dict[str, int]:
    """Make every rANS decode of ``model`` check its string first; idempotent.

    Two places decode in entroguard: CompressAI entropy models (``EntropyModel.decompress``,
    the factorized prior), whose coder is wrapped here, per model; and the one-stream helper
    ``entroguard.codec.rans.StreamDecoder`` (the hyperprior), which builds
    ``compressai.ans.RansDecoder`` objects itself: its module's ``RansDecoder`` is replaced by
    :class:`CheckedRansDecoder` for the whole process (decoded values are unchanged; only the
    checks are added). A server calls this once at start-up.

    Returns ``{"entropy_models": wrapped now, "stream_decoder": 1 if replaced now else 0}``.
    """
    from compressai.entropy_models import EntropyModel

    wrapped = 0
    for module in model.modules():
        if not isinstance(module, EntropyModel) or isinstance(module.entropy_coder, CheckedCoder):
            continue
        precision = int(getattr(module, "entropy_coder_precision", PRECISION))
        if precision != PRECISION:
            raise ValueError(
                f"entropy coder precision {precision} is not supported: the server checks "
                f"{PRECISION}-bit rANS strings"
            )
        module.entropy_coder = CheckedCoder(module.entropy_coder)
        wrapped += 1
    return {"entropy_models": wrapped, "stream_decoder": int(_install_stream_decoder())}


def _install_stream_decoder() -> bool:
    try:
        from entroguard.codec import rans as rans_module
    except ImportError:
        return False
    current = getattr(rans_module, "RansDecoder", None)
    if current is None or getattr(current, "checks_bounds", False):
        return False
    rans_module.RansDecoder = CheckedRansDecoder
    return True


def is_hardened(model: nn.Module) -> bool:
    """Whether every rANS decode of ``model`` is checked (see :func:`harden_decoder`)."""
    from compressai.entropy_models import EntropyModel

    coders = [m.entropy_coder for m in model.modules() if isinstance(m, EntropyModel)]
    if not all(getattr(c, "checks_bounds", False) for c in coders):
        return False
    try:
        from entroguard.codec import rans as rans_module
    except ImportError:
        return True
    decoder = getattr(rans_module, "RansDecoder", None)
    return decoder is None or getattr(decoder, "checks_bounds", False)
