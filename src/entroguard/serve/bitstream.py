"""Check untrusted rANS strings before CompressAI's C++ decoder reads them.

CompressAI's ``RansDecoder.decode_with_indexes`` trusts its input: it reads 32-bit words
forward from the string without looking at its length, and a corrupt string (or a crafted
one, e.g. all ``0xff`` bytes behind a valid packet header and checksum) sends it far past the
end of the buffer, which kills the process with a segmentation fault (CompressAI issue #300).
A server that decodes packets from the network must not let that happen.

:func:`check_rans_string` replays the decoder's state machine in pure Python with exactly the
decoder's integer arithmetic (64-bit state, 16-bit precision, 4-bit bypass words, renormalise
below 2**31), without producing symbols, and rejects the string unless:

* its length is a whole number of 32-bit words, at least 2 (the encoder's flushed state);
* every word the decoder would read lies inside the string;
* every bypass-coded value announces at most 8 nibbles (an encoder never writes more: the
  raw value is 32 bits), so no ``while`` loop of the decoder runs away;
* decoding ends exactly at the last word, in the encoder's initial state ``2**31`` (rANS
  decoding is the exact mirror of encoding, so every string an encoder wrote passes).

:func:`harden_decoder` wraps each CompressAI entropy model's coder so that every
``decode_with_indexes`` call is checked with the very indexes and tables it is given, which
covers every codec (factorized prior, hyperprior and any later one) without copying its
decompression logic. A rejected string raises :class:`BitstreamError`.
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


def check_rans_string(
    data: bytes,
    indexes: Sequence[int],
    cdfs: Sequence[Sequence[int]],
    cdf_sizes: Sequence[int],
) -> None:
    """Raise :class:`BitstreamError` unless ``data`` is safe and whole for these tables.

    Args:
        data: the coder string (bytes).
        indexes: the CDF index of each symbol to decode, in decoding order.
        cdfs: quantised CDFs (each starts at 0 and reaches 2**16 at ``cdf_sizes[i] - 1``;
            entries past that are padding), as CompressAI passes them to its decoder.
        cdf_sizes: the length of each CDF.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise BitstreamError(f"coder string must be bytes, got {type(data).__name__}")
    n_bytes = len(data)
    if n_bytes % 4 or n_bytes < 8:
        raise BitstreamError(
            f"coder string of {n_bytes} bytes is not a whole number (>= 2) of 32-bit words"
        )
    words = struct.unpack(f"<{n_bytes // 4}I", data)
    n = len(words)
    n_cdfs = len(cdfs)
    x = words[0] | (words[1] << 32)
    p = 2
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
                raise BitstreamError(f"symbol {i}: the decoder would read past the string's end")
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
                        raise BitstreamError(
                            f"symbol {i}: the decoder would read past the string's end"
                        )
                    x = (x << 32) | words[p]
                    p += 1
    if p != n or x != RANS64_L:
        raise BitstreamError(
            f"coder string does not end where its symbols do ({n - p} of {n} words left over, "
            "final state not the encoder's initial state): it is corrupt or was coded with "
            "other tables"
        )


class CheckedCoder:
    """A CompressAI ``_EntropyCoder`` stand-in that checks strings before decoding them.

    Encoding is passed through unchanged; ``decode_with_indexes`` runs
    :func:`check_rans_string` first with the same arguments.
    """

    def __init__(self, inner: object) -> None:
        name = getattr(inner, "name", None)
        if name != "ans":
            raise ValueError(
                f"only CompressAI's 'ans' entropy coder can be checked, this model uses {name!r}: "
                "set compressai.set_entropy_coder('ans') before building the model"
            )
        self.inner = inner
        self.name = name

    def encode_with_indexes(self, *args, **kwargs):
        return self.inner.encode_with_indexes(*args, **kwargs)

    def decode_with_indexes(self, string, indexes, cdfs, cdf_sizes, offsets):
        check_rans_string(string, indexes, cdfs, cdf_sizes)
        return self.inner.decode_with_indexes(string, indexes, cdfs, cdf_sizes, offsets)


def harden_decoder(model: nn.Module) -> int:
    """Make every CompressAI entropy model inside ``model`` check strings before decoding.

    Idempotent; returns the number of entropy models wrapped now. Models whose coder precision
    is not 16 bits are refused (the check replays 16-bit arithmetic).
    """
    from compressai.entropy_models import EntropyModel

    wrapped = 0
    for module in model.modules():
        if not isinstance(module, EntropyModel) or isinstance(module.entropy_coder, CheckedCoder):
            continue
        if int(getattr(module, "entropy_coder_precision", PRECISION)) != PRECISION:
            raise ValueError(
                f"entropy coder precision {module.entropy_coder_precision} is not supported: "
                f"the server checks {PRECISION}-bit rANS strings"
            )
        module.entropy_coder = CheckedCoder(module.entropy_coder)
        wrapped += 1
    return wrapped


def is_hardened(model: nn.Module) -> bool:
    """Whether every entropy model inside ``model`` checks strings before decoding."""
    from compressai.entropy_models import EntropyModel

    models = [m for m in model.modules() if isinstance(m, EntropyModel)]
    return bool(models) and all(isinstance(m.entropy_coder, CheckedCoder) for m in models)
