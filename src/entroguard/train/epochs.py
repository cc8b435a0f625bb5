"""One epoch loop for the training recipes: batches, one loss function, logged loss terms.

A recipe supplies ``step_loss(images, labels) -> dict of scalar tensors`` whose ``"loss"``
entry is minimised; every entry is averaged over the epoch and logged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from entroguard.data.imageset import ImageSet

StepLoss = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def run_epoch(
    step_loss: StepLoss,
    optimizer: torch.optim.Optimizer,
    train_set: ImageSet,
    *,
    batch_size: int,
    generator: torch.Generator,
    after_step: Callable[[], None] | None = None,
    progress: bool = True,
    desc: str = "epoch",
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """One pass over ``train_set`` (shuffled by ``generator``, batches on ``device``); the
    mean of every loss term."""
    sums: dict[str, float] = {}
    batches = 0
    total = -(-len(train_set) // batch_size)
    batches_iter = train_set.batches(batch_size, shuffle=True, generator=generator, device=device)
    bar = tqdm(batches_iter, total=total, desc=desc, disable=not progress, leave=False)
    for images, labels, _ in bar:
        terms = step_loss(images, labels)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        batches += 1
    return {name: value / max(batches, 1) for name, value in sums.items()}


@torch.no_grad()
def top1(
    predict: Callable[[torch.Tensor], torch.Tensor],
    data: ImageSet,
    batch_size: int = 500,
    device: torch.device | str | None = None,
) -> float:
    """Top-1 accuracy (0-1) of ``predict(images) -> logits`` on ``data`` (batches on
    ``device``)."""
    correct = 0
    for images, labels, _ in data.batches(batch_size, device=device):
        correct += int((predict(images).argmax(dim=1) == labels).sum())
    return correct / max(len(data), 1)


def split_validation(train_set: ImageSet, n_val: int) -> tuple[ImageSet, ImageSet]:
    """``(train, validation)``: the last ``n_val`` training images are held out (deterministic)."""
    if not 0 < n_val < len(train_set):
        raise ValueError(f"n_val must be in 1..{len(train_set) - 1}, got {n_val}")
    cut = len(train_set) - n_val
    head, tail = slice(0, cut), slice(cut, None)
    return (
        ImageSet(train_set.name, train_set.split, train_set.images[head], train_set.labels[head],
                 train_set.classes),
        ImageSet(train_set.name, "validation", train_set.images[tail], train_set.labels[tail],
                 train_set.classes),
    )  # fmt: skip
