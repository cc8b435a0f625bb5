"""Fashion-MNIST (Zalando, MIT licence): the embedded default dataset.

Found, in order, under ``$ENTROGUARD_FASHION_MNIST``, Debian's ``dataset-fashion-mnist``
package (``/usr/share/datasets/fashion-mnist``), or entroguard's cache where torchvision's
download puts it. Images are 28x28 grey; they are zero-padded to 32x32 (2 pixels per side) so
the default models see the 32x32 input of the CIFAR family; the grey value is repeated on R, G
and B when batches are served.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from entroguard.data.imageset import ImageSet
from entroguard.errors import DatasetNotFoundError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
PAD = 2


def cache_dir() -> Path:
    """Where downloads go: ``$ENTROGUARD_CACHE`` or ``~/.cache/entroguard``."""
    return Path(os.environ.get("ENTROGUARD_CACHE", Path.home() / ".cache" / "entroguard"))


def candidate_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("ENTROGUARD_FASHION_MNIST"):
        dirs.append(Path(os.environ["ENTROGUARD_FASHION_MNIST"]))
    dirs += [DEBIAN_DIR, cache_dir() / "FashionMNIST" / "raw"]
    return dirs


def _find(stem: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array, checking its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetNotFoundError(f"{path} is not an unsigned-byte IDX file; reinstall the data")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(data) != expected:
        raise DatasetNotFoundError(
            f"{path} is truncated ({len(data)} bytes, expected {expected}); reinstall the data"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _download() -> None:
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(cache_dir()), train=True, download=True)
        FashionMNIST(str(cache_dir()), train=False, download=True)
    except Exception as exc:  # network errors come in many types
        raise DatasetNotFoundError(
            f"could not download Fashion-MNIST ({exc}); on Debian/Ubuntu install it with "
            "`sudo apt-get install dataset-fashion-mnist`"
        ) from exc


def load_fashion_mnist(split: str, *, download: bool = False) -> ImageSet:
    """Fashion-MNIST ``split`` ("train": 60k, "test": 10k) as uint8 (N, 1, 32, 32)."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    image_stem, label_stem = FILES[split]
    dirs = candidate_dirs()
    if _find(image_stem, dirs) is None and download:
        _download()
    image_path, label_path = _find(image_stem, dirs), _find(label_stem, dirs)
    if image_path is None or label_path is None:
        raise DatasetNotFoundError(
            "Fashion-MNIST not found (looked in "
            + ", ".join(str(d) for d in dirs)
            + "). Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
            "or pass --download (torchvision fetches it into the cache), or set "
            "ENTROGUARD_FASHION_MNIST to a folder holding the IDX files."
        )
    images = torch.from_numpy(read_idx(image_path).copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(label_path).astype(np.int64))
    images = torch.nn.functional.pad(images, (PAD, PAD, PAD, PAD))
    return ImageSet("fashion-mnist", split, images, labels, CLASSES, padding=PAD)
