"""The fast forward of the TV defences against their differentiable path: the compiled kernel
(:mod:`entroguard.defenses.tv_kernel`), its PyTorch fallback and the unrolled steps give the
same values; the rate map's factorized-prior table and CPU chunking give the model's bits."""

from __future__ import annotations

import warnings

import pytest
import torch
from defense_helpers import colour_images, sample_images, trained_model, untrained_models

from entroguard.defenses import ObjectAwareTV, TotalVariation, tv_kernel
from entroguard.defenses import rate_mask as rate_mask_module
from entroguard.defenses.rate_mask import latent_bit_map, rate_mask
from entroguard.defenses.tv import tv_denoise, tv_denoise_fast

needs_kernel = pytest.mark.skipif(not tv_kernel.available(), reason="no C compiler here")


def _grey_and_colour() -> torch.Tensor:
    """3 Fashion-MNIST images (grey stored as RGB) and 3 colour images, (6, 3, 32, 32)."""
    return torch.cat([sample_images()[0][:3], colour_images(3, seed=5)])


@pytest.mark.parametrize("defense", [ObjectAwareTV(), TotalVariation()], ids=repr)
@pytest.mark.parametrize("batch", ["grey", "colour", "mixed"])
def test_forward_equals_the_differentiable_forward(defense, batch):
    """Default hyper-parameters (100 steps): ``defense(model, x)`` (kernel, no gradient) and
    ``defense.differentiable(model, x)`` (checkpointed unrolled steps, gradient recorded) give
    the same images to float rounding."""
    model = trained_model()
    x = {
        "grey": sample_images()[0][:4],
        "colour": colour_images(4, seed=1),
        "mixed": _grey_and_colour(),
    }[batch]
    fast = defense(model, x)
    xg = x.clone().requires_grad_(True)
    slow = defense.differentiable(model, xg)
    assert slow.requires_grad
    assert (fast - slow.detach()).abs().max() < 2e-6
    assert fast.shape == x.shape and fast.dtype == x.dtype
    assert (fast != x).any()  # it did denoise


@needs_kernel
@pytest.mark.parametrize(
    ("shape", "weight_shape"),
    [
        ((5, 3, 32, 32), (5, 1, 32, 32)),  # 15 planes: not a multiple of the SIMD lanes
        ((2, 3, 17, 9), (2, 3, 17, 9)),  # odd sizes, a weight per channel
        ((3, 1, 1, 7), (1, 1, 1, 7)),  # one row, weights broadcast over the batch
        ((2, 2, 6, 1), ()),  # one column, one weight for all pixels
        ((1, 3, 1, 1), (1, 1, 1, 1)),  # one pixel: nothing to smooth
    ],
)
def test_kernel_matches_the_pytorch_solvers(monkeypatch, shape, weight_shape):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    w = 0.02 + 0.08 * torch.rand(weight_shape, generator=g) if weight_shape else 0.07
    kw = {"steps": 100, "step_size": 0.15, "fidelity": 0.25, "eps": 0.1}
    kernel = tv_denoise_fast(x, w, **kw)
    with torch.no_grad():
        unrolled = tv_denoise(x, w, **kw)
    monkeypatch.setattr(tv_kernel, "supports", lambda images: False)
    eager = tv_denoise_fast(x, w, **kw)
    assert kernel.shape == x.shape and kernel.dtype == torch.float32
    assert (kernel - eager).abs().max() < 2e-6
    assert (kernel - unrolled).abs().max() < 2e-6
    assert kernel.min() >= 0 and kernel.max() <= 1


@needs_kernel
def test_kernel_gives_the_same_bits_on_any_number_of_threads():
    x = colour_images(7, seed=2)
    w = 0.1 * torch.rand(7, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    kw = {"steps": 40, "step_size": 0.15, "fidelity": 0.25, "eps": 0.1}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = tv_denoise_fast(x, w, **kw)
        torch.set_num_threads(2)
        two = tv_denoise_fast(x, w, **kw)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


@needs_kernel
def test_kernel_solve_validates_and_handles_empty_planes():
    f = torch.rand(3, 4, 5)
    with pytest.raises(ValueError, match="one shape"):
        tv_kernel.solve(f, torch.rand(3, 4, 4), steps=1, c=1.0, cfw=0.0, e2=0.01)
    empty = tv_kernel.solve(f[:0], f[:0], steps=3, c=1.0, cfw=0.0, e2=0.01)
    assert empty.shape == (0, 4, 5)
    same = tv_kernel.solve(f, torch.zeros_like(f), steps=5, c=1.0, cfw=0.0, e2=0.01)
    assert torch.equal(same, f)  # zero TV weight and no fidelity: u stays f
    assert tv_kernel.lanes() in (4, 8, 16)
    assert not tv_kernel.supports(f.double())


def test_without_a_compiler_the_pytorch_solver_runs(monkeypatch):
    """No compiler: a warning, ``available()`` is false, the defence still runs (PyTorch)."""
    monkeypatch.setattr(tv_kernel, "_compilers", lambda: [])
    tv_kernel._library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not build the TV kernel"):
            assert not tv_kernel.available()
        x = colour_images(2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = TotalVariation(steps=10)(None, x)
        with torch.no_grad():
            ref = tv_denoise(x, 0.1, steps=10, step_size=0.15, fidelity=0.25, eps=0.1)
        assert (out - ref).abs().max() < 1e-6
    finally:
        tv_kernel._library.cache_clear()


def test_kernel_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(tv_kernel.DISABLE_ENV, "0")
    tv_kernel._library.cache_clear()
    try:
        assert not tv_kernel.available() and tv_kernel.lanes() == 0
    finally:
        tv_kernel._library.cache_clear()


# ---------------------------------------------------------------------------- rate map
@pytest.mark.parametrize("which", ["trained", "fp", "mshp"])
def test_bit_map_equals_the_model_likelihoods(which):
    """The factorized-prior table and the chunked head give the bits the codec computes on
    the whole batch (mshp: the hyper-latent's bits spread over the latent, summed)."""
    model = trained_model() if which == "trained" else untrained_models()[which]
    x = _grey_and_colour().repeat(7, 1, 1, 1)  # 42 images: two CPU chunks
    with torch.no_grad():
        maps = model.codec.likelihoods(model.analyze(x), "round").bit_maps()
    bits = latent_bit_map(model, x)
    assert bits.shape == maps["y"].shape
    totals = sum(m.flatten(1).sum(1) for m in maps.values())
    assert torch.allclose(bits.flatten(1).sum(1), totals, rtol=1e-5)
    if which != "mshp":
        assert torch.allclose(bits, maps["y"], rtol=1e-5, atol=1e-4)


def test_rate_mask_does_not_depend_on_the_chunking(monkeypatch):
    model = trained_model()
    x = _grey_and_colour()
    whole = rate_mask(model, x)
    monkeypatch.setattr(rate_mask_module, "CPU_CHUNK", 1)
    one_by_one = rate_mask(model, x)
    monkeypatch.setattr(rate_mask_module, "TABLE_FRACTION", 0.0)  # no table: the codec's path
    direct = rate_mask(model, x)
    assert torch.allclose(whole, one_by_one, atol=1e-5)
    assert torch.allclose(whole, direct, atol=1e-5)
