"""``ImageSet``: images kept as uint8 in memory, served as float batches in [0, 1]."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ImageSet:
    """A labelled image set.

    Attributes:
        name: dataset name, e.g. ``"fashion-mnist"``.
        split: ``"train"`` or ``"test"``.
        images: uint8 tensor (N, C, H, W) with C = 1 or 3; grey images are repeated to RGB
            when served.
        labels: int64 tensor (N,).
        classes: class names, index = label.
        padding: zero pixels the loader added on each side (Fashion-MNIST's 28x28 images
            are served as 32x32); the source images are :meth:`source` .
    """

    name: str
    split: str
    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    padding: int = 0

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("ImageSet.images must be uint8 (N, C, H, W)")
        if self.images.shape[1] not in (1, 3):
            raise ValueError(f"ImageSet.images must have 1 or 3 channels, got {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return tuple(self.images.shape[-2:])

    def subset(self, n: int | None) -> ImageSet:
        """The first ``n`` images (all when ``n`` is None or larger than the set)."""
        if n is None or n >= len(self):
            return self
        return ImageSet(self.name, self.split, self.images[:n], self.labels[:n], self.classes,
                        self.padding)  # fmt: skip

    def source(self, i: int) -> Tensor:
        """Image ``i`` as the dataset has it, without the loader's padding: uint8 (C, H, W)."""
        p = self.padding
        image = self.images[i]
        return image[:, p : image.shape[1] - p, p : image.shape[2] - p] if p else image

    def to_float(self, index: Tensor | slice) -> Tensor:
        """Images at ``index`` as float (B, 3, H, W) in [0, 1]."""
        x = self.images[index].float().div_(255.0)
        return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Yield ``(images (B, 3, H, W) float [0, 1], labels (B,), indices (B,))``, images and
        labels on ``device`` when given (the order is drawn on the CPU either way)."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            images, labels = self.to_float(idx), self.labels[idx]
            if device is not None:
                images, labels = images.to(device), labels.to(device)
            yield images, labels, idx
