"""Load a dataset by name."""

from __future__ import annotations

from entroguard.data.fashion_mnist import load_fashion_mnist
from entroguard.data.imageset import ImageSet
from entroguard.data.torchvision_sets import load_cifar10, load_image_folder

DATASETS = ("fashion-mnist", "cifar10")


def load_dataset(name: str, split: str = "test", *, download: bool = False) -> ImageSet:
    """``"fashion-mnist"``, ``"cifar10"``, or ``"folder:<path>"`` for an ImageFolder tree."""
    if name == "fashion-mnist":
        return load_fashion_mnist(split, download=download)
    if name == "cifar10":
        return load_cifar10(split, download=download)
    if name.startswith("folder:"):
        return load_image_folder(name[len("folder:") :], split=split)
    raise ValueError(f"unknown dataset {name!r}: choose {', '.join(DATASETS)} or folder:<path>")
