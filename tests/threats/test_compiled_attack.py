"""``compiled=True``: the attacks' loss through ``torch.compile`` keeps the attack's strength."""

from __future__ import annotations

import pytest
import torch
from torch._inductor.utils import fresh_cache

from entroguard.data import load_dataset
from entroguard.models import SplitClassifier
from entroguard.threats.adaptive import RateLowFreq
from entroguard.threats.attacks import ClassifierPGD, RatePGD
from entroguard.threats.attacks.compiled import _COMPILED, CompileError
from entroguard.train.checkpoint import load_checkpoint
from entroguard.train.zoo import default_zoo_dir

EPS = 8 / 255


def _model(prior: str) -> SplitClassifier:
    return load_checkpoint(default_zoo_dir() / f"resnet_s-{prior}-beta0.01.safetensors")


def _payload(model: SplitClassifier, images: torch.Tensor) -> float:
    return sum(model.compress(images).payload_bytes()) / len(images)


def _seed(s: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(s)


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_the_compiled_rate_attack_keeps_its_strength_within_one_point(prior):
    """The paper's attack (20 steps, 16 noisy copies) compiled reaches the eager attack's
    real-payload inflation within 1 point on 64 test images; a batch of another size (a
    recompile with a dynamic batch dimension) stays within its budget."""
    model = _model(prior)
    x = load_dataset("fashion-mnist", "test").to_float(slice(0, 64))
    clean = _payload(model, x)
    inflation = {}
    for compiled in (False, True):
        adv = RatePGD(EPS, compiled=compiled)(model, x, generator=_seed())
        inflation[compiled] = 100 * (_payload(model, adv) / clean - 1)
    assert inflation[False] > 10, inflation
    assert abs(inflation[True] - inflation[False]) <= 1.0, inflation
    assert RatePGD.loss in _COMPILED
    odd = x[:5]
    adv = RatePGD(EPS, steps=2, compiled=True)(model, odd, generator=_seed())
    assert (adv - odd).abs().max() <= EPS + 1e-6


@pytest.mark.slow
def test_every_gradient_attack_can_be_compiled():
    """The classifier attack and an adaptive attack with its own loop run compiled, within
    their budgets, close to their eager selves."""
    model = _model("fp")
    test = load_dataset("fashion-mnist", "test")
    x, labels = test.to_float(slice(0, 8)), test.labels[:8]
    for attack in (ClassifierPGD(EPS, steps=2), RateLowFreq(EPS, steps=2, quantization="ste")):
        eager = attack(model, x, labels, generator=_seed())
        attack.compiled = True
        adv = attack(model, x, labels, generator=_seed())
        assert type(attack).loss in _COMPILED
        assert (adv - x).abs().max() <= EPS + 1e-6
        assert (adv - eager).abs().mean() < 0.1 * EPS, type(attack).__name__


def test_compiled_is_a_flag_shown_in_repr():
    assert "compiled=True" in repr(RatePGD(EPS, compiled=True))
    assert "compiled=False" in repr(ClassifierPGD(EPS))
    with pytest.raises(ValueError, match="compiled must be true or false"):
        RatePGD(EPS, compiled="yes")


class _FreshLoss(RatePGD):
    """A loss of its own with a constant of its own, so that neither Dynamo nor Inductor has
    anything cached for it and a C++ kernel must be built."""

    def loss(self, model, x, labels, generator):
        return super().loss(model, x, labels, generator) * 0.987654


def test_a_machine_without_a_compiler_gets_one_clear_error():
    model = _model("fp")
    x = load_dataset("fashion-mnist", "test").to_float(slice(0, 2))
    # in this process (a worker pool started by earlier tests would not see the patch)
    broken = torch._inductor.config.patch({"cpp.cxx": ("/nonexistent/g++",), "compile_threads": 1})
    # an empty kernel cache, so that the kernels built by earlier tests are not reused
    with fresh_cache(), broken, pytest.raises(CompileError, match="g\\+\\+"):
        _FreshLoss(EPS, steps=1, compiled=True)(model, x)
