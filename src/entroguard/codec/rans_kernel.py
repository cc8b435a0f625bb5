"""The rANS string check (:class:`entroguard.codec.rans.RansWalker`) as one compiled C loop.

The check replays CompressAI's decoder over a coder string without producing symbols, to
refuse before the C++ decoder runs a string it would read past the end of (CompressAI issue
#300). In Python it costs 0.2-0.35 us per symbol, a third of a hyperprior's decoding time; this
loop does the same walk at a few nanoseconds per symbol. Same rules, same refusals: the symbol
of a cumulative frequency is the last one whose CDF entry is at or below it (a binary search
over the table), a read past the last 32-bit word is refused, and so is a bypass count above 8
words, the most an encoder writes. Tested against the Python walk on valid, cut and random
strings (``tests/test_rans.py``).

Built on first use by :mod:`entroguard.cbuild`; without a compiler, or with
``ENTROGUARD_RANS_KERNEL=0``, :func:`available` is false and the Python walk runs.
"""

from __future__ import annotations

import ctypes
import functools
import warnings

from entroguard import cbuild

#: Set to ``0`` to never build nor use the kernel (the Python walk runs instead).
DISABLE_ENV = "ENTROGUARD_RANS_KERNEL"

#: Return codes of ``rans_walk``.
OK, PAST_END, BAD_BYPASS, BAD_INDEX = 0, 1, 2, 3

_SOURCE = r"""
#include <stdint.h>

/* Walk m symbols whose CDF tables are idx[k] into (cdf + start[i], size[i]); words is the
   string as native 32-bit words, *p the next word to read, *x the state. Returns 0, or 1 (a
   read past the end), 2 (a bypass count above 8, stored in *bad), 3 (an index outside the
   tables); *p and *x are written back in every case. */
int64_t rans_walk(const uint32_t *words, int64_t n_words, int64_t *p_io, uint64_t *x_io,
                  const int32_t *idx, int64_t m, const int32_t *cdf, const int64_t *start,
                  const int32_t *size, int64_t n_tables, int64_t *bad) {
    const uint64_t low = (uint64_t)1 << 31;
    uint64_t x = *x_io;
    int64_t p = *p_io, status = 0;
    for (int64_t k = 0; k < m; ++k) {
        int32_t i = idx[k];
        if (i < 0 || i >= n_tables) { status = 3; break; }
        const int32_t *c = cdf + start[i];
        int32_t n = size[i], lo = 0, hi = n - 1;
        int32_t cum = (int32_t)(x & 0xFFFF);
        while (hi - lo > 1) {  /* c[lo] <= cum < c[hi] */
            int32_t mid = (lo + hi) >> 1;
            if (c[mid] <= cum) lo = mid; else hi = mid;
        }
        x = (uint64_t)(c[lo + 1] - c[lo]) * (x >> 16) + (uint64_t)(cum - c[lo]);
        if (x < low) {
            if (p == n_words) { status = 1; break; }
            x = (x << 32) | words[p++];
        }
        if (lo == n - 2) {
            uint64_t count = x & 15;
            if (count > 8) { status = 2; *bad = (int64_t)count; break; }
            for (uint64_t j = 0; j <= count; ++j) {
                x >>= 4;
                if (x < low) {
                    if (p == n_words) { status = 1; goto done; }
                    x = (x << 32) | words[p++];
                }
            }
        }
    }
done:
    *x_io = x;
    *p_io = p;
    return status;
}
"""


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The loaded kernel, built on the first call; ``None`` when disabled or unbuildable."""
    if cbuild.switched_off(DISABLE_ENV):
        return None
    try:
        lib = cbuild.build(_SOURCE, "rans_kernel", cbuild.PORTABLE_FLAGS)
    except (RuntimeError, OSError) as error:
        warnings.warn(
            f"entroguard: could not build the rANS check kernel ({error}); coder strings are "
            "checked in Python (decoding a hyperprior's packets is about 1.5x slower)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    p_i64, p_u64 = ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_uint64)
    lib.rans_walk.restype = i64
    lib.rans_walk.argtypes = [ctypes.c_char_p, i64, p_i64, p_u64, ptr, i64, ptr, ptr, ptr, i64,
                              p_i64]  # fmt: skip
    return lib


def available() -> bool:
    """Whether the kernel is built (building it now if this is the first call)."""
    return _library() is not None


def walk(
    data: bytes, n_words: int, state: tuple[int, int], indexes, tables
) -> tuple[int, int, int, int]:
    """Run the compiled walk over ``indexes`` (int32 array, C order) into ``tables``' flat
    arrays from ``state`` = (next word, rANS state); returns (return code, next word, state,
    the refused bypass count)."""
    lib = _library()
    if lib is None:
        raise RuntimeError("the rANS check kernel is not available")
    entries, starts, lengths = tables
    p, x, bad = ctypes.c_int64(state[0]), ctypes.c_uint64(state[1]), ctypes.c_int64(0)
    code = lib.rans_walk(data, n_words, ctypes.byref(p), ctypes.byref(x), indexes.ctypes.data,
                         indexes.size, entries.ctypes.data, starts.ctypes.data,
                         lengths.ctypes.data, lengths.size, ctypes.byref(bad))  # fmt: skip
    return int(code), p.value, x.value, bad.value
