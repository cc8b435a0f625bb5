"""ImageNet split models (ResNet-50/101, RegNetY-6.4GF) and the sc2bench / torchvision importers.

Everything runs on seeded random weights; nothing is downloaded.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict

import pytest
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from safetensors.torch import save_file
from torch import nn
from torchvision.models import resnet50

from entroguard.errors import CheckpointError
from entroguard.models import SplitClassifier, architectures, build_model
from entroguard.models.imagenet import (
    entropic_student_g_a,
    entropic_student_g_s,
    entropic_student_h_a,
    entropic_student_h_s,
)
from entroguard.models.sc2bench_import import (
    load_sc2bench_checkpoint,
    load_torchvision_weights,
    sc2bench_state_dict,
)

ARCHS = ("resnet50", "resnet101", "regnety6.4gf")
PRIORS = ("fp", "mshp")
LATENT_CHANNELS = {"resnet50": 24, "resnet101": 24, "regnety6.4gf": 64}


def images(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` smooth-ish random 224x224 images in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 28, 28, generator=g)
    x = nn.functional.interpolate(coarse, size=(224, 224), mode="bilinear")
    return (x + 0.05 * torch.rand(n, 3, 224, 224, generator=g)).clamp(0, 1)


def seeded(arch: str, prior: str, seed: int = 0) -> SplitClassifier:
    torch.manual_seed(seed)
    model = build_model(arch, prior, 1000).eval()
    model.prepare_coding()
    return model


@pytest.fixture(scope="module")
def zoo():
    """Builds each (arch, prior) once per module."""
    cache: dict[tuple[str, str], SplitClassifier] = {}

    def get(arch: str, prior: str) -> SplitClassifier:
        if (arch, prior) not in cache:
            cache[arch, prior] = seeded(arch, prior)
        return cache[arch, prior]

    return get


# ------------------------------------------------------------------ builders
def test_registered():
    names = architectures()
    assert {"resnet50", "resnet101", "regnety6.4gf"} <= set(names)


HEAVY = pytest.mark.slow  # ResNet-101 and RegNetY-6.4GF forwards take seconds on a CPU


@pytest.mark.parametrize(
    "arch", [pytest.param(a, marks=HEAVY) if a != "resnet50" else a for a in ARCHS]
)
@pytest.mark.parametrize("prior", PRIORS)
def test_shapes_and_exact_round_trip(zoo, arch, prior):
    model = zoo(arch, prior)
    n = 2 if arch == "resnet50" else 1
    x = images(n, seed=1)
    with torch.no_grad():
        y = model.analyze(x)
    assert tuple(y.shape) == (n, LATENT_CHANNELS[arch], 55, 55)
    assert model.latent_hw == (55, 55)
    if prior == "mshp":
        assert model.codec.hyper_hw((55, 55)) == (14, 14)
        assert tuple(model.codec.h_a(y).shape) == (n, 16, 14, 14)

    encoded = model.compress(x)
    decoded = model.decompress(encoded)
    with torch.no_grad():
        assert torch.equal(decoded, model.codec.quantize(y))
        expected = model.classify(decoded)
    logits = model.from_packets(model.to_packets(x))
    assert logits.shape == (n, 1000)
    assert torch.equal(logits, expected)


def test_first_stage_shapes():
    """``g_s`` restores the first stage's output: ResNet layer1 and RegNet block1."""
    y = torch.zeros(1, 24, 55, 55)
    assert tuple(entropic_student_g_s((24, 512, 256, 256))(y).shape) == (1, 256, 56, 56)
    image = torch.zeros(1, 3, 224, 224)
    assert tuple(entropic_student_g_a((3, 96, 48, 24))(image).shape) == (1, 24, 55, 55)
    params = entropic_student_h_s(16, 24)(entropic_student_h_a(24, 16)(y))
    assert tuple(params.shape) == (1, 48, 55, 55)


def test_alias_and_options():
    torch.manual_seed(0)
    model = build_model("regnet_y_6_4gf", "fp", 10, bottleneck_channels=32)
    assert model.spec.arch == "regnety6.4gf"
    assert model.spec.options == {"bottleneck_channels": 32, "hyper_channels": 16}
    assert model.backbone_tail.fc.out_features == 10
    assert model.codec.channels == 32
    with pytest.raises(ValueError, match="unknown options"):
        build_model("resnet50", "fp", 1000, width=3)


# -------------------------------------------------------------- sc2bench layout
def _sc2bench_mirror(model: SplitClassifier) -> nn.Module:
    """A module tree named like sc2bench's ``SplittableResNet`` with its bottleneck layer."""
    b = model.codec.channels
    bottleneck = nn.Module()
    if model.spec.prior == "fp":
        bottleneck.encoder = entropic_student_g_a((3, 4 * b, 2 * b, b))
        bottleneck.decoder = entropic_student_g_s((b, 512, 256, 256))
        bottleneck.entropy_bottleneck = EntropyBottleneck(b)
    else:
        bottleneck.entropy_bottleneck = EntropyBottleneck(16)
        bottleneck.g_a = entropic_student_g_a((3, 4 * b, 2 * b, b))
        bottleneck.g_s = entropic_student_g_s((b, 512, 256, 256))
        bottleneck.h_a = entropic_student_h_a(b, 16)
        bottleneck.h_s = entropic_student_h_s(16, b)
        bottleneck.gaussian_conditional = GaussianConditional(None)
    net = resnet50(weights=None)
    return nn.Sequential(
        OrderedDict(
            bottleneck_layer=bottleneck,
            layer2=net.layer2,
            layer3=net.layer3,
            layer4=net.layer4,
            avgpool=net.avgpool,
            fc=net.fc,
        )
    )


@pytest.mark.parametrize("prior", PRIORS)
def test_sc2bench_layout_matches_sc2bench_module_names(zoo, prior):
    model = zoo("resnet50", prior)
    mirror = _sc2bench_mirror(model)
    exported = sc2bench_state_dict(model)
    assert set(exported) == set(mirror.state_dict())
    for key, value in mirror.state_dict().items():
        if value.numel():  # coder tables are empty until sc2bench's update()
            assert exported[key].shape == value.shape, key


@pytest.mark.parametrize(
    "arch,prior,legacy,suffix",
    [
        ("resnet50", "fp", False, ".pth"),
        ("resnet50", "mshp", True, ".pth"),
        pytest.param("regnety6.4gf", "mshp", False, ".safetensors", marks=HEAVY),
    ],
)
def test_load_sc2bench_checkpoint(zoo, tmp_path, arch, prior, legacy, suffix):
    original = zoo(arch, prior)
    sd = sc2bench_state_dict(original, legacy_names=legacy)
    eb_keys = [k for k in sd if ".entropy_bottleneck." in k]
    assert any("._matrix0" in k for k in eb_keys) == legacy
    assert any(".matrices.0" in k for k in eb_keys) != legacy
    path = tmp_path / f"student{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        loaded = load_sc2bench_checkpoint(path, arch, prior)
    else:
        args = argparse.Namespace(config="configs/x.yaml", world_size=1)
        torch.save({"model": sd, "optimizer": {"state": {}}, "args": args}, path)
        loaded = load_sc2bench_checkpoint(path, arch, prior, allow_pickle=True)

    assert not loaded.training
    assert loaded.spec == original.spec
    assert loaded.fingerprint == original.fingerprint
    x = images(1, seed=2)
    packets = original.to_packets(x)
    assert loaded.to_packets(x) == packets
    assert torch.equal(loaded.from_packets(packets), original.from_packets(packets))


def test_sc2bench_pickle_needs_consent_and_arch_mismatch_is_named(zoo, tmp_path):
    sd = sc2bench_state_dict(zoo("resnet50", "fp"))
    path = tmp_path / "resnet50-fp.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_sc2bench_checkpoint(path, "resnet50", "fp")
    with pytest.raises(CheckpointError, match="prior='fp'"):
        load_sc2bench_checkpoint(path, "resnet50", "mshp", allow_pickle=True)
    with pytest.raises(CheckpointError, match="regnety6.4gf/fp model: .*missing.*unexpected"):
        load_sc2bench_checkpoint(path, "regnety6.4gf", "fp", allow_pickle=True)
    with pytest.raises(CheckpointError, match="not found"):
        load_sc2bench_checkpoint(tmp_path / "nope.safetensors", "resnet50", "fp")


# ------------------------------------------------------------ torchvision weights
@pytest.fixture(scope="module")
def torchvision_resnet50_files(tmp_path_factory):
    torch.manual_seed(3)
    state = resnet50(weights=None).state_dict()
    folder = tmp_path_factory.mktemp("tv")
    old_style = {k: v.contiguous() for k, v in state.items() if "num_batches" not in k}
    save_file(old_style, str(folder / "r50.safetensors"))  # like torchvision's oldest files
    torch.save(state, folder / "resnet50-0676ba61.pth")
    return state, folder


@pytest.mark.parametrize("name", ["r50.safetensors", "resnet50-0676ba61.pth"])
def test_load_torchvision_weights(torchvision_resnet50_files, name):
    state, folder = torchvision_resnet50_files
    torch.manual_seed(0)
    model = build_model("resnet50", "mshp", 1000)
    encoder_before = model.encoder[0].weight.clone()
    loaded = load_torchvision_weights(model, folder / name, allow_pickle=name.endswith(".pth"))
    assert "backbone_tail.layer3.0.conv1.weight" in loaded
    assert not any(k.startswith(("encoder.", "decoder.", "codec.")) for k in loaded)
    assert torch.equal(model.backbone_tail.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    assert torch.equal(
        model.backbone_tail.layer3[5].bn3.running_var, state["layer3.5.bn3.running_var"]
    )
    assert torch.equal(model.backbone_tail.fc.weight, state["fc.weight"])
    assert torch.equal(model.encoder[0].weight, encoder_before)
    assert model.codec.tables_ready()


def test_torchvision_weights_errors(torchvision_resnet50_files):
    _, folder = torchvision_resnet50_files
    torch.manual_seed(0)
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_torchvision_weights(
            build_model("resnet50", "fp", 1000), folder / "resnet50-0676ba61.pth"
        )
    with pytest.raises(CheckpointError, match="num_classes=1000"):
        load_torchvision_weights(build_model("resnet50", "fp", 10), folder / "r50.safetensors")
    with pytest.raises(CheckpointError, match="resnet101 model: .*missing"):
        load_torchvision_weights(build_model("resnet101", "fp", 1000), folder / "r50.safetensors")


@HEAVY
def test_timm_regnety_064_weights_match_timm(tmp_path):
    """timm's ``regnety_064`` stages 2-4 and head, mapped onto torchvision's RegNet, compute the
    same function (sc2bench builds its RegNet students with timm)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(4)
    reference = timm.create_model("regnety_064", pretrained=False).eval()
    for module in reference.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-0.2, 0.2)
    path = tmp_path / "regnety_064.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = build_model("regnety6.4gf", "fp", 1000).eval()
    load_torchvision_weights(model, path)
    features = torch.randn(1, 144, 56, 56)  # the output of stage 1, which g_s reproduces
    with torch.no_grad():
        expected = reference.forward_head(reference.s4(reference.s3(reference.s2(features))))
        torch.testing.assert_close(model.backbone_tail(features), expected)
    exported = {k for k in sc2bench_state_dict(model) if not k.startswith("bottleneck_layer.")}
    timm_tail = {k for k in reference.state_dict() if not k.startswith(("stem.", "s1."))}
    assert exported == timm_tail
