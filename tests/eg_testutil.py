"""Test helpers shared by the test modules (a uniquely named module: ``conftest`` is not)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from entroguard.models import SplitClassifier, build_model

SMALL_ARCHS = ("resnet_s", "regnet_s", "mobilenetv2_s")
PRIORS = ("fp", "mshp")

if TYPE_CHECKING:
    from entroguard.models.slimmable import SlimmableSplitClassifier


def seeded_model(arch: str, prior: str, seed: int = 0) -> SplitClassifier:
    """A split model with seeded random weights, in eval mode, coder tables built."""
    torch.manual_seed(seed)
    model = build_model(arch, prior).eval()
    model.prepare_coding()
    return model


def seeded_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` smooth-ish random images (B, 3, size, size) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    return (x + 0.05 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as a gzipped IDX file of unsigned bytes (Fashion-MNIST's format)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def slim_model(prior: str, seed: int = 0) -> SlimmableSplitClassifier:
    """A seeded slimmable resnet_s head whose four rate settings code different symbols."""
    torch.manual_seed(seed)
    model = build_model("resnet_s", prior, members=4).eval()
    # spread the rate settings apart as training does, so they code different bytes
    with torch.no_grad():
        model.codec.log_gain.add_(torch.linspace(1.0, 3.0, 4)[:, None])
    model.prepare_coding()
    return model
