"""Weighted total-variation denoising by a fixed number of proximal gradient steps.

The energy (Rudin, Osher and Fatemi 1992, "Nonlinear total variation based noise removal
algorithms"), per image and channel, for the received image ``f`` and the estimate ``u``::

    E(u) = fidelity / 2 * ||u - f||^2 + sum_p w(p) * sqrt(dx(u)(p)^2 + dy(u)(p)^2 + eps^2)

with forward differences ``dx``, ``dy`` (zero across the last column / row: Neumann boundary),
a per-pixel TV weight ``w`` >= 0 and a smoothing ``eps`` > 0 that makes the isotropic TV
differentiable (it behaves like TV where ``|grad u| >> eps`` and like a quadratic smoother,
which diffuses small-amplitude noise, where ``|grad u| << eps``).

Each step is forward-backward splitting: an explicit gradient step on the TV term, then the
exact proximal step of the fidelity term (it pulls ``u`` toward the RECEIVED image ``f``)::

    u <- (u + step * div(w * grad u / sqrt(|grad u|^2 + eps^2)) + step * fidelity * f)
         / (1 + step * fidelity)

``fidelity = 0`` is plain TV descent (what the paper's published code really ran: it aliased
``u`` and ``f``, so its fidelity term was always zero). The fidelity step is unconditionally
stable; the TV step is stable when ``step * 8 * max(w) / eps < 2`` (the TV gradient is
``8 max(w) / eps``-Lipschitz), which :func:`check_stability` enforces. The estimate starts at
``f`` and is clamped to [0, 1] once, after the last step: the minimiser of ``E`` obeys the
maximum principle (it stays within the range of ``f``), so the box is inactive at the
solution and a per-step clamp would only cost time and block gradients.

Two implementations of the same iteration:

* :func:`tv_denoise`: functional, differentiable (what adaptive attacks unroll); with
  autograd on, the steps run in checkpointed segments so memory grows with
  ``steps / segment`` instead of ``steps``;
* :func:`tv_denoise_fast`: no autograd. Float32 images on the CPU run the fused compiled
  kernel of :mod:`entroguard.defenses.tv_kernel` (one pass over each pixel per step, channels
  of several images in the lanes of a SIMD vector); other dtypes and devices, or a machine
  without a C compiler, run the iteration in place on preallocated buffers, in chunks of
  images that fit the CPU cache. A batch of grey images stored as RGB (all three channels
  equal, as in the embedded Fashion-MNIST default) is solved on one channel and copied, which
  gives the same result because the energy is separable over channels and the weights are
  shared.

Both give the same values to float rounding (about 1e-6 after 100 steps); only
:func:`tv_denoise` records a gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from entroguard.defenses import tv_kernel

#: Elements per chunk of the fast solver (about 200 KB per float32 buffer).
CHUNK_ELEMENTS = 49_152
#: Steps per checkpointed segment of the differentiable solver.
SEGMENT = 10


def check_stability(step_size: float, max_weight: float, eps: float) -> None:
    """Raise ``ValueError`` unless the explicit TV step is stable: ``step * 8 w / eps < 2``."""
    if not step_size > 0 or not eps > 0:
        raise ValueError(f"step_size and eps must be > 0, got {step_size} and {eps}")
    if step_size * 8.0 * max_weight / eps >= 2.0:
        raise ValueError(
            f"unstable TV step: step_size * 8 * tv_weight / tv_eps = "
            f"{step_size * 8.0 * max_weight / eps:.3g} >= 2 (the iterates would oscillate and "
            "add high-frequency content); lower step_size or tv_weight, or raise tv_eps"
        )


def _weights(weights: Tensor | float, f: Tensor) -> Tensor:
    """``weights`` as a tensor broadcastable to ``f`` (B, C, H, W): (B or 1, 1 or C, H or 1,
    W or 1)."""
    w = torch.as_tensor(weights, dtype=f.dtype, device=f.device)
    while w.dim() < 4:
        w = w.unsqueeze(0)
    if (w < 0).any():
        raise ValueError("TV weights must be >= 0")
    return w


def _folded(step_size: float, fidelity: float) -> tuple[float, float, float]:
    """The iteration's constants, shared by every solver so that they agree: the factor of
    ``u`` (``c = 1 / (1 + step * fidelity)``), of ``f`` (``c * step * fidelity``) and of the
    weight (``c * step``)."""
    c = 1.0 / (1.0 + step_size * fidelity)
    return c, c * step_size * fidelity, c * step_size


def _steps(u: Tensor, cf: Tensor, wk: Tensor, c: float, e2: float, n: int) -> Tensor:
    """``n`` differentiable steps ``u <- c u + cf + div(wk grad u / |grad u|_eps)``."""
    for _ in range(n):
        gx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))
        gy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
        k = wk * torch.rsqrt(gx * gx + gy * gy + e2)
        px, py = gx * k, gy * k
        div = px - F.pad(px[..., :, :-1], (1, 0)) + py - F.pad(py[..., :-1, :], (0, 0, 1, 0))
        u = c * u + cf + div
    return u


def tv_denoise(
    images: Tensor,
    weights: Tensor | float,
    *,
    steps: int,
    step_size: float,
    fidelity: float,
    eps: float,
) -> Tensor:
    """Differentiable weighted TV denoising (see the module docstring for the iteration).

    Args:
        images: the received images ``f`` (B, C, H, W), float.
        weights: per-pixel TV weight ``w``: a float, or a tensor broadcastable to the images,
            e.g. (B, 1, H, W) shared by the channels.
        steps: number of steps (the output is the last iterate, clamped to [0, 1]).
        step_size: ``step`` of the iteration.
        fidelity: weight of ``||u - f||^2 / 2`` (>= 0).
        eps: TV smoothing, in pixel units.

    Returns:
        (B, C, H, W), differentiable with respect to ``images`` (and ``weights``).
    """
    f = images
    w = _weights(weights, f)
    c, cfw, ck = _folded(step_size, fidelity)
    cf = f * cfw
    wk = w * ck
    e2 = eps * eps
    u = f
    grad = torch.is_grad_enabled() and (f.requires_grad or wk.requires_grad)
    done = 0
    while done < steps:
        n = min(SEGMENT, steps - done)
        if grad:
            u = checkpoint(_steps, u, cf, wk, c, e2, n, use_reentrant=False)
        else:
            u = _steps(u, cf, wk, c, e2, n)
        done += n
    return u.clamp(0.0, 1.0)


def _solve_chunk(f: Tensor, wk: Tensor, c: float, cfw: float, e2: float, steps: int) -> Tensor:
    """The fast in-place iteration on one chunk ``f`` (N, C, H, W), ``wk`` broadcastable."""
    u = f.clone()
    gx = torch.zeros_like(u)
    gy = torch.zeros_like(u)
    n = torch.empty_like(u)
    e2t = torch.full_like(u, e2)
    cf = f * cfw
    for _ in range(steps):
        torch.sub(u[..., :, 1:], u[..., :, :-1], out=gx[..., :, :-1])
        torch.sub(u[..., 1:, :], u[..., :-1, :], out=gy[..., :-1, :])
        torch.addcmul(e2t, gx, gx, out=n)
        n.addcmul_(gy, gy).rsqrt_().mul_(wk)
        gx.mul_(n)
        gy.mul_(n)
        torch.add(cf, u, alpha=c, out=u)
        u.add_(gx)
        u[..., :, 1:].sub_(gx[..., :, :-1])
        u.add_(gy)
        u[..., 1:, :].sub_(gy[..., :-1, :])
    return u.clamp_(0.0, 1.0)


@torch.no_grad()
def tv_denoise_fast(
    images: Tensor,
    weights: Tensor | float,
    *,
    steps: int,
    step_size: float,
    fidelity: float,
    eps: float,
) -> Tensor:
    """Same result as :func:`tv_denoise` (to float rounding), without autograd, faster.

    ``weights`` must not vary over channels (shape (B or 1, 1, H or 1, W or 1), or a float)
    for the grey-image shortcut; a per-channel weight is accepted and disables it.
    """
    f = images.detach()
    if f.numel() == 0:
        return f.clone()
    w = _weights(weights, f)
    if w.shape[0] not in (1, f.shape[0]):
        raise ValueError(f"weights of shape {tuple(w.shape)} do not fit images {tuple(f.shape)}")
    c, cfw, ck = _folded(step_size, fidelity)
    wk = (w * ck).expand(f.shape[0], *w.shape[1:])
    grey = (
        f.shape[1] > 1
        and wk.shape[1] == 1
        and all(torch.equal(f[:, 0], f[:, i]) for i in range(1, f.shape[1]))
    )
    work = f[:, :1] if grey else f
    if tv_kernel.supports(work):
        planes = work.reshape(-1, *work.shape[2:])
        wk_planes = wk.expand_as(work).reshape(planes.shape)
        out = tv_kernel.solve(planes, wk_planes, steps=steps, c=c, cfw=cfw, e2=eps * eps)
        out = out.view_as(work)
    else:
        chunk = max(1, CHUNK_ELEMENTS // max(1, work[0].numel()))
        out = torch.empty_like(work)
        for start in range(0, f.shape[0], chunk):
            part = slice(start, start + chunk)
            out[part] = _solve_chunk(work[part].contiguous(), wk[part], c, cfw, eps * eps, steps)
    if grey:
        return out.expand_as(f).contiguous()
    return out
