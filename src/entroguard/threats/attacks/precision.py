"""The arithmetic an attack's forward pass runs in: float32, bfloat16 autocast or TF32.

Lower precision makes each step cheaper on hardware built for it (bfloat16 on GPUs and on CPUs
with AVX512-BF16 or AMX, TF32 on NVIDIA Ampere and later) and changes only the direction the
step takes, not the budget: the projection and the adversarial image stay float32. Whether an
attack keeps its strength is measured, not assumed (``benchmarks/attacks.py`` prints the
inflation each precision reaches; ``tests/threats/test_attacks.py`` holds the 1-point check).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

Precision = Literal["float32", "bf16", "tf32"]
PRECISIONS: tuple[str, ...] = ("float32", "bf16", "tf32")


def check_precision(precision: str) -> Precision:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ``ValueError`` naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision  # type: ignore[return-value]


@contextlib.contextmanager
def attack_precision(precision: Precision, device: torch.device) -> Iterator[None]:
    """Run the block's forward pass in ``precision`` on ``device``.

    ``bf16``: :func:`torch.autocast` to bfloat16 (convolutions and matrix products in bf16,
    reductions kept in float32 by autocast's rules). ``tf32``: float32 tensors, matrix products
    and convolutions in TF32 on CUDA (nothing changes on the CPU); the global flags are restored
    on exit. ``float32``: unchanged.
    """
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
        return
    if precision != "tf32":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
