"""The paper's Figure 5 with the defence's mechanism in view: the rate maps of the same images
clean, under the rate attack, and with the deployed object-aware TV applied to the attacked
images, on one colour scale.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entroguard.defenses.rate_mask import bit_map
from entroguard.models.split import SplitClassifier

#: The conditions, in the figure's column order.
CONDITIONS: tuple[str, ...] = ("clean", "attacked", "defended")


def defended_rate_maps(
    model: SplitClassifier, images: Tensor, *, eps: float = 8 / 255, seed: int = 0
) -> dict:
    """Rate maps of ``images`` (B, 3, H, W) in [0, 1] clean, after ``rate_pgd`` at ``eps``
    ([0, 1] pixel units, the paper's settings) and after the deployed ``object_tv`` on the
    attacked images.

    Returns ``{"eps", "defense", "conditions": {name: {"images" (B, 3, H, W), "rate" (B, H, W)
    bits per pixel, "payload_bytes" [B] from the rANS coder}}}``. Seeded by ``seed``.
    """
    from entroguard.defenses import OBJECT_TV_DEPLOYED, build_defense
    from entroguard.threats.attacks.rate_pgd import RatePGD

    generator = torch.Generator().manual_seed(seed)
    attacked = RatePGD(eps=eps)(model, images, generator=generator)
    defended = build_defense("object_tv", **OBJECT_TV_DEPLOYED)(model, attacked)
    out = {}
    for name, x in zip(CONDITIONS, (images, attacked, defended), strict=True):
        with torch.no_grad():
            rate = bit_map(model, x)[:, 0]  # (B, H, W) bits per image pixel
        out[name] = {"images": x, "rate": rate, "payload_bytes": model.compress(x).payload_bytes()}
    return {"eps": eps, "defense": {"object_tv": OBJECT_TV_DEPLOYED}, "conditions": out}


def payload_summary(maps: dict) -> dict:
    """The JSON-able part of :func:`defended_rate_maps`: ``{"n", "eps_255", "defense",
    "payload_bytes": {condition: mean bytes per image}}``."""
    conditions = maps["conditions"]
    n = len(conditions["clean"]["payload_bytes"])
    return {
        "n": n,
        "eps_255": round(maps["eps"] * 255, 6),
        "defense": maps["defense"],
        "payload_bytes": {k: sum(v["payload_bytes"]) / n for k, v in conditions.items()},
    }
