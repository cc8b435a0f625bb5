"""glibc's allocator set to keep freed memory instead of handing it back to the kernel.

The attacks and the hyperprior's coding allocate and free the same large tensors (megabytes:
a batch of latents times the noisy copies) at every step. With glibc's defaults each such
block is mapped from the kernel and unmapped again when freed, and each reuse pays for
zero-filled pages: on this project's 2-core machine the rate attack spent a third of its time in
the kernel. Raising the mmap threshold to its maximum (32 MiB on 64-bit glibc) and the trim
threshold to 1 GiB keeps the blocks in the process's heap for the next step: the same rate
attack ran 1.3-1.4x faster, its kernel time went from 0.9 s to 0.05 s, and its peak memory did
not grow (``benchmarks/allocator.py``). The results are unchanged: only where memory comes
from changes.

The command line and every worker process it starts call :func:`keep_freed_memory`; a Python
user of the library may call it too. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
"""glibc's largest mmap threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``)."""
TRIM_THRESHOLD_BYTES = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Set the thresholds (once per process); True when glibc accepted both."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # the mmap threshold first: setting the trim threshold alone stops glibc from raising the
    # mmap threshold by itself, and every large block would then be mapped afresh
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
