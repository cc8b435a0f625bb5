"""Simulate another machine: run a codec's decoder-side arithmetic through other float kernels.

The head and the tail of a split model run on different computers. Whatever their decoders
compute must not depend on which correct floating-point kernels a machine happens to use. This
module re-runs the decoder's choice of CDF indexes and means under other kernels on one machine:
oneDNN off, float64 weights, channels-last memory, one thread, CUDA when present. Each variant
starts from a fresh copy of the codec and re-derives what a fresh machine would derive from the
weights (:meth:`~entroguard.codec.LatentCodec.tables_changed`).

:func:`float_coding_params` is what packet format 1 did (the float ``h_s``, then CompressAI's
index rule); it is kept to measure what the integer hyper-synthesis fixed.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor

from entroguard.codec.hyperprior import MeanScaleHyperprior
from entroguard.threads import torch_threads

KERNEL_VARIANTS: tuple[str, ...] = (
    "default",
    "no_onednn",
    "float64",
    "channels_last",
    "one_thread",
    "cuda",
)
"""Names of the kernel variants; ``cuda`` is available only where a GPU is."""


def available_variants() -> list[str]:
    """The variants this machine can run (``cuda`` only with a GPU)."""
    return [v for v in KERNEL_VARIANTS if v != "cuda" or torch.cuda.is_available()]


@contextmanager
def kernel_variant(codec: MeanScaleHyperprior, variant: str) -> Iterator[
    tuple[MeanScaleHyperprior, Callable[[Tensor], Tensor]]
]:  # fmt: skip
    """A fresh copy of ``codec`` set up for ``variant``, and how to move inputs to it.

    Inside the ``with`` block the process-wide settings of the variant (oneDNN, threads) hold.
    """
    if variant not in KERNEL_VARIANTS:
        raise ValueError(f"unknown kernel variant {variant!r}: use one of {KERNEL_VARIANTS}")
    if variant == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("the cuda variant needs a GPU; see available_variants()")
    twin = copy.deepcopy(codec)
    move: Callable[[Tensor], Tensor] = lambda t: t  # noqa: E731
    if variant == "float64":
        twin = twin.double()
        move = lambda t: t.double()  # noqa: E731
    elif variant == "channels_last":
        twin = twin.to(memory_format=torch.channels_last)
        move = lambda t: t.contiguous(memory_format=torch.channels_last)  # noqa: E731
    elif variant == "cuda":
        twin = twin.cuda()
        move = lambda t: t.cuda()  # noqa: E731
    twin.tables_changed()  # what a fresh machine derives from the weights
    settings = {
        "no_onednn": _without_onednn(),
        "one_thread": torch_threads(1),
    }
    with settings.get(variant, nullcontext()):
        yield twin, move


@contextmanager
def _without_onednn() -> Iterator[None]:
    """oneDNN switched off. Setting its flags makes torch warn that TF32 on oneDNN needs an Intel
    GPU (it re-applies the TF32 flag it was given); nothing here asks for TF32, so that one
    warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


@torch.no_grad()
def float_coding_params(
    codec: MeanScaleHyperprior, z_symbols: Tensor, latent_hw: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Packet format 1's CDF indexes and means: the float ``h_s`` and CompressAI's index rule
    (count of scale-table entries below the lower-bounded scale)."""
    z_hat = z_symbols.to(codec._z_medians()) + codec._z_medians()
    scales, means = codec.gaussian_params(z_hat.contiguous(), latent_hw)
    gc = codec.gaussian_conditional
    table = gc.scale_table[:-1].to(scales)
    indexes = torch.bucketize(gc.lower_bound_scale(scales).contiguous(), table, right=False)
    return indexes.int(), means


@torch.no_grad()
def hyper_symbols(codec: MeanScaleHyperprior, y: Tensor) -> Tensor:
    """The hyper-latent symbols the encoder codes for the latent ``y`` (B, C, H, W)."""
    return torch.round(codec.h_a(y) - codec._z_medians())


@torch.no_grad()
def coding_params_under(
    codec: MeanScaleHyperprior,
    z_symbols: Tensor,
    latent_hw: tuple[int, int],
    variant: str = "default",
    *,
    arithmetic: str = "integer",
    batch: int = 1000,
) -> tuple[Tensor, Tensor]:
    """CDF indexes (int32) and means (float32), each (B, C, H, W) on the CPU, that a decoder
    computes from ``z_symbols`` (B, Cz, Hz, Wz) under ``variant``.

    ``arithmetic`` is ``"integer"`` (what is coded now) or ``"float"`` (packet format 1).
    """
    params = {"integer": MeanScaleHyperprior.coding_params, "float": float_coding_params}
    if arithmetic not in params:
        raise ValueError(f"arithmetic must be 'integer' or 'float', got {arithmetic!r}")
    indexes, means = [], []
    with kernel_variant(codec, variant) as (twin, move):
        for z in z_symbols.split(batch):
            idx, mean = params[arithmetic](twin, move(z), latent_hw)
            indexes.append(idx.cpu())
            means.append(mean.cpu().float())
    return torch.cat(indexes), torch.cat(means)


def count_differences(
    reference: tuple[Tensor, Tensor], other: tuple[Tensor, Tensor]
) -> dict[str, int]:
    """``{"indexes": n, "means": n, "elements": n}``: how many CDF indexes and means of
    ``other`` differ from ``reference`` (both from :func:`coding_params_under`)."""
    return {
        "indexes": int((reference[0] != other[0]).sum()),
        "means": int((reference[1] != other[1]).sum()),
        "elements": reference[0].numel(),
    }
