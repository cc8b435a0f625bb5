"""The uncut networks the small split models are cut from: BottleFit's teachers.

An uncut network is a plain convolutional stem (image -> (width, 8, 8) features, stride 4) and
the very tail a split model of the same architecture runs on the server. BottleFit replaces the
stem by a bottleneck (encoder, codec, decoder), starts the student's tail from the teacher's,
and distils the teacher's features into it (:mod:`entroguard.train.recipes.bottlefit`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from entroguard.models.small import DEFAULT_OPTIONS, FASHION_MEAN, FASHION_STD, SMALL_TAILS

STAGES = 2
"""Tail modules whose outputs BottleFit's first stage distils (the next two stages)."""


def conv_stem(in_channels: int, hidden: int, width: int) -> nn.Sequential:
    """Image (B, in, H, W) -> features (B, width, H/4, W/4): the geometry of ``g_a`` + ``g_s``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 5, stride=2, padding=2, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, width, 5, stride=2, padding=2, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    )


class UncutClassifier(nn.Module):
    """A small architecture without a bottleneck: normalise, stem, tail.

    Args:
        arch: ``"resnet_s"``, ``"regnet_s"`` or ``"mobilenetv2_s"``.
        num_classes: classes of the classifier.
        hidden, width: the stem's channels; ``width`` is the tail's input width.
    """

    def __init__(
        self,
        arch: str,
        num_classes: int = 10,
        hidden: int = DEFAULT_OPTIONS["hidden"],
        width: int = DEFAULT_OPTIONS["width"],
    ) -> None:
        super().__init__()
        if arch not in SMALL_TAILS:
            raise ValueError(
                f"no uncut network for {arch!r}: choose one of {', '.join(SMALL_TAILS)}"
            )
        self.arch = arch
        self.options = {"num_classes": num_classes, "hidden": hidden, "width": width}
        self.stem = conv_stem(3, hidden, width)
        self.tail = SMALL_TAILS[arch](width, num_classes)
        self.register_buffer("mean", torch.tensor(FASHION_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(FASHION_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, x: Tensor) -> Tensor:
        """Images (B, 3, 32, 32) in [0, 1] -> the features at the split point (B, width, 8, 8)."""
        return self.stem((x - self.mean) / self.std)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes)."""
        return self.tail(self.features(x))


def stage_outputs(tail: nn.Module, features: Tensor, stages: int = STAGES) -> list[Tensor]:
    """Outputs of the first ``stages`` modules of the ``nn.Sequential`` ``tail`` on ``features``."""
    outputs = []
    for module in list(tail.children())[:stages]:
        features = module(features)
        outputs.append(features)
    return outputs
