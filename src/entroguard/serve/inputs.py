"""The edge's inputs: image files, folders of images, or a dataset's test set.

``INPUTS`` given to ``entroguard edge`` are read in order:

* ``test`` : the test set of the model's dataset (``test:NAME`` for another dataset);
* a folder: every image file under it (recursively, sorted by path);
* a file: one image (PNG, JPEG, BMP, GIF, WebP, TIFF).

Files are converted to RGB, resized (shorter side) and centre-cropped to the model's input
size, like :func:`entroguard.data.torchvision_sets.load_image_folder`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from entroguard.errors import InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
TEST_SET = "test"
MAX_IMAGE_PIXELS = 40_000_000
"""Largest image decoded (40 megapixels, 120 MB as RGB): checked on the header, before any
pixel is decoded, so a decompression bomb costs nothing."""
MAX_ASPECT_RATIO = 20.0
"""Most elongated image accepted: resizing the shorter side of a 1 x 100,000 strip to the
model's size would make a 32 x 3,200,000 image (hundreds of MB) for a 178-byte file."""
TINY_FRACTION = 0.5
"""Images whose shorter side is below this fraction of the model's are classified with a
warning: they are upscaled more than 2x and carry little of what the model was trained on."""

log = logging.getLogger("entroguard.edge")


@dataclass
class InputBatch:
    """A batch of edge inputs.

    Attributes:
        names: one display name per image (file path, or ``dataset[i]``).
        images: float (B, 3, H, W) in [0, 1], at the model's input size.
        labels: true class ids where known (test sets), else None.
        sources: per image, what the upload baselines re-encode: the dataset's own image
            without the loader's padding (float (C, h, w)), or a file's image at the model's
            size (the file itself is ``file_bytes``).
        raw_bytes: per image, its uncompressed size as the user has it (pixels x channels at
            its own resolution, e.g. 784 for a 28x28 grey image).
        file_bytes: per image, the size of the user's file (None for dataset images).
    """

    names: list[str]
    images: Tensor
    labels: list[int | None]
    sources: list[Tensor]
    raw_bytes: list[int]
    file_bytes: list[int | None]


class InputSource:
    """Images from files, folders and test sets, served in batches at the model's size.

    Args:
        specs: the ``INPUTS`` (see the module docstring).
        input_size: (H, W) the model takes, pixels.
        default_dataset: the dataset ``test`` refers to (the model's).
        limit: keep only the first ``limit`` images (None: all).
    """

    def __init__(
        self,
        specs: Sequence[str],
        input_size: tuple[int, int],
        *,
        default_dataset: str | None = None,
        limit: int | None = None,
    ) -> None:
        if not specs:
            raise InputError("no inputs: give image files, folders, or 'test' for the test set")
        self.input_size = tuple(input_size)
        self._items: list[tuple[str, object]] = []  # ("file", Path) or ("set", (ImageSet, i))
        self.dataset_name: str | None = None
        remaining = limit
        for spec in specs:
            if remaining is not None and remaining <= 0:
                break
            added = self._add(str(spec), default_dataset, remaining)
            if remaining is not None:
                remaining -= added

    def _add(self, spec: str, default_dataset: str | None, remaining: int | None) -> int:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InputError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
            files = files[:remaining] if remaining is not None else files
            self._items += [("file", p) for p in files]
            return len(files)
        if path.is_file():
            self._items.append(("file", path))
            return 1
        if spec == TEST_SET or spec.startswith(TEST_SET + ":"):
            name = spec.partition(":")[2] or default_dataset
            if not name:
                raise InputError("'test' needs a dataset: the model names none, use test:NAME")
            from entroguard.data import load_dataset

            test_set = load_dataset(name, "test").subset(remaining)
            if tuple(test_set.image_size) != self.input_size:
                raise InputError(
                    f"the {name} test set has {test_set.image_size} images, the model takes "
                    f"{self.input_size}"
                )
            self.dataset_name = name
            self._items += [("set", (test_set, i)) for i in range(len(test_set))]
            return len(test_set)
        raise InputError(
            f"input {spec!r} is neither an image file, a folder, nor 'test' (the test set)"
        )

    def __len__(self) -> int:
        return len(self._items)

    def batches(self, batch_size: int) -> Iterator[InputBatch]:
        """Yield the images in order, ``batch_size`` at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for start in range(0, len(self._items), batch_size):
            chunk = self._items[start : start + batch_size]
            items = [self._one(kind, item) for kind, item in chunk]
            names, images, labels, sources, raw, files = (list(c) for c in zip(*items, strict=True))
            yield InputBatch(names, torch.stack(images), labels, sources, raw, files)

    def _one(self, kind: str, item) -> tuple:
        """(name, image, label, source, raw bytes, file bytes) of one input."""
        if kind == "file":
            image, raw = load_image(item, self.input_size, with_raw_bytes=True)
            return str(item), image, None, image, raw, item.stat().st_size
        image_set, i = item
        source = image_set.source(i)
        return (f"{image_set.name}[{i}]", image_set.to_float(slice(i, i + 1))[0],
                int(image_set.labels[i]), source.float() / 255.0, source.numel(), None)  # fmt: skip


def load_image(path: Path, size: tuple[int, int], *, with_raw_bytes: bool = False):
    """One image file as float (3, H, W) in [0, 1]: RGB, resized and centre-cropped to size
    (with ``with_raw_bytes``, also its uncompressed size: width x height x bands of the file).

    Raises :class:`InputError` (before decoding) for images over :data:`MAX_IMAGE_PIXELS` or
    more elongated than :data:`MAX_ASPECT_RATIO`; warns for images much smaller than ``size``.
    """
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import functional as F

    try:
        with Image.open(path) as image:
            _check_dimensions(path, image.size, size)
            raw = image.width * image.height * len(image.getbands())
            rgb = image.convert("RGB")
    except Image.DecompressionBombError as exc:  # PIL's own check, on even larger headers
        raise InputError(
            f"image {path} is over the {MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel limit: downscale "
            f"it first ({exc})"
        ) from None
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    h, w = size
    rgb = F.resize(rgb, min(h, w))
    rgb = F.center_crop(rgb, [h, w])
    tensor = F.pil_to_tensor(rgb).float().div_(255.0)
    return (tensor, raw) if with_raw_bytes else tensor


def _check_dimensions(path: Path, wh: tuple[int, int], size: tuple[int, int]) -> None:
    """Refuse bombs and strips from the header's (width, height); warn on tiny images."""
    width, height = wh
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"image {path} is {width}x{height} ({width * height / 1e6:.0f} megapixels), over "
            f"the {MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel limit: downscale it first"
        )
    if max(width, height) > MAX_ASPECT_RATIO * max(min(width, height), 1):
        raise InputError(
            f"image {path} is {width}x{height}, more elongated than {MAX_ASPECT_RATIO:.0f}:1: "
            "crop it to the region to classify"
        )
    if min(width, height) < TINY_FRACTION * min(size):
        log.warning(
            "image %s is %dx%d, much smaller than the model's %dx%d input: it is upscaled and "
            "the prediction is unreliable", path, width, height, size[1], size[0],
        )  # fmt: skip
