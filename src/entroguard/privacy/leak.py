"""``entroguard leak``: recover labels from what a split model sends, at every point.

Shadow data (the attacker's, labelled) and the victim's test images never overlap: by default
the attacker has the second half of the training set (which the victim's evaluation never uses)
and is scored on the test set; a shadow set drawn from the victim's test split is refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from tqdm.auto import tqdm

from entroguard.data.imageset import ImageSet
from entroguard.models.split import SplitClassifier
from entroguard.privacy.keyed import check_protection
from entroguard.privacy.points import POINTS, features_at_points
from entroguard.privacy.probes import PROBES, train_probe
from entroguard.privacy.protection_view import ProtectionView
from entroguard.privacy.side_channel import channel_bits, length_classifier_top1, packet_lengths
from entroguard.train.epochs import top1

VAL_FRACTION = 0.1
"""Share of the shadow set held out for the probes' early stopping."""


def default_shadow(train_set: ImageSet, n: int | None = None) -> ImageSet:
    """The second half of ``train_set`` (the first ``n`` of it when given)."""
    half = len(train_set) // 2
    end = len(train_set) if n is None else min(len(train_set), half + n)
    return ImageSet(train_set.name, "shadow", train_set.images[half:end],
                    train_set.labels[half:end], train_set.classes)  # fmt: skip


def _split(features: Tensor, labels: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    cut = len(labels) - max(1, int(len(labels) * VAL_FRACTION))
    return (features[:cut], labels[:cut]), (features[cut:], labels[cut:])


def _images(data: ImageSet) -> Tensor:
    return data.to_float(slice(0, len(data)))


def leak_rows(
    model: SplitClassifier,
    name: str,
    shadow: ImageSet,
    victim: ImageSet,
    *,
    points: tuple[str, ...] = POINTS,
    probes: tuple[str, ...] = PROBES,
    seed: int = 0,
    protection: str = "none",
    progress: bool = True,
) -> Iterator[dict]:
    """One row per (point, probe): the probe's top-1 on ``victim`` (0-1), with its held-out
    shadow accuracy and epochs; then the side channels and the references (chance, the model,
    and under a protection the victim's payload and top-1 through it).

    Under a ``protection`` the attacker is retrained against it: its shadow features go
    through the same protection with its own key and draws, the victim's with the victim's."""
    if shadow.split == victim.split or shadow.split == "test":
        raise ValueError(
            f"the attacker's shadow set is the {shadow.split!r} split: it must never contain the "
            "victim's test images; use the second half of the training set (default_shadow)"
        )
    keyed = ProtectionView(protection).keyed
    if keyed is not None:
        check_protection(model, keyed)
    s_images, v_images = _images(shadow), _images(victim)
    attacker, deployed = ProtectionView(protection, seed + 1), ProtectionView(protection, seed)
    s_feats = features_at_points(model, s_images, points, view=attacker)
    v_feats = features_at_points(model, v_images, points, view=deployed)
    base = {"model": name, "defense": protection, "n_shadow": len(shadow),
            "n_test": len(victim)}  # fmt: skip
    jobs = [(p, k) for p in points for k in probes if k != "cnn" or s_feats[p].dim() == 4]
    for point, kind in tqdm(jobs, desc=f"leak {name}", disable=not progress, leave=False):
        train, val = _split(s_feats[point], shadow.labels)
        result = train_probe(kind, train, val, (v_feats[point], victim.labels), seed=seed)
        yield base | {"point": point, "probe": kind, "top1": result.top1,
                      "val_top1": result.val_top1, "epochs": result.epochs,
                      "stopped_early": result.stopped_early}  # fmt: skip
    views = (attacker, deployed)
    yield from _side_channel_rows(model, base, shadow, victim, s_images, v_images, seed, views)
    yield base | {"point": "reference", "probe": "chance", "top1": 1 / len(victim.classes)}
    yield base | {"point": "reference", "probe": "model", "top1": top1(model, victim)}
    cost = victim_cost(model, v_images, victim.labels, deployed)
    yield base | {"point": "reference", "probe": "victim", "top1": cost.pop("victim_top1")} | cost


@torch.no_grad()
def victim_cost(
    model: SplitClassifier, images: Tensor, labels: Tensor, view: ProtectionView
) -> dict:
    """What the protection costs the victim, through real coding: mean payload bytes, top-1
    (``victim_top1``) and the share of predictions equal to the unprotected model's."""
    payload, agree, correct = [], 0, 0
    for x, y_true in zip(images.split(500), labels.split(500), strict=True):
        first = len(payload)
        y = model.analyze(x)
        strings = model.codec.compress(view.head_latent(y, first))
        payload += [sum(map(len, s)) for s in strings]
        y_hat = view.tail_latent(model.codec.decompress(strings, tuple(y.shape[-2:])), first)
        plain = model.classify(model.codec.quantize(y)).argmax(1)
        predicted = model.classify(y_hat).argmax(1)
        agree += int((predicted == plain).sum())
        correct += int((predicted == y_true).sum())
    n = len(images)
    return {"payload_bytes": sum(payload) / n, "agreement": agree / n, "victim_top1": correct / n}


def _side_channel_rows(model, base, shadow, victim, s_images, v_images, seed, views):
    attacker, deployed = views
    s_len = packet_lengths(model, s_images, view=attacker)
    v_len = packet_lengths(model, v_images, view=deployed)
    acc = length_classifier_top1(s_len, shadow.labels, v_len, victim.labels)
    yield base | {"point": "packet_length", "probe": "histogram", "top1": acc}
    s_bits = channel_bits(model, s_images, view=attacker)
    v_bits = channel_bits(model, v_images, view=deployed)
    train, val = _split(s_bits, shadow.labels)
    result = train_probe("mlp", train, val, (v_bits, victim.labels), seed=seed)
    yield base | {"point": "channel_bits", "probe": "mlp", "top1": result.top1,
                  "val_top1": result.val_top1, "epochs": result.epochs,
                  "stopped_early": result.stopped_early}  # fmt: skip


def run_leak(model: SplitClassifier, name: str, shadow: ImageSet, victim: ImageSet,
             **options) -> list[dict]:  # fmt: skip
    """All rows of :func:`leak_rows` as a list (seeded: the same inputs give the same rows)."""
    torch.manual_seed(options.get("seed", 0))
    return list(leak_rows(model, name, shadow, victim, **options))
