"""One model's analysis: does high-frequency content drive its rate?"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from entroguard.analysis.frequency import band_filtered, spearman_per_image, tv_map
from entroguard.defenses.rate_mask import bit_map
from entroguard.models.split import SplitClassifier

FRACTIONS = (0.05, 0.1, 0.25, 0.5)
#: Images whose maps :func:`analyze_model` returns for figures.
MAP_IMAGES = 8


def _payload_sum(model: SplitClassifier, images: Tensor) -> float:
    return float(np.sum(model.compress(images).payload_bytes()))


@torch.no_grad()
def rate_and_tv_maps(model: SplitClassifier, images: Tensor) -> tuple[Tensor, Tensor]:
    """The rate map (bits per image pixel) and the TV map of ``images`` (B, 3, H, W), both
    (B, H, W) at the image's resolution."""
    rate = bit_map(model, images)
    rate = rate.flatten(0, 1) if rate.dim() == 4 else rate  # (B, 1, H, W) -> (B, H, W)
    tv = tv_map(images)
    if rate.shape[-2:] != tv.shape[-2:]:
        rate = F.interpolate(rate.unsqueeze(1), size=tv.shape[-2:], mode="bilinear").squeeze(1)
    return rate, tv


@torch.no_grad()
def analyze_model(model: SplitClassifier, images: Tensor, batch_size: int = 256) -> dict:
    """Rate/TV rank correlation and band rates for ``images`` (B, 3, H, W) in [0, 1].

    Returns ``{"n", "spearman_mean", "spearman_std", "clean_payload_bytes", "bands":
    [{"fraction", "keep", "payload_bytes", "rate_change_pct"}], "maps": {"images", "rate",
    "tv"}}`` (maps as tensors of the first :data:`MAP_IMAGES` images, for figures). The rate
    map is the coder's bits per latent position on the image plane; the TV map is the local
    total variation at the same resolution. Payloads are means per image in bytes; images
    are processed ``batch_size`` at a time, so any number fits in memory.
    """
    n = int(images.shape[0])
    if n == 0:
        raise ValueError("analyze_model needs at least one image")
    rhos, maps = [], None
    conditions = [(f, keep) for f in FRACTIONS for keep in ("low", "high")]
    clean, filtered = 0.0, [0.0] * len(conditions)
    for start in range(0, n, batch_size):
        x = images[start : start + batch_size]
        rate, tv = rate_and_tv_maps(model, x)
        rhos.append(spearman_per_image(rate, tv))
        if maps is None:
            maps = {"images": x[:MAP_IMAGES], "rate": rate[:MAP_IMAGES], "tv": tv[:MAP_IMAGES]}
        clean += _payload_sum(model, x)
        for i, (fraction, keep) in enumerate(conditions):
            filtered[i] += _payload_sum(model, band_filtered(x, fraction, keep))
    rho = torch.cat(rhos)
    clean /= n
    bands = [
        {
            "fraction": fraction,
            "keep": keep,
            "payload_bytes": total / n,
            "rate_change_pct": 100.0 * (total / n / clean - 1.0),
        }
        for (fraction, keep), total in zip(conditions, filtered, strict=True)
    ]
    return {
        "n": n,
        "spearman_mean": float(rho.mean()),
        "spearman_std": float(rho.std()) if n > 1 else 0.0,
        "clean_payload_bytes": clean,
        "bands": bands,
        "maps": maps,
    }
