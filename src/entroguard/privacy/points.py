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

from entroguard.device import module_device
from entroguard.models.split import SplitClassifier
from entroguard.models.uncut import stage_outputs
from entroguard.privacy.protection_view import ProtectionView

POINTS: tuple[str, ...] = ("latent", "g_s", "stage1", "stage2", "logits")


def _check_points(points: tuple[str, ...]) -> None:
    unknown = set(points) - set(POINTS)
    if unknown:
        raise ValueError(f"unknown points {sorted(unknown)}: choose from {', '.join(POINTS)}")


@torch.no_grad()
def head_latents(model: SplitClassifier, images: Tensor, batch: int = 500) -> Tensor:
    """The head's continuous latents ``g_a(x)``, (N, C, h, w) float32, for ``images``
    (N, 3, H, W) in [0, 1]."""
    model.eval()
    return torch.cat([model.analyze(x).float().cpu() for x in images.split(batch)])


@torch.no_grad()
def tail_features(
    model: SplitClassifier, latents: Tensor, points: tuple[str, ...] = POINTS, batch: int = 500
) -> dict[str, Tensor]:
    """``{point: (N, ...) float32}`` of the unprotected model from its head ``latents``; the
    latent point is the coder's quantised latent (what ``decompress`` returns)."""
    _check_points(points)
    model.eval()
    out: dict[str, list[Tensor]] = {p: [] for p in points}
    device = module_device(model)
    for y in latents.split(batch):
        feats = {"latent": model.codec.quantize(y.to(device))}
        feats["g_s"] = model.decoder(feats["latent"])
        feats["stage1"], feats["stage2"] = stage_outputs(model.backbone_tail, feats["g_s"])
        feats["logits"] = model.backbone_tail(feats["g_s"])
        for p in points:
            out[p].append(feats[p].float().cpu())
    return {p: torch.cat(v) for p, v in out.items()}


@torch.no_grad()
def view_features(
    model: SplitClassifier, coded: Tensor, plain: dict[str, Tensor], view: ProtectionView,
    batch: int = 500,
) -> dict[str, Tensor]:  # fmt: skip
    """What an observer under ``view``'s protection sees, from the latents the head codes
    under it (``coded``: :meth:`ProtectionView.protect_all` of the head's latents) and the
    unprotected features ``plain`` (:func:`tail_features`): the protected latent that travels,
    and noised intermediate features where the protection noises them. A point the protection
    leaves alone is ``plain``'s own tensor."""
    seen = dict(plain)
    if "latent" in plain and view.keyed is not None:
        device = module_device(model)
        seen["latent"] = torch.cat([model.codec.quantize(y.to(device)).float().cpu()
                                    for y in coded.split(batch)])  # fmt: skip
    for name in ("g_s", "stage1", "stage2"):
        if name in plain:
            seen[name] = view.observed(name, plain[name])
    return seen


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
    latent that travels, and noised intermediate features where the protection noises them
    (the tail removes its noise, so the logits are the model's own).
    """
    _check_points(points)
    view = view or ProtectionView()
    latents = head_latents(model, images, batch)
    plain = tail_features(model, latents, points, batch)
    return view_features(model, view.protect_all(latents, batch), plain, view, batch)
