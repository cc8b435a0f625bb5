"""Measure what :mod:`entroguard.plan.costs` needs, on this machine, per image.

The device is stood for by one torch thread, the server by every thread of this machine. Times
are medians over images processed one at a time, after a warm-up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from entroguard.models.split import SplitClassifier
from entroguard.plan.costs import OptionCost
from entroguard.serve.uploads import DEFAULT_JPEG_QUALITY, _pil_image, encoded_size, to_uint8_hwc
from entroguard.threads import torch_threads

T = TypeVar("T")


def median_ms(fn: Callable[[T], object], items: Sequence[T], warmup: int = 3) -> float:
    """Median wall time (ms) of ``fn`` on each of ``items`` (images (1, C, H, W) or packets)."""
    for item in items[:warmup]:
        fn(item)
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _image_encoder(fmt: str, **options) -> Callable[[Tensor], int]:
    def encode(x: Tensor) -> int:
        return encoded_size(_pil_image(to_uint8_hwc(x)[0]), fmt, **options)

    return encode


@torch.no_grad()
def measure_costs(
    model: SplitClassifier, images: Tensor, *, server_threads: int | None = None
) -> list[OptionCost]:
    """Device, upload and server costs of local, offload (PNG, JPEG q90) and split inference.

    Args:
        model: the split model (its head runs on the device, its tail on the server).
        images: real test images (B, 3, H, W) in [0, 1]; every time is a median over them.
        server_threads: torch threads of the server (default: every core of this machine).
    """
    model.eval()
    packets = model.to_packets(images)
    png = _image_encoder("PNG")
    jpeg = _image_encoder("JPEG", quality=DEFAULT_JPEG_QUALITY)
    singles = images.split(1)
    with torch_threads(1):
        local_ms = median_ms(model, singles)
        head_ms = median_ms(model.to_packets, singles)
        png_ms, jpeg_ms = median_ms(png, singles), median_ms(jpeg, singles)
    with torch_threads(server_threads or torch.get_num_threads()):
        server_full_ms = median_ms(model, singles)
        tail_ms = median_ms(lambda p: model.from_packets([p]), packets)
    sizes = {"png": [png(x) for x in singles], "jpeg": [jpeg(x) for x in singles]}
    return [
        OptionCost("local", local_ms, 0.0, 0.0),
        OptionCost("offload_png", png_ms, float(np.mean(sizes["png"])), server_full_ms),
        OptionCost("offload_jpeg", jpeg_ms, float(np.mean(sizes["jpeg"])), server_full_ms),
        OptionCost("split", head_ms, float(np.mean([len(p) for p in packets])), tail_ms),
    ]
