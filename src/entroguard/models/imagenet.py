"""ImageNet split models: ResNet-50, ResNet-101 and RegNetY-6.4GF with sc2bench bottlenecks.

Each backbone is split after its first stage like sc2bench's "entropic students" (Matsubara et
al., TMLR 2023): the stem and first stage are replaced by a learned bottleneck, ``g_a`` on the
device and ``g_s`` on the server, and ``g_s`` must reproduce the first stage's output
(ResNet: ``layer1``, 256 x 56 x 56; RegNetY-6.4GF: ``block1``, 144 x 56 x 56) for the rest of the
pretrained backbone. For a 224 x 224 image the latent is ``(B, 55, 55)`` with ``B = 24``
channels (ResNet) or 64 (RegNet); the hyperprior's hyper-latent is 16 x 14 x 14.

Everything is built offline with random weights; nothing is ever downloaded. Pretrained weights
come from files the user has: ``entroguard.models.sc2bench_import`` loads sc2bench checkpoints
and torchvision (or timm) classification weights.

The layers follow sc2bench's ``FPBasedResNetBottleneck`` and ``MSHPBasedResNetBottleneck``
exactly (convolutions without bias, CompressAI's ``GDN1``), so their checkpoints load as they are.
RegNetY-6.4GF is torchvision's ``RegNet`` with the parameters of timm's ``regnety_064``
(torchvision ships no 6.4GF variant), which has the same widths, depths, groups and
squeeze-excitation sizes.

Pass ``num_classes=1000`` for ImageNet (the registry's default is the embedded dataset's 10).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from compressai.layers import GDN1
from torch import nn
from torchvision.models import resnet50, resnet101
from torchvision.models.regnet import BlockParams, RegNet

from entroguard.codec import LatentCodec, MeanScaleHyperprior
from entroguard.models.bottleneck import PRIOR_NAMES, build_codec
from entroguard.models.registry import register
from entroguard.models.split import SplitClassifier, SplitSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = (224, 224)
IMAGENET_CLASSES = 1000


# --------------------------------------------------------------------- transforms
def entropic_student_g_a(channels: Sequence[int]) -> nn.Sequential:
    """sc2bench's encoder ``g_a``: image (B, c0, H, W) -> latent (B, c3, H/4 - 1, W/4 - 1).

    ``channels = (c0, c1, c2, c3)``; two stride-2 5x5 convolutions with GDN, then a 2x2
    convolution (224 -> 112 -> 56 -> 55).
    """
    c0, c1, c2, c3 = channels
    return nn.Sequential(
        nn.Conv2d(c0, c1, 5, stride=2, padding=2, bias=False),
        GDN1(c1),
        nn.Conv2d(c1, c2, 5, stride=2, padding=2, bias=False),
        GDN1(c2),
        nn.Conv2d(c2, c3, 2, stride=1, padding=0, bias=False),
    )


def entropic_student_g_s(channels: Sequence[int]) -> nn.Sequential:
    """sc2bench's decoder ``g_s``: latent (B, c0, h, w) -> features (B, c3, h + 1, w + 1).

    ``channels = (c0, c1, c2, c3)``; three 2x2 convolutions with inverse GDN (55 -> 56 -> 55 -> 56).
    """
    c0, c1, c2, c3 = channels
    return nn.Sequential(
        nn.Conv2d(c0, c1, 2, stride=1, padding=1, bias=False),
        GDN1(c1, inverse=True),
        nn.Conv2d(c1, c2, 2, stride=1, padding=0, bias=False),
        GDN1(c2, inverse=True),
        nn.Conv2d(c2, c3, 2, stride=1, padding=1, bias=False),
    )


def entropic_student_h_a(latent: int, hyper: int) -> nn.Sequential:
    """sc2bench's MSHP ``h_a``: latent (B, latent, 55, 55) -> hyper-latent (B, hyper, 14, 14)."""
    return nn.Sequential(
        nn.Conv2d(latent, hyper, 5, stride=2, padding=1, bias=False),
        nn.LeakyReLU(inplace=True),
        nn.Conv2d(hyper, hyper, 5, stride=2, padding=2, bias=False),
    )


def entropic_student_h_s(hyper: int, latent: int) -> nn.Sequential:
    """sc2bench's MSHP ``h_s``: hyper-latent (B, hyper, 14, 14) -> scales and means, each
    (B, latent, 55, 55), stacked on the channel axis (14 -> 29 -> 59 -> 55).
    """
    mid = hyper * 3 // 2
    return nn.Sequential(
        nn.ConvTranspose2d(hyper, hyper, 5, stride=2, padding=1, bias=False),
        nn.LeakyReLU(inplace=True),
        nn.ConvTranspose2d(hyper, mid, 5, stride=2, padding=1, bias=False),
        nn.LeakyReLU(inplace=True),
        nn.Conv2d(mid, 2 * latent, 5, stride=1, padding=0, bias=False),
    )


# ------------------------------------------------------------------ backbone tails
def _resnet_tail(factory: Callable[..., nn.Module], num_classes: int) -> nn.Sequential:
    net = factory(weights=None, num_classes=num_classes)
    return nn.Sequential(
        OrderedDict(
            layer2=net.layer2,
            layer3=net.layer3,
            layer4=net.layer4,
            avgpool=net.avgpool,
            flatten=nn.Flatten(1),
            fc=net.fc,
        )
    )


def regnet_y_6_4gf(num_classes: int = IMAGENET_CLASSES) -> RegNet:
    """torchvision ``RegNet`` with timm's ``regnety_064`` design (random weights).

    Stages: depths (2, 7, 14, 2), widths (144, 288, 576, 1296), group width 72, SE ratio 0.25.
    """
    params = BlockParams.from_init_params(
        depth=25, w_0=112, w_a=33.22, w_m=2.27, group_width=72, se_ratio=0.25
    )
    norm = partial(nn.BatchNorm2d, eps=1e-05, momentum=0.1)
    return RegNet(params, num_classes=num_classes, norm_layer=norm)


def _regnet_tail(num_classes: int) -> nn.Sequential:
    net = regnet_y_6_4gf(num_classes)
    trunk = net.trunk_output
    return nn.Sequential(
        OrderedDict(
            trunk_output=nn.Sequential(
                OrderedDict(block2=trunk.block2, block3=trunk.block3, block4=trunk.block4)
            ),
            avgpool=net.avgpool,
            flatten=nn.Flatten(1),
            fc=net.fc,
        )
    )


# ------------------------------------------------------------------ architectures
@dataclass(frozen=True)
class ImagenetArch:
    """How one backbone is split.

    Attributes:
        family: ``"resnet"`` or ``"regnet"`` (decides the sc2bench key layout).
        bottleneck_channels: default latent channels ``B``.
        g_a_multipliers: hidden widths of ``g_a`` as multiples of ``B`` (sc2bench's defaults).
        target_channels: channels ``T`` of the first stage's output, which ``g_s`` restores.
        tail: ``tail(num_classes)`` builds the backbone after the first stage.
    """

    family: str
    bottleneck_channels: int
    g_a_multipliers: tuple[int, int]
    target_channels: int
    tail: Callable[[int], nn.Sequential]


ARCHS: dict[str, ImagenetArch] = {
    "resnet50": ImagenetArch("resnet", 24, (4, 2), 256, partial(_resnet_tail, resnet50)),
    "resnet101": ImagenetArch("resnet", 24, (4, 2), 256, partial(_resnet_tail, resnet101)),
    "regnety6.4gf": ImagenetArch("regnet", 64, (1, 1), 144, _regnet_tail),
}
ALIASES = {"regnet_y_6_4gf": "regnety6.4gf", "regnety_064": "regnety6.4gf"}
HYPER_CHANNELS = 16


def canonical_arch(arch: str) -> str:
    """The registry name of an ImageNet architecture (resolves aliases)."""
    name = ALIASES.get(arch, arch)
    if name not in ARCHS:
        known = ", ".join([*ARCHS, *ALIASES])
        raise ValueError(f"unknown ImageNet architecture {arch!r}: choose one of {known}")
    return name


def build_imagenet(
    arch: str, prior: str, num_classes: int = IMAGENET_CLASSES, **options: int
) -> SplitClassifier:
    """A split ImageNet classifier with random weights (nothing is downloaded).

    Args:
        arch: ``"resnet50"``, ``"resnet101"`` or ``"regnety6.4gf"`` (alias ``"regnet_y_6_4gf"``).
        prior: ``"fp"`` (factorized prior) or ``"mshp"`` (mean-scale hyperprior).
        num_classes: classes of the classifier (1000 for ImageNet; the registry passes its own
            default of 10 unless told otherwise).
        options: ``bottleneck_channels`` (latent channels, default 24 for ResNets and 64 for
            RegNet) and ``hyper_channels`` (hyper-latent channels, default 16).

    Input: images (B, 3, 224, 224) in [0, 1], normalised inside with ImageNet statistics.
    """
    name = canonical_arch(arch)
    if prior not in PRIOR_NAMES:
        raise ValueError(f"unknown prior {prior!r}: choose one of {', '.join(PRIOR_NAMES)}")
    family = ARCHS[name]
    defaults = {"bottleneck_channels": family.bottleneck_channels, "hyper_channels": HYPER_CHANNELS}
    unknown = set(options) - set(defaults)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; known: {sorted(defaults)}")
    opts = {**defaults, **{k: int(v) for k, v in options.items()}}
    b, hyper, t = opts["bottleneck_channels"], opts["hyper_channels"], family.target_channels
    m1, m2 = family.g_a_multipliers
    spec = SplitSpec(
        arch=name,
        prior=prior,
        num_classes=num_classes,
        input_size=INPUT_SIZE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        options=opts,
    )
    codec: LatentCodec
    if prior == "mshp":
        codec = MeanScaleHyperprior(
            b, hyper, entropic_student_h_a(b, hyper), entropic_student_h_s(hyper, b)
        )
    else:
        codec = build_codec(prior, b, hyper)
    return SplitClassifier(
        spec,
        encoder=entropic_student_g_a((3, m1 * b, m2 * b, b)),
        codec=codec,
        decoder=entropic_student_g_s((b, 2 * t, t, t)),
        backbone_tail=family.tail(num_classes),
    )


for _name in (*ARCHS, "regnet_y_6_4gf"):
    register(_name, build_imagenet)
