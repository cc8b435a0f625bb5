"""Label-recovery probes: linear, MLP and small CNN, trained until early stopping.

A probe that is cut short under-reports leakage, the one error a privacy tool must not make:
every probe trains until its held-out shadow accuracy has not improved for ``patience`` epochs,
and at least ``patience_steps`` optimiser steps (so a small shadow set is not stopped after a
handful of steps), or ``max_epochs`` (reported when reached); the best epoch's weights are kept.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PROBES: tuple[str, ...] = ("linear", "mlp", "cnn")
BF16_PROBES: tuple[str, ...] = ("mlp", "cnn")
"""Probes whose forward pass runs under bfloat16 autocast where the CPU has native kernels."""


def build_probe(kind: str, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A probe of ``kind`` for features of ``shape`` (without the batch axis)."""
    flat = int(torch.tensor(shape).prod())
    if kind == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(flat, num_classes))
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(flat, 256), nn.ReLU(), nn.Dropout(0.2),
                             nn.Linear(256, num_classes))  # fmt: skip
    if kind == "cnn":
        if len(shape) != 3:
            raise ValueError("the cnn probe needs (C, H, W) features")
        return nn.Sequential(
            nn.Conv2d(shape[0], 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1, stride=2), nn.BatchNorm2d(64), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
        )  # fmt: skip
    raise ValueError(f"unknown probe {kind!r}: choose one of {', '.join(PROBES)}")


@cache
def native_bf16() -> bool:
    """Whether this CPU runs oneDNN's bfloat16 kernels natively (AVX512-BF16 or AMX): there
    the MLP and CNN probes train 1.4-1.8x faster under bfloat16 autocast and no weaker
    (measured in docs/privacy.md); elsewhere bfloat16 is emulated and slower, so probes stay
    float32."""
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


@dataclass
class ProbeResult:
    """A trained probe's accuracies (0-1) and how long it trained."""

    top1: float
    val_top1: float
    epochs: int
    stopped_early: bool


def _standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    mean, std = train.mean(dim=0, keepdim=True), train.std(dim=0, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


@torch.no_grad()
def _accuracy(probe: nn.Module, x: Tensor, y: Tensor) -> float:
    probe.eval()
    hits = sum(int((probe(b).argmax(1) == t).sum()) for b, t in zip(x.split(1024), y.split(1024),
                                                                     strict=True))  # fmt: skip
    return hits / max(len(y), 1)


def train_probe(
    kind: str,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    *,
    num_classes: int = 10,
    seed: int = 0,
    patience: int = 4,
    patience_steps: int = 500,
    max_epochs: int = 300,
    batch_size: int = 256,
    lr: float = 1e-3,
    bf16: bool | None = None,
) -> ProbeResult:
    """Train a ``kind`` probe on (features, labels) ``train``, stop on ``val``, score ``test``.

    Features are standardised with the training split's statistics. Seeded: the same inputs
    and seed give the same result on the same CPU. ``bf16`` runs the forward pass under
    bfloat16 autocast (default: the MLP and CNN probes, where the CPU has native bfloat16
    kernels; the linear probe gains nothing from it and stays float32).
    """
    bf16 = (kind in BF16_PROBES and native_bf16()) if bf16 is None else bf16
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = train, val, test
    x_tr, x_va, x_te = _standardise(x_tr.float(), x_va.float(), x_te.float())
    probe = build_probe(kind, tuple(x_tr.shape[1:]), num_classes)
    if kind == "cnn":  # oneDNN's convolutions on small maps run about 1.3x faster this way
        probe = probe.to(memory_format=torch.channels_last)
        x_tr, x_va, x_te = (x.contiguous(memory_format=torch.channels_last)
                            for x in (x_tr, x_va, x_te))  # fmt: skip
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = -(-len(y_tr) // batch_size)
    patience = max(patience, -(-patience_steps // steps_per_epoch))
    best, best_state, since, epochs = -1.0, None, 0, 0
    while epochs < max_epochs and since < patience:
        epochs += 1
        probe.train()
        order = torch.randperm(len(y_tr), generator=generator)
        for idx in order.split(batch_size):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(probe(x_tr[idx]), y_tr[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        acc = _accuracy(probe, x_va, y_va)
        if acc > best:
            best, best_state, since = acc, copy.deepcopy(probe.state_dict()), 0
        else:
            since += 1
    probe.load_state_dict(best_state)
    return ProbeResult(_accuracy(probe, x_te, y_te), best, epochs, since >= patience)
