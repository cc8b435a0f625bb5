"""A compiled CPU kernel for the forward (no-gradient) TV iteration, built on first use.

The iteration of :mod:`entroguard.defenses.tv` on float32 images costs about 13 PyTorch
operations per step, each a pass over memory with its own dispatch; on small images (32x32) that
is what the time goes into, whatever the chunking. This module runs the same iteration as one
fused C loop: each step reads a pixel, its right and lower neighbours, its weight and its
fidelity target once, and writes the pixel and one row buffer. Lanes of a SIMD vector hold the
same pixel of ``G`` different planes (image channels), so every neighbour access is a whole
vector and the image borders cost no masks: ``G`` = 16 with AVX-512, 8 with AVX, 4 otherwise
(SSE2, NEON), through GCC/Clang vector extensions.

The only difference from the PyTorch iteration is how ``1 / sqrt(s)`` is computed: the
hardware's reciprocal square root estimate (AVX-512: relative error below 2^-14; AVX: 1.5 *
2^-12) refined by one Newton step, or, without such an instruction, the classic bit-level
estimate refined by three Newton steps; both are within a few float32 ulp (relative error
below 3e-7) of the correctly rounded value, so the outputs agree with the PyTorch solver to
about 1e-6 after 100 steps.

The source is compiled with the C compiler found at run time (``$CC``, else ``cc``, ``gcc``
or ``clang``; ``-O3 -march=native``) into a temporary folder, once per process (about 0.3 s),
and loaded with :mod:`ctypes`, which releases the GIL during the call: the planes are split
over ``torch.get_num_threads()`` threads. Without a working compiler, or with the environment
variable ``ENTROGUARD_TV_KERNEL=0``, :func:`available` is false and the caller falls back to
PyTorch operations.
"""

from __future__ import annotations

import ctypes
import functools
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from entroguard import cbuild

#: Set to ``0`` to never build nor use the kernel (the PyTorch solver runs instead).
DISABLE_ENV = "ENTROGUARD_TV_KERNEL"

_SOURCE = r"""
#include <stdint.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#define G 16
#elif defined(__AVX__)
#include <immintrin.h>
#define G 8
#else
#define G 4
#endif

typedef float vf __attribute__((vector_size(G * 4)));
typedef int32_t vi __attribute__((vector_size(G * 4)));

/* 1 / sqrt(x) for x > 0, to a few ulp. */
#if defined(__AVX512F__)
static inline vf rsq(vf x) {
    vf y = (vf)_mm512_rsqrt14_ps((__m512)x);
    return y * (1.5f - (0.5f * x) * (y * y));
}
#elif defined(__AVX__)
static inline vf rsq(vf x) {
    vf y = (vf)_mm256_rsqrt_ps((__m256)x);
    return y * (1.5f - (0.5f * x) * (y * y));
}
#else
static inline vf rsq(vf x) {
    vf y = (vf)(0x5f375a86 - ((vi)x >> 1));
    vf hx = 0.5f * x;
    y = y * (1.5f - hx * (y * y));
    y = y * (1.5f - hx * (y * y));
    y = y * (1.5f - hx * (y * y));
    return y;
}
#endif

int64_t tv_lanes(void) { return G; }

/* Floats of scratch that tv_solve_f32 needs for planes of h x w pixels. */
int64_t tv_scratch_floats(int64_t h, int64_t w) { return (3 * h * w + w) * G + 16; }

/* The TV iteration on `planes` planes of h x w pixels (float32, contiguous):
 *   u <- c u + cfw f + div(wk grad u / sqrt(|grad u|^2 + e2)),  u = f at the start,
 * forward differences with zero flux across the last column and row, `steps` steps, then
 * out = clamp(u, 0, 1). f, wk and out are (planes, h, w); they may not overlap. */
void tv_solve_f32(const float *restrict f, const float *restrict wk, float *restrict out,
                  float *restrict scratch, int64_t planes, int64_t h, int64_t w,
                  int64_t steps, float c, float cfw, float e2)
{
    const int64_t n = h * w;
    vf *u = (vf *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    vf *cf = u + n;
    vf *wv = cf + n;
    vf *pyu = wv + n; /* the flux in y of the row above */
    float *uf = (float *)u, *cff = (float *)cf, *wf = (float *)wv;
    const vf zero = {0};
    for (int64_t p0 = 0; p0 < planes; p0 += G) {
        const int64_t lanes = planes - p0 < G ? planes - p0 : G;
        for (int64_t l = 0; l < G; ++l) {
            const float *fp = f + (p0 + l) * n, *wp = wk + (p0 + l) * n;
            for (int64_t k = 0; k < n; ++k) {
                float fv = l < lanes ? fp[k] : 0.0f;
                uf[k * G + l] = fv;
                cff[k * G + l] = cfw * fv;
                wf[k * G + l] = l < lanes ? wp[k] : 0.0f;
            }
        }
        for (int64_t s = 0; s < steps; ++s) {
            for (int64_t j = 0; j < w; ++j) pyu[j] = zero;
            for (int64_t i = 0; i < h; ++i) {
                vf *ur = u + i * w;
                const vf *wr = wv + i * w, *cr = cf + i * w;
                const int64_t down = i < h - 1 ? w : 0; /* last row: gy = 0 */
                vf pxl = zero, uc = ur[0];
                for (int64_t j = 0; j < w; ++j) {
                    vf un = j < w - 1 ? ur[j + 1] : uc; /* last column: gx = 0 */
                    vf gx = un - uc, gy = ur[j + down] - uc;
                    vf q = wr[j] * rsq(gx * gx + gy * gy + e2);
                    vf px = gx * q, py = gy * q;
                    ur[j] = c * uc + cr[j] + ((px - pxl) + (py - pyu[j]));
                    pxl = px;
                    pyu[j] = py;
                    uc = un;
                }
            }
        }
        for (int64_t l = 0; l < lanes; ++l) {
            float *op = out + (p0 + l) * n;
            for (int64_t k = 0; k < n; ++k) {
                float v = uf[k * G + l];
                op[k] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
            }
        }
    }
}
"""


def _compilers() -> list[list[str]]:
    """Compiler command lines to try (:func:`entroguard.cbuild.compilers`)."""
    return cbuild.compilers()


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The loaded kernel, built on the first call; ``None`` when disabled or unbuildable."""
    if cbuild.switched_off(DISABLE_ENV):
        return None
    try:
        lib = cbuild.build(_SOURCE, "tv_kernel", cbuild.NATIVE_FLAGS, _compilers())
    except (RuntimeError, OSError) as error:
        warnings.warn(
            f"entroguard: could not build the TV kernel ({error}); the TV defences fall back "
            "to PyTorch operations (several times slower)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    lib.tv_lanes.restype = i64
    lib.tv_lanes.argtypes = []
    lib.tv_scratch_floats.restype = i64
    lib.tv_scratch_floats.argtypes = [i64, i64]
    lib.tv_solve_f32.restype = None
    lib.tv_solve_f32.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, i64, f32, f32, f32]
    return lib


def available() -> bool:
    """Whether the kernel is built (building it now if this is the first call)."""
    return _library() is not None


def lanes() -> int:
    """Planes per SIMD vector of the built kernel (16, 8 or 4); 0 when it is not available."""
    lib = _library()
    return int(lib.tv_lanes()) if lib is not None else 0


def supports(images: Tensor) -> bool:
    """Whether :func:`solve` can run on ``images``: float32 on the CPU, kernel available."""
    return images.dtype == torch.float32 and images.device.type == "cpu" and available()


def solve(f: Tensor, wk: Tensor, *, steps: int, c: float, cfw: float, e2: float) -> Tensor:
    """``steps`` steps of ``u <- c u + cfw f + div(wk grad u / sqrt(|grad u|^2 + e2))`` from
    ``u = f``, clamped to [0, 1] (the iteration of :func:`entroguard.defenses.tv.tv_denoise`
    with its constants folded in).

    Args:
        f: planes (P, H, W), float32 on the CPU (each image channel is one plane).
        wk: TV weight times the step factor per pixel (P, H, W), float32, >= 0.
        steps: number of steps.
        c: the factor of ``u``, ``1 / (1 + step * fidelity)``.
        cfw: the factor of ``f``, ``c * step * fidelity``.
        e2: the squared TV smoothing ``eps^2``.

    Returns:
        (P, H, W) float32 in [0, 1], a new tensor.
    """
    lib = _library()
    if lib is None or not supports(f):
        raise RuntimeError("the TV kernel is not available for these images")
    if f.dim() != 3 or wk.shape != f.shape:
        raise ValueError(f"need f and wk of one shape (P, H, W), got {f.shape} and {wk.shape}")
    f = f.contiguous()
    wk = wk.to(torch.float32).contiguous()
    out = torch.empty_like(f)
    planes, h, w = f.shape
    if planes == 0 or h == 0 or w == 0:
        return out
    group = int(lib.tv_lanes())
    groups = -(-planes // group)
    threads = max(1, min(torch.get_num_threads(), groups))
    bounds = [group * (groups * t // threads) for t in range(threads + 1)]
    bounds[-1] = planes
    scratch_floats = int(lib.tv_scratch_floats(h, w))
    scratch = torch.empty(threads, scratch_floats, dtype=torch.float32)

    def run(t: int) -> None:
        start, stop = bounds[t], bounds[t + 1]
        offset = start * h * w * 4  # bytes
        lib.tv_solve_f32(
            f.data_ptr() + offset,
            wk.data_ptr() + offset,
            out.data_ptr() + offset,
            scratch[t].data_ptr(),
            stop - start,
            h,
            w,
            steps,
            c,
            cfw,
            e2,
        )

    if threads == 1:
        run(0)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, range(threads)))
    return out
