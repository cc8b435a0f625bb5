"""Helpers of the defence tests: models (built once per process) and images.

There is deliberately no ``conftest.py`` in this folder: test modules elsewhere import
``conftest`` by name, and a second ``conftest`` module would shadow theirs. Each test module
wraps these helpers in its own small fixtures.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

import entroguard
from entroguard.data import load_dataset
from entroguard.models import SplitClassifier
from entroguard.models.small import build_small

ZOO_WEIGHTS = Path(entroguard.__file__).resolve().parent / "zoo_weights"


def fresh(prior: str, seed: int = 0) -> SplitClassifier:
    """An untrained seeded resnet_s (eval mode, coder tables built)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_small("resnet_s", prior).eval()
    model.prepare_coding()
    return model


def colour_images(n: int, lo: float = 0.0, hi: float = 1.0, seed: int = 0) -> torch.Tensor:
    """``n`` seeded smooth colour images (n, 3, 32, 32) with values in [lo, hi]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear")
    x = (0.9 * x + 0.1 * torch.rand(n, 3, 32, 32, generator=g)).clamp(0, 1)
    return lo + (hi - lo) * x


def _fit_prior(model: SplitClassifier, images: torch.Tensor, steps: int = 60) -> None:
    """Fit the factorized prior's density to the encoder's latents of ``images`` (a few Adam
    steps on the bits, encoder frozen). One epoch on 2000 images trains the classifier but
    leaves the learned density nearly flat (every symbol ~5 bits), and under a flat density
    the rate does not depend on the image: nothing to attack or defend."""
    with torch.no_grad():
        y = model.analyze(images)
    bottleneck = model.codec.entropy_bottleneck
    params = [p for n, p in bottleneck.named_parameters() if not n.endswith("quantiles")]
    optimizer = torch.optim.Adam(params, lr=0.1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        bits = model.codec.likelihoods(y, "noise", generator).bits().mean()
        optimizer.zero_grad(set_to_none=True)
        bits.backward()
        optimizer.step()
    model.eval()
    model.prepare_coding()


@functools.cache
def trained_model() -> SplitClassifier:
    """A trained resnet_s factorized-prior model: the packaged zoo's when it is there, else
    one trained here in a few seconds (1 epoch on 2000 images, then a prior fit)."""
    from entroguard.train.checkpoint import load_checkpoint

    packaged = ZOO_WEIGHTS / "resnet_s-fp-beta0.01.safetensors"
    if packaged.is_file():
        return load_checkpoint(packaged)
    from entroguard.train.loop import TrainConfig, train_split

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_small("resnet_s", "fp")
        train = load_dataset("fashion-mnist", "train")
        config = TrainConfig(beta=0.01, epochs=1, batch_size=64)
        train_split(model, train.subset(2000), config, progress=False)
        _fit_prior(model, train.to_float(slice(0, 64)))
    return model


@functools.cache
def untrained_models() -> dict[str, SplitClassifier]:
    """Untrained models of both priors: enough for shapes, ranges, gradients and state."""
    return {prior: fresh(prior) for prior in ("fp", "mshp")}


def sample_images() -> tuple[torch.Tensor, torch.Tensor]:
    """8 Fashion-MNIST test images (grey, black backgrounds) and their labels."""
    test = load_dataset("fashion-mnist", "test")
    return test.to_float(slice(0, 8)), test.labels[:8]
