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


# -- a tiny finished campaign, shared by the report tests (the ``tiny_campaign`` fixture) --------

TINY_CAMPAIGN_MODELS = {"resnet_s-fp-beta0.01": ("resnet_s", "fp", 0.01),
          "resnet_s-mshp-beta0.01": ("resnet_s", "mshp", 0.01)}  # fmt: skip
TINY_CAMPAIGN_CONFIG = {
    "dataset": "fashion-mnist",
    "n_images": 6,
    "batch_size": 6,
    "models": "zoo",
    "threats": [
        "clean",
        {"corruption": ["gaussian_noise", "defocus_blur", "contrast"], "severities": [1, 5]},
        {"attack": "rate_pgd", "eps": [8, 32], "n_images": 4,
         "params": {"steps": 1, "noise_copies": 1}},
        {"attack": "noise", "eps": [8], "n_images": 4},
    ],
}  # fmt: skip


def run_tiny_campaign(root: Path) -> Path:
    """Run :data:`TINY_CAMPAIGN_CONFIG` on two seeded models and 8 random Fashion-MNIST-shaped
    test images under ``root``; return the campaign's output folder."""
    import pytest

    from entroguard.campaign.config import parse_config
    from entroguard.campaign.runner import run_campaign
    from entroguard.train.checkpoint import save_checkpoint

    data = root / "fashion-mnist"
    data.mkdir()
    rng = np.random.default_rng(0)
    write_idx(data / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (8, 28, 28)))
    write_idx(data / "t10k-labels-idx1-ubyte.gz", np.arange(8) % 10)
    zoo = root / "zoo"
    for i, (name, (arch, prior, beta)) in enumerate(TINY_CAMPAIGN_MODELS.items()):
        model = seeded_model(arch, prior, seed=i)
        save_checkpoint(model, zoo / name, beta=beta, dataset="fashion-mnist", metrics={})
    out = root / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENTROGUARD_FASHION_MNIST", str(data))
        mp.setenv("ENTROGUARD_CACHE", str(root / "cache"))
        run_campaign(parse_config(TINY_CAMPAIGN_CONFIG), out, zoo_dir=zoo, progress=False)
    return out
