"""What the bitstream leaks: seeded probes, a shadow set that never holds test images, exact
side channels, and the leak command's rows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from eg_testutil import seeded_model

from entroguard.data import load_dataset
from entroguard.data.imageset import ImageSet
from entroguard.privacy.leak import default_shadow, leak_rows
from entroguard.privacy.points import POINTS, features_at_points
from entroguard.privacy.probes import train_probe
from entroguard.privacy.side_channel import length_classifier_top1


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    return torch.randn(n, 4, 2, 2, generator=g) + labels.view(-1, 1, 1, 1).float(), labels


@pytest.mark.parametrize("kind", ["linear", "mlp", "cnn"])
def test_probes_are_seeded_and_learn(kind):
    train, val, test = _blobs(300, 0), _blobs(100, 1), _blobs(200, 2)
    a = train_probe(kind, train, val, test, num_classes=3, seed=5, patience_steps=100)
    b = train_probe(kind, train, val, test, num_classes=3, seed=5, patience_steps=100)
    assert a == b
    assert a.top1 > 0.8 and a.epochs >= 50  # 2 steps an epoch: at least 100 steps of patience


@pytest.mark.parametrize("bf16", [False, True])
def test_the_cnn_probe_learns_in_either_precision_and_is_seeded(bf16):
    train, val, test = _blobs(300, 0), _blobs(100, 1), _blobs(200, 2)
    a = train_probe("cnn", train, val, test, num_classes=3, seed=5, patience_steps=100, bf16=bf16)
    b = train_probe("cnn", train, val, test, num_classes=3, seed=5, patience_steps=100, bf16=bf16)
    fp32 = train_probe("cnn", train, val, test, num_classes=3, seed=5, patience_steps=100,
                       bf16=False)  # fmt: skip
    assert a == b
    assert a.top1 > 0.8 and a.top1 >= fp32.top1 - 0.02


def test_the_length_side_channel_is_the_majority_class_per_length():
    lengths = torch.tensor([10.0, 10, 10, 20, 20, 30])
    labels = torch.tensor([1, 1, 2, 0, 0, 2])
    test = torch.tensor([10.0, 20, 31, 14, 16])  # 31 -> 30; 14 -> 10; 16 -> 20
    assert length_classifier_top1(lengths, labels, test, torch.tensor([1, 0, 2, 1, 0])) == 1.0


def test_the_shadow_set_is_the_second_half_of_the_training_set_never_the_test_set():
    train = load_dataset("fashion-mnist", "train")
    shadow = default_shadow(train, 100)
    assert torch.equal(shadow.images, train.images[30_000:30_100])
    test = load_dataset("fashion-mnist", "test").subset(50)
    stolen = ImageSet(test.name, "test", test.images, test.labels, test.classes)
    with pytest.raises(ValueError, match="never contain the victim's test images"):
        next(leak_rows(seeded_model("resnet_s", "fp"), "m", stolen, test))


def test_the_latent_point_is_what_travels():
    model = seeded_model("resnet_s", "mshp")
    x = load_dataset("fashion-mnist", "test").to_float(slice(0, 4))
    feats = features_at_points(model, x)
    assert set(feats) == set(POINTS)
    assert torch.equal(
        feats["latent"], model.decompress(model.packets_to_batch(model.to_packets(x)))
    )
    assert torch.allclose(feats["logits"], model.from_packets(model.to_packets(x)))


@pytest.mark.slow
def test_leak_command_rows():
    out = subprocess.run(
        [sys.executable, "-m", "entroguard.cli", "leak", "--model", "resnet_s-fp-beta2.56",
         "--json", "--shadow-images", "600", "--test-images", "200", "--probes", "linear",
         "--points", "latent,logits"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = json.loads(out.stdout)
    assert {(r["point"], r["probe"]) for r in rows} >= {
        ("latent", "linear"), ("logits", "linear"), ("packet_length", "histogram"),
        ("channel_bits", "mlp"), ("reference", "chance"), ("reference", "model"),
    }  # fmt: skip
    for r in rows:
        assert {"model", "point", "probe", "defense", "top1"} <= set(r) and 0 <= r["top1"] <= 1
    latent = next(r for r in rows if r["point"] == "latent")
    assert latent["top1"] > 0.5  # the latent that travels gives the class away


def test_under_a_keyed_protection_the_latent_is_the_protected_one_and_deeper_points_are_not():
    from entroguard.privacy.keyed import KeyedPermutation
    from entroguard.privacy.protection_view import ProtectionView, nonce_for

    model = seeded_model("resnet_s", "fp")
    x = load_dataset("fashion-mnist", "test").to_float(slice(0, 4))
    plain = features_at_points(model, x)
    view = ProtectionView("keyed_permutation", seed=3)
    seen = features_at_points(model, x, view=view)
    y = model.analyze(x)
    expected = torch.stack([KeyedPermutation().protect(y[i], view.key, nonce_for(3, i))
                            for i in range(4)])  # fmt: skip
    assert torch.equal(seen["latent"], model.codec.quantize(expected))
    assert not torch.equal(seen["latent"], plain["latent"])
    for point in ("g_s", "stage1", "stage2", "logits"):
        assert torch.equal(seen[point], plain[point])
    capr = features_at_points(model, x, view=ProtectionView("capr_noise", seed=3))
    assert torch.equal(capr["latent"], plain["latent"]) and torch.equal(
        capr["logits"], plain["logits"]
    )
    assert not torch.equal(capr["stage1"], plain["stage1"])


def test_the_attacker_is_retrained_against_each_protection_with_its_own_key():
    model = seeded_model("resnet_s", "fp")
    train = load_dataset("fashion-mnist", "train")
    shadow = default_shadow(train, 300)
    victim = load_dataset("fashion-mnist", "test").subset(100)
    rows = {}
    for protection in ("none", "keyed_noise"):
        rows[protection] = list(leak_rows(model, "m", shadow, victim, points=("latent",),
                                          probes=("linear",), protection=protection,
                                          progress=False))  # fmt: skip
    cost = {p: next(r for r in rs if r["probe"] == "victim") for p, rs in rows.items()}
    assert cost["none"]["agreement"] == 1.0 and cost["keyed_noise"]["agreement"] == 1.0
    assert cost["keyed_noise"]["payload_bytes"] > cost["none"]["payload_bytes"]
    assert all(r["defense"] == "keyed_noise" for r in rows["keyed_noise"])
    from entroguard.privacy.protection_view import ProtectionView

    with pytest.raises(ValueError, match="unknown protection"):
        ProtectionView("rot13")


def test_a_shared_context_trains_a_probe_once_per_distinct_input_and_changes_no_number():
    from entroguard.privacy.context import LeakContext
    from entroguard.privacy.leak import run_leak

    model = seeded_model("resnet_s", "fp")
    shadow = default_shadow(load_dataset("fashion-mnist", "train"), 300)
    victim = load_dataset("fashion-mnist", "test").subset(100)
    options = {"points": ("latent", "g_s"), "probes": ("linear",), "progress": False}
    context = LeakContext(model, shadow, victim, options["points"], workers=1)
    shared = run_leak(model, "m", shadow, victim, ("none", "keyed_noise", "capr_noise"),
                      context=context, **options)  # fmt: skip
    alone = [row for p in ("none", "keyed_noise", "capr_noise")
             for row in run_leak(model, "m", shadow, victim, (p,), workers=1,
                                 **options)]  # fmt: skip
    assert shared == alone
    # none: latent, g_s, channel bits; keyed_noise: a new latent and new bits (its g_s is the
    # plain one); capr_noise: a new g_s only (its latent and bits are the plain ones)
    assert len(context._probes) == 3 + 2 + 1
    context.close()
    rows = {(r["defense"], r["point"]): r["top1"] for r in shared if r["probe"] == "linear"}
    assert rows["keyed_noise", "g_s"] == rows["none", "g_s"]
    assert rows["capr_noise", "latent"] == rows["none", "latent"]


def test_probes_in_worker_processes_give_what_one_process_gives():
    from entroguard.privacy.leak import run_leak

    model = seeded_model("resnet_s", "fp")
    shadow = default_shadow(load_dataset("fashion-mnist", "train"), 200)
    victim = load_dataset("fashion-mnist", "test").subset(60)
    options = {"points": ("latent", "g_s"), "probes": ("linear", "cnn"), "progress": False}
    here = run_leak(model, "m", shadow, victim, ("none", "capr_noise"), workers=1, **options)
    pooled = run_leak(model, "m", shadow, victim, ("none", "capr_noise"), workers=2, **options)
    assert here == pooled
