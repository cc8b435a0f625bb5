"""Features an eavesdropper (or a curious server) sees at each point of a split model.

Threat model: a passive eavesdropper captures packets and knows the public head and entropy
model (every device ships them), so it can decode any packet into the quantised latent; it has
labelled shadow data from the same distribution. Deeper points are what a compromised server
sees. Points, in data-flow order:

* ``latent``: the decoded latent (B, C, h, w): exactly what travels;
* ``g_s``: the synthesis transform's output, the tail's input features;
* ``stage1``, ``stage2``: after the tail's first and second modules;
* ``logits``: the classifier's output (B, K).
"""

from __future__ import annotations

import torch
from torch import Tensor

from entroguard.models.split import SplitClassifier
from entroguard.models.uncut import stage_outputs
from entroguard.privacy.protection_view import ProtectionView

POINTS: tuple[str, ...] = ("latent", "g_s", "stage1", "stage2", "logits")


@torch.no_grad()
def features_at_points(
    model: SplitClassifier,
    images: Tensor,
    points: tuple[str, ...] = POINTS,
    batch: int = 500,
    view: ProtectionView | None = None,
) -> dict[str, Tensor]:
    """``{point: (N, ...) float32}`` for ``images`` (N, 3, H, W) in [0, 1].

    The latent is the coder's quantised latent (what ``decompress`` returns for the packet).
    With ``view``, every point is what the observer sees under its protection: the protected
    latent that travels, and noised intermediate features where the protection noises them.
    """
    unknown = set(points) - set(POINTS)
    if unknown:
        raise ValueError(f"unknown points {sorted(unknown)}: choose from {', '.join(POINTS)}")
    model.eval()
    view = view or ProtectionView()
    out: dict[str, list[Tensor]] = {p: [] for p in points}
    start = 0
    for x in images.split(batch):
        y = model.analyze(x)
        y_hat = model.codec.quantize(y)
        seen = model.codec.quantize(view.head_latent(y, start))
        start += len(x)
        feats = {"latent": seen, "g_s": model.decoder(y_hat)}
        feats["stage1"], feats["stage2"] = stage_outputs(model.backbone_tail, feats["g_s"])
        feats["logits"] = model.backbone_tail(feats["g_s"])  # the noise is removed in the tail
        for name in ("g_s", "stage1", "stage2"):
            feats[name] = view.observed(name, feats[name])
        for p in points:
            out[p].append(feats[p].float().cpu())
    return {p: torch.cat(v) for p, v in out.items()}
