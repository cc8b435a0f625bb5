"""What one model thread of this server can do, measured at start-up.

The per-client packet budget's default is derived from it: no client may use more than a
share of the server, whatever the bytes it sends (a few bytes of a small packet cost the
server as much decoding and tail time as a large one).
"""

from __future__ import annotations

import time

import torch

from entroguard.models.split import SplitClassifier

CAPACITY_PACKETS = 16
"""Packets decoded and classified per timing."""


@torch.no_grad()
def measure_packets_per_s(model: SplitClassifier, repeats: int = 3) -> float:
    """Packets per second one thread decodes and classifies (best of ``repeats``), for
    packets of smooth seeded images at the model's input size."""
    generator = torch.Generator().manual_seed(0)
    h, w = model.spec.input_size
    coarse = torch.rand(CAPACITY_PACKETS, 3, max(1, h // 4), max(1, w // 4), generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear").clamp(0, 1)
    packets = model.eval().to_packets(images)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.from_packets(packets)
        best = min(best, time.perf_counter() - t0)
    return CAPACITY_PACKETS / max(best, 1e-6)
