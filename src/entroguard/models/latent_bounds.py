"""What latents a head can produce at all: interval bounds of ``g_a`` over every image.

A packet is only a few hundred bytes, so an attacker can also craft coder strings with
symbols no image could ever make (1e8 and more; the coder's escape codes carry them). The tail
would decode and classify them. Interval bound propagation (IBP) through the head gives, for
each latent position, an interval that contains ``g_a((x - mean) / std)`` for **every** image
``x`` in [0, 1] (adversarial ones included): convolutions map a box to a box through
``W+``/``W-``, and a GDN's output ``x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)`` is at most
``|x_i| / sqrt(beta_i + gamma_ii x_i^2)`` in size, which grows with ``|x_i|``. The bound is
sound (no real packet is refused) and loose (a real latent sits far inside it), which is all a
check on untrusted input needs.

A slimmable head's latent is the mean of its first ``k`` members, so its box is the hull over
``k`` of the mean of the members' boxes; each rate setting then scales it by its gain before
quantisation and by its inverse gain after decoding (:class:`LatentCheck`). Heads with a module
this file cannot bound have no bounds, and their packets are not checked
(:func:`latent_bounds` returns None).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from compressai.layers import GDN
from torch import Tensor, nn

Box = tuple[Tensor, Tensor]


@torch.no_grad()
def latent_bounds(model) -> Box | None:
    """Per-position bounds ``(lower, upper)``, each (C, h, w) float64, of the head's latent
    over all images in [0, 1] at the model's input size; None when the head has a module
    this module cannot bound."""
    h, w = model.spec.input_size
    mean = model.mean.double().reshape(1, -1, 1, 1)
    std = model.std.double().reshape(1, -1, 1, 1)
    low = (torch.zeros(1, 3, h, w, dtype=torch.float64) - mean) / std
    high = (torch.ones(1, 3, h, w, dtype=torch.float64) - mean) / std
    box = _through(model.encoder, (low, high))
    return None if box is None else (box[0][0], box[1][0])


def _through(module: nn.Module, box: Box) -> Box | None:
    if isinstance(module, nn.Sequential):
        for child in module:
            box = _through(child, box)
            if box is None:
                return None
        return box
    if isinstance(module, nn.Conv2d):
        return _conv(module, box)
    if type(module) is GDN and not module.inverse:
        return _gdn(module, box)
    if isinstance(module, (nn.ReLU, nn.ReLU6, nn.Identity)):
        return module(box[0]), module(box[1])
    if type(module).__name__ == "MemberEncoder":  # the mean of the first k members, any k
        return _members(module.members, box)
    return None


def _members(members: nn.ModuleList, box: Box) -> Box | None:
    boxes = [_through(member, box) for member in members]
    if any(b is None for b in boxes):
        return None
    lows = torch.cumsum(torch.stack([b[0] for b in boxes]), 0)
    highs = torch.cumsum(torch.stack([b[1] for b in boxes]), 0)
    counts = torch.arange(1, len(boxes) + 1, dtype=lows.dtype).reshape(-1, 1, 1, 1, 1)
    return (lows / counts).amin(0), (highs / counts).amax(0)


def _conv(conv: nn.Conv2d, box: Box) -> Box:
    centre, radius = (box[1] + box[0]) / 2, (box[1] - box[0]) / 2
    weight = conv.weight.double()
    bias = None if conv.bias is None else conv.bias.double()
    args = (conv.stride, conv.padding, conv.dilation, conv.groups)
    mid = F.conv2d(centre, weight, bias, *args)
    spread = F.conv2d(radius, weight.abs(), None, *args)
    return mid - spread, mid + spread


def _gdn(gdn: GDN, box: Box) -> Box:
    low, high = box
    channels = low.shape[1]
    beta = gdn.beta_reparam(gdn.beta).double().reshape(1, channels, 1, 1)
    own = torch.diagonal(gdn.gamma_reparam(gdn.gamma).double()).reshape(1, channels, 1, 1)

    def reach(a: Tensor) -> Tensor:  # a / sqrt(beta_i + gamma_ii a^2) for a >= 0, increasing
        return a / torch.sqrt(beta + own * a * a)

    return -reach((-low).clamp(min=0)), reach(high.clamp(min=0))


@dataclass
class LatentCheck:
    """Where a head's decoded latents can lie: per rate setting (``None`` for a model with a
    single one), a box ``(low, high)`` of (C, h, w) float64 tensors in the decoded domain,
    quantisation and float32 rounding included."""

    boxes: dict[int | None, Box]

    def excess(self, y_hat: Tensor, rates: list[int | None]) -> Tensor:
        """Per image (B,), the largest distance by which ``y_hat`` (B, C, h, w), decoded at
        ``rates`` (one per image), lies outside its box; 0 where every value is inside."""
        low = torch.stack([self.boxes[r][0] for r in rates])
        high = torch.stack([self.boxes[r][1] for r in rates])
        y = y_hat.double()
        return torch.maximum((low - y).clamp(min=0), (y - high).clamp(min=0)).flatten(1).amax(1)


@torch.no_grad()
def latent_check(model) -> LatentCheck | None:
    """The :class:`LatentCheck` of ``model``'s head (None when it cannot be bounded)."""
    bounds = latent_bounds(model)
    if bounds is None:
        return None
    low, high = bounds
    codec = model.codec
    if not hasattr(codec, "decompress_at"):  # one setting: y_hat within half a step of y
        return LatentCheck({None: _widened(low - 0.5, high + 0.5)})
    boxes = {}
    for rate in range(codec.settings):  # round(y * gain) * inverse gain
        gain, inverse = (g.double().reshape(-1, 1, 1) for g in codec.gains(rate))
        boxes[rate] = _widened((low * gain - 0.5) * inverse, (high * gain + 0.5) * inverse)
    return LatentCheck(boxes)


def _widened(low: Tensor, high: Tensor) -> Box:
    """``(low, high)`` widened by a float32 rounding allowance."""
    slack = 1e-3 + 1e-4 * torch.maximum(low.abs(), high.abs())
    return low - slack, high + slack
