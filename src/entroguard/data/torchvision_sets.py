"""CIFAR-10 and ImageFolder trees through torchvision, held as uint8 ImageSets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from entroguard.data.fashion_mnist import cache_dir
from entroguard.data.imageset import ImageSet
from entroguard.errors import DatasetNotFoundError


def load_cifar10(split: str, *, download: bool = False) -> ImageSet:
    """CIFAR-10 ``split`` as uint8 (N, 3, 32, 32), from the cache or torchvision's download."""
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(cache_dir()), train=split == "train", download=download)
    except RuntimeError as exc:
        raise DatasetNotFoundError(
            f"CIFAR-10 not found in {cache_dir()} ({exc}); pass --download to fetch it"
        ) from exc
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return ImageSet("cifar10", split, images, torch.tensor(ds.targets), tuple(ds.classes))


def load_image_folder(root: str | Path, size: int = 32, split: str = "test") -> ImageSet:
    """Any ``root/<class>/<image>`` tree, resized (shorter side) and centre-cropped to ``size``."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist (expected root/<class>/…)")
    tf = transforms.Compose(
        [transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()]
    )
    ds = ImageFolder(str(root), transform=tf)
    if len(ds) == 0:
        raise DatasetNotFoundError(f"no images under {root}")
    images = torch.stack([ds[i][0][:3] for i in range(len(ds))])
    labels = torch.tensor(ds.targets)
    return ImageSet(root.name, split, images, labels, tuple(ds.classes))
