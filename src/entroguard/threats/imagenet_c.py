"""Read a precomputed ImageNet-C tree (as distributed by Hendrycks & Dietterich).

Layout::

    <root>/<corruption>/<severity>/<class>/<image>
    e.g. ImageNet-C/gaussian_noise/3/n01440764/ILSVRC2012_val_00000293.JPEG

Class folders are as in ``torchvision.datasets.ImageFolder``: class index ``k`` is the ``k``-th
class folder name in sorted order (for ImageNet-C these are the WordNet ids, sorted, which gives
the standard ImageNet class indices). Images may be JPEG or PNG (any letter case) and may sit in
subfolders of a class folder.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from entroguard.errors import DatasetNotFoundError
from entroguard.threats.corruptions import CORRUPTIONS

__all__ = ["IMAGE_EXTENSIONS", "ImageNetCDataset"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpeg", ".jpg", ".png")

_LAYOUT = (
    "an ImageNet-C tree must look like <root>/<corruption>/<severity>/<class>/<image>, "
    "e.g. <root>/gaussian_noise/3/n01440764/ILSVRC2012_val_00000293.JPEG "
    "(severity folders 1..5; JPEG or PNG images)"
)


def _subdirs(path: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())


def _to_tensor(image: Any) -> Any:
    """PIL image -> float CHW tensor in [0, 1]; uint8 tensors -> float / 255; else unchanged."""
    from PIL import Image

    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32) / 255
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
        return image.to(torch.float32) / 255
    return image


class ImageNetCDataset(Dataset):
    """The images of one corruption at one severity of an ImageNet-C tree.

    ``dataset[i]`` is ``(image, label)``: ``image`` a float tensor ``(3, H, W)`` in ``[0, 1]``
    (RGB), ``label`` the int class index (sorted class folder names, as in ImageFolder).

    Args:
        root: folder holding one folder per corruption.
        corruption: corruption folder name, normally one of
            :data:`entroguard.threats.corruptions.CORRUPTIONS` (any existing folder is accepted,
            e.g. for ImageNet-C-bar style extensions).
        severity: 1..5 (the severity folder name).
        transform: optional callable applied to the RGB PIL image (e.g. a torchvision
            ``Resize``/``CenterCrop`` pipeline). If it returns a PIL image or a uint8 tensor,
            that is converted to a float tensor in ``[0, 1]``; any other result (e.g. from
            ``ToTensor()``/``Normalize``) is returned as is.
        allow_empty: if False (default), raise when a class folder holds no image (an
            incomplete download); if True, such classes keep their index but have no samples.

    Attributes:
        classes, class_to_idx, samples (list of ``(path, label)``), targets, folder (the
        ``<root>/<corruption>/<severity>`` folder read).

    Raises:
        DatasetNotFoundError (a FileNotFoundError): the root, corruption or severity folder is
            missing, or it holds no class folders / images; the message names the expected path.
        TypeError / ValueError: bad ``corruption`` / ``severity`` arguments.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        corruption: str,
        severity: int,
        transform: Callable[[Any], Any] | None = None,
        *,
        allow_empty: bool = False,
    ) -> None:
        if not isinstance(corruption, str) or not corruption:
            raise TypeError(
                f"corruption must be a non-empty str (a folder name such as 'gaussian_noise'), "
                f"got {corruption!r}"
            )
        if isinstance(severity, bool) or not isinstance(severity, int | np.integer):
            raise TypeError(f"severity must be an int in 1..5, got {severity!r}")
        if not 1 <= int(severity) <= 5:
            raise ValueError(f"severity must be an int in 1..5, got {severity}")
        severity = int(severity)

        self.root = Path(root).expanduser()
        self.corruption = corruption
        self.severity = severity
        self.transform = transform

        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"ImageNet-C root folder not found: {self.root} "
                f"({'it is not a folder' if self.root.exists() else 'no such path'}); {_LAYOUT}. "
                "Download ImageNet-C from https://zenodo.org/record/2235448 and extract it there."
            )
        corruption_dir = self.root / corruption
        if not corruption_dir.is_dir():
            available = _subdirs(self.root)
            close = difflib.get_close_matches(corruption, available + list(CORRUPTIONS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close and close[0] != corruption else ""
            raise DatasetNotFoundError(
                f"ImageNet-C corruption folder not found: {corruption_dir}.{hint} "
                f"Corruption folders present in {self.root}: "
                f"{', '.join(available) if available else '(none)'}; {_LAYOUT}"
            )
        folder = corruption_dir / str(severity)
        if not folder.is_dir():
            available = _subdirs(corruption_dir)
            raise DatasetNotFoundError(
                f"ImageNet-C severity folder not found: {folder}. Severity folders present in "
                f"{corruption_dir}: {', '.join(available) if available else '(none)'}; {_LAYOUT}"
            )
        self.folder = folder

        self.classes = _subdirs(folder)
        if not self.classes:
            raise DatasetNotFoundError(
                f"No class folders in {folder}: expected one folder per class (e.g. "
                f"{folder / 'n01440764'}) holding the images; {_LAYOUT}"
            )
        self.class_to_idx = {name: idx for idx, name in enumerate(self.classes)}

        samples: list[tuple[str, int]] = []
        empty: list[str] = []
        for name in self.classes:
            found = []
            for dirpath, dirnames, filenames in os.walk(folder / name, followlinks=True):
                dirnames.sort()
                found.extend(
                    os.path.join(dirpath, f)
                    for f in sorted(filenames)
                    if f.lower().endswith(IMAGE_EXTENSIONS)
                )
            if not found:
                empty.append(name)
            samples.extend((path, self.class_to_idx[name]) for path in found)
        if not samples or (empty and not allow_empty):
            shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
            raise DatasetNotFoundError(
                f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {len(empty)} class folder(s) of "
                f"{folder}: {shown}. Is the download incomplete? (pass allow_empty=True to "
                f"ignore empty classes); {_LAYOUT}"
            )
        self.samples = samples
        self.targets = [label for _, label in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as img:
            image = img.convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return _to_tensor(image), label

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(folder={str(self.folder)!r}, classes={len(self.classes)}, "
            f"images={len(self)})"
        )
