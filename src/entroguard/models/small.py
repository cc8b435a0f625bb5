"""The embedded-default architectures: three families for 32x32 RGB inputs.

Each is split early like sc2bench's entropic students: ``g_a`` takes the image to a
(latent_channels, 8, 8) latent (stride 4), ``g_s`` restores the features the rest of the
backbone expects, and the backbone's later stages run on the server. The families mirror the
paper's spread: a ResNet (basic residual blocks), a RegNet (Y blocks: grouped convolutions with
squeeze-excitation) and a MobileNetV2 (inverted residuals), all from torchvision's own blocks.
"""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.regnet import ResBottleneckBlock
from torchvision.models.resnet import BasicBlock

from entroguard.codec.rate_switched import RateSwitchedCodec
from entroguard.models.bottleneck import build_codec
from entroguard.models.slimmable import SLIM_OPTIONS, MemberEncoder, SlimmableSplitClassifier
from entroguard.models.split import SplitClassifier, SplitSpec
from entroguard.models.transforms import analysis_transform, synthesis_transform

INPUT_SIZE = (32, 32)
# Fashion-MNIST statistics after padding to 32x32 (the grey value is repeated on R, G and B).
FASHION_MEAN = (0.2190, 0.2190, 0.2190)
FASHION_STD = (0.3318, 0.3318, 0.3318)

DEFAULT_OPTIONS = {"latent_channels": 16, "hyper_channels": 8, "hidden": 32, "width": 48}


def _resnet_tail(width: int, num_classes: int) -> nn.Sequential:
    down = nn.Sequential(
        nn.Conv2d(width, 2 * width, 1, stride=2, bias=False), nn.BatchNorm2d(2 * width)
    )
    return nn.Sequential(
        BasicBlock(width, width),
        BasicBlock(width, 2 * width, stride=2, downsample=down),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


def _regnet_tail(width: int, num_classes: int) -> nn.Sequential:
    block = partial(
        ResBottleneckBlock,
        norm_layer=nn.BatchNorm2d,
        activation_layer=nn.ReLU,
        group_width=16,
        bottleneck_multiplier=1.0,
        se_ratio=0.25,
    )
    return nn.Sequential(
        block(width, width, 1),
        block(width, 2 * width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


def _mobilenet_tail(width: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        InvertedResidual(width, width, 1, expand_ratio=4),
        InvertedResidual(width, 2 * width, 2, expand_ratio=4),
        InvertedResidual(2 * width, 2 * width, 1, expand_ratio=4),
        nn.Conv2d(2 * width, 4 * width, 1, bias=False),
        nn.BatchNorm2d(4 * width),
        nn.ReLU6(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


SMALL_TAILS = {
    "resnet_s": _resnet_tail,
    "regnet_s": _regnet_tail,
    "mobilenetv2_s": _mobilenet_tail,
}


def build_small(arch: str, prior: str, num_classes: int = 10, **options: int) -> SplitClassifier:
    """One of the embedded-default split models for 32x32 RGB input.

    Args:
        arch: ``"resnet_s"``, ``"regnet_s"`` or ``"mobilenetv2_s"``.
        prior: ``"fp"``, ``"mshp"`` or ``"q8"``.
        num_classes: classes of the classifier.
        options: override ``DEFAULT_OPTIONS`` (latent_channels, hyper_channels, hidden, width).
    """
    if arch not in SMALL_TAILS:
        raise ValueError(f"unknown small arch {arch!r}: choose one of {', '.join(SMALL_TAILS)}")
    if "members" in options:
        return build_slimmable_small(arch, prior, num_classes, **options)
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; known: {sorted(DEFAULT_OPTIONS)}")
    opts = {**DEFAULT_OPTIONS, **options}
    spec = SplitSpec(
        arch=arch,
        prior=prior,
        num_classes=num_classes,
        input_size=INPUT_SIZE,
        mean=FASHION_MEAN,
        std=FASHION_STD,
        options=opts,
    )
    return SplitClassifier(
        spec,
        encoder=analysis_transform(3, opts["hidden"], opts["latent_channels"]),
        codec=build_codec(prior, opts["latent_channels"], opts["hyper_channels"]),
        decoder=synthesis_transform(opts["latent_channels"], opts["hidden"], opts["width"]),
        backbone_tail=SMALL_TAILS[arch](opts["width"], num_classes),
    )


def build_slimmable_small(
    arch: str, prior: str, num_classes: int = 10, **options: int
) -> SlimmableSplitClassifier:
    """A slimmable head (:mod:`entroguard.models.slimmable`) on a small architecture.

    Args:
        options: ``DEFAULT_OPTIONS`` and ``SLIM_OPTIONS`` overrides (members, rate_settings,
            member_hidden: the width of each member's analysis transform).
    """
    if prior not in ("fp", "mshp"):
        raise ValueError(
            f"a slimmable head needs an entropy-coded prior (fp or mshp), got {prior!r}"
        )
    unknown = set(options) - set(DEFAULT_OPTIONS) - set(SLIM_OPTIONS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; known: "
                         f"{sorted(DEFAULT_OPTIONS | SLIM_OPTIONS)}")  # fmt: skip
    opts = {**DEFAULT_OPTIONS, **SLIM_OPTIONS, **options}
    spec = SplitSpec(arch, prior, num_classes, INPUT_SIZE, FASHION_MEAN, FASHION_STD, opts)
    latent = opts["latent_channels"]
    members = [analysis_transform(3, opts["member_hidden"], latent) for _ in range(opts["members"])]
    codec = RateSwitchedCodec(
        latent, opts["rate_settings"], lambda: build_codec(prior, latent, opts["hyper_channels"])
    )
    return SlimmableSplitClassifier(
        spec,
        encoder=MemberEncoder(members),
        codec=codec,
        decoder=synthesis_transform(latent, opts["hidden"], opts["width"]),
        backbone_tail=SMALL_TAILS[arch](opts["width"], num_classes),
    )
