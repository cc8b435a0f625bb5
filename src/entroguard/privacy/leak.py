"""``entroguard leak``: recover labels from what a split model sends, at every point.

Shadow data (the attacker's, labelled) and the victim's test images never overlap: by default
the attacker has the second half of the training set (which the victim's evaluation never uses)
and is scored on the test set; a shadow set drawn from the victim's test split is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from entroguard.data.imageset import ImageSet
from entroguard.device import module_device
from entroguard.models.split import EncodedBatch, SplitClassifier
from entroguard.privacy.context import LeakContext
from entroguard.privacy.keyed import check_protection
from entroguard.privacy.points import POINTS
from entroguard.privacy.probes import PROBES, ProbeResult
from entroguard.privacy.protection_view import ProtectionView
from entroguard.privacy.side_channel import length_classifier_top1


def default_shadow(train_set: ImageSet, n: int | None = None) -> ImageSet:
    """The second half of ``train_set`` (the first ``n`` of it when given)."""
    half = len(train_set) // 2
    end = len(train_set) if n is None else min(len(train_set), half + n)
    return ImageSet(train_set.name, "shadow", train_set.images[half:end],
                    train_set.labels[half:end], train_set.classes)  # fmt: skip


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
    context: LeakContext | None = None,
) -> Iterator[dict]:
    """One row per (point, probe): the probe's top-1 on ``victim`` (0-1), with its held-out
    shadow accuracy and epochs; then the side channels and the references (chance, the model,
    and under a protection the victim's payload and top-1 through it).

    Under a ``protection`` the attacker is retrained against it: its shadow features go
    through the same protection with its own key and draws, the victim's with the victim's.
    ``context`` (:class:`LeakContext`) shares latents, features and probes between the
    protections measured on the same model and images."""
    own = context is None
    context = context or LeakContext(model, shadow, victim, points)
    try:
        _check(context, shadow, victim, points, protection)
        yield from _finish(_start(context, name, points, probes, protection, seed), progress)
    finally:
        if own:
            context.close()


def _check(context: LeakContext, shadow: ImageSet, victim: ImageSet, points, protection) -> None:
    _check_sets(shadow, victim)
    keyed = ProtectionView(protection).keyed
    if keyed is not None:
        check_protection(context.model, keyed)
    if context.sets["shadow"] is not shadow or context.sets["victim"] is not victim \
            or not set(points) <= set(context.points):  # fmt: skip
        raise ValueError("the leak context was made for other images or points")


@dataclass
class _Pending:
    """A protection's rows, in order, each with the probe (a future) that completes it."""

    desc: str
    rows: list[tuple[dict, Future | None]]


COST = {"linear": 1, "mlp": 3, "cnn": 12}
"""Rough training cost of a probe per feature element: the costliest are queued first, so
the workers do not wait on one long probe at the end."""


def _start(context: LeakContext, name: str, points, probes, protection: str,
           seed: int) -> _Pending:  # fmt: skip
    """Hand every probe of ``protection`` to the pool (costliest first), then measure the side
    channels and the victim's cost here while they train."""
    shadow, victim = context.sets["shadow"], context.sets["victim"]
    views = {"shadow": ProtectionView(protection, seed + 1),
             "victim": ProtectionView(protection, seed)}  # fmt: skip
    feats = {party: context.features(party, view) for party, view in views.items()}
    for party, view in views.items():
        feats[party]["channel_bits"] = context.bits(party, view)
    jobs = [(p, k) for p in points for k in probes if k != "cnn" or feats["shadow"][p].dim() == 4]
    jobs.append(("channel_bits", "mlp"))
    futures = {}
    for point, kind in sorted(jobs, key=lambda j: -COST[j[1]] * feats["shadow"][j[0]][0].numel()):
        futures[point, kind] = context.probe(kind, feats["shadow"][point],
                                             feats["victim"][point], seed)  # fmt: skip
    lengths = {party: context.lengths(party, view) for party, view in views.items()}
    by_length = length_classifier_top1(lengths["shadow"], shadow.labels, lengths["victim"],
                                       victim.labels)  # fmt: skip
    cost = victim_cost(context.model, context.encoded("victim", views["victim"]), victim.labels,
                       views["victim"], context.plain_predictions)  # fmt: skip
    base = {"model": name, "defense": protection, "n_shadow": len(shadow),
            "n_test": len(victim)}  # fmt: skip
    rows = [(base | {"point": p, "probe": k}, futures[p, k]) for p, k in jobs]
    rows += [
        (base | {"point": "packet_length", "probe": "histogram", "top1": by_length}, None),
        (base | {"point": "reference", "probe": "chance", "top1": 1 / len(victim.classes)}, None),
        (base | {"point": "reference", "probe": "model", "top1": context.model_top1}, None),
        (base | {"point": "reference", "probe": "victim", "top1": cost.pop("victim_top1")}
         | cost, None),
    ]  # fmt: skip
    return _Pending(f"leak {name} {protection}", rows)


def _finish(pending: _Pending, progress: bool) -> Iterator[dict]:
    """The rows, each as soon as its probe has trained."""
    for fields, future in tqdm(pending.rows, desc=pending.desc, disable=not progress,
                               leave=False):  # fmt: skip
        yield fields if future is None else fields | _probe_fields(future.result())


def _check_sets(shadow: ImageSet, victim: ImageSet) -> None:
    if shadow.split == victim.split or shadow.split == "test":
        raise ValueError(
            f"the attacker's shadow set is the {shadow.split!r} split: it must never contain the "
            "victim's test images; use the second half of the training set (default_shadow)"
        )


def _probe_fields(result: ProbeResult) -> dict:
    return {
        "top1": result.top1,
        "val_top1": result.val_top1,
        "epochs": result.epochs,
        "stopped_early": result.stopped_early,
    }


@torch.no_grad()
def victim_cost(model: SplitClassifier, encoded: list[EncodedBatch], labels: Tensor,
                view: ProtectionView, plain_predicted: Tensor) -> dict:  # fmt: skip
    """What the protection costs the victim, through real coding: the coder output ``encoded``
    of the head's latents as ``view``'s protection codes them
    (:meth:`LeakContext.encoded`), decoded and undone by the keyed tail: mean payload bytes,
    top-1 (``victim_top1``) against ``labels`` (N,), and the share of predictions equal to the
    unprotected model's ``plain_predicted`` (N,)."""
    predicted, payload, device = [], [], module_device(model)
    for batch in encoded:
        y_hat = view.tail_latent(model.decompress(batch).cpu(), len(payload))
        payload += batch.payload_bytes()
        predicted.append(model.classify(y_hat.to(device)).argmax(1).cpu())
    predicted = torch.cat(predicted)
    return {
        "payload_bytes": sum(payload) / len(payload),
        "agreement": float((predicted == plain_predicted).float().mean()),
        "victim_top1": float((predicted == labels).float().mean()),
    }


def run_leak(model: SplitClassifier, name: str, shadow: ImageSet, victim: ImageSet,
             protections: tuple[str, ...] = ("none",), **options) -> list[dict]:  # fmt: skip
    """All rows of :func:`leak_rows` for each of ``protections``, as a list, sharing one
    :class:`LeakContext` (``options``: :func:`leak_rows`'s, and ``workers`` for the probes
    when no ``context`` is given). Seeded: the same inputs give the same rows."""
    torch.manual_seed(options.get("seed", 0))
    context, workers = options.pop("context", None), options.pop("workers", None)
    own = context is None
    if own:
        context = LeakContext(model, shadow, victim, options.get("points", POINTS), workers)
    points = options.get("points", POINTS)
    probes, seed = options.get("probes", PROBES), options.get("seed", 0)
    try:
        for protection in protections:
            _check(context, shadow, victim, points, protection)
        # every protection's probes are queued before any is awaited: no idle workers between
        pending = [_start(context, name, points, probes, p, seed) for p in protections]
        return [row for p in pending for row in _finish(p, options.get("progress", True))]
    finally:
        if own:
            context.close()
