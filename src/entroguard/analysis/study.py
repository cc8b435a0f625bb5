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


def _payload(model: SplitClassifier, images: Tensor) -> float:
    return float(np.mean(model.compress(images).payload_bytes()))


@torch.no_grad()
def analyze_model(model: SplitClassifier, images: Tensor) -> dict:
    """Rate/TV rank correlation and band rates for ``images`` (B, 3, H, W) in [0, 1].

    Returns ``{"spearman_mean", "spearman_std", "clean_payload_bytes", "bands": [{"fraction",
    "keep", "payload_bytes", "rate_change_pct"}], "maps": {"images", "rate", "tv"}}`` (maps as
    tensors, for figures). The rate map is the coder's bits per latent position on the image
    plane; the TV map is the local total variation at the same resolution.
    """
    rate = bit_map(model, images)
    rate = rate.flatten(0, 1) if rate.dim() == 4 else rate  # (B, 1, H, W) -> (B, H, W)
    tv = tv_map(images)
    if rate.shape[-2:] != tv.shape[-2:]:
        rate = F.interpolate(rate.unsqueeze(1), size=tv.shape[-2:], mode="bilinear").squeeze(1)
    rho = spearman_per_image(rate, tv)
    clean = _payload(model, images)
    bands = []
    for fraction in FRACTIONS:
        for keep in ("low", "high"):
            payload = _payload(model, band_filtered(images, fraction, keep))
            bands.append(
                {
                    "fraction": fraction,
                    "keep": keep,
                    "payload_bytes": payload,
                    "rate_change_pct": 100.0 * (payload / clean - 1.0),
                }
            )
    return {
        "n": int(images.shape[0]),
        "spearman_mean": float(rho.mean()),
        "spearman_std": float(rho.std()),
        "clean_payload_bytes": clean,
        "bands": bands,
        "maps": {"images": images, "rate": rate, "tv": tv},
    }
