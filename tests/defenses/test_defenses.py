"""Tests of entroguard.defenses: the contract (shapes, range, no in-place change, determinism,
model state), the TV solver's energy and fidelity term, the rate mask, the gradient paths,
and the payload effect of object_tv on a trained model (real bytes)."""

from __future__ import annotations

import pytest
import torch
from defense_helpers import (
    colour_images,
    fresh,
)

from entroguard.defenses import (
    DEFENSES,
    JPEG,
    Defense,
    GaussianBlur,
    LowPass,
    ObjectAwareTV,
    TotalVariation,
    build_defense,
    known_defenses,
)
from entroguard.defenses.dct import (
    band_fraction,
    dct2,
    dct_matrix,
    idct2,
    low_band_mask,
    out_of_band_energy,
    project_low_band,
)
from entroguard.defenses.rate_mask import latent_bit_map, normalise_per_image, rate_mask
from entroguard.defenses.tv import tv_denoise, tv_denoise_fast
from entroguard.errors import InputError
from entroguard.threats.attacks import RatePGD

NAMES = ("object_tv", "tv", "lowpass", "jpeg", "gaussian_blur")
QUICK = {"object_tv": {"steps": 30}, "tv": {"steps": 30}}


def _all(**overrides) -> list[Defense]:
    return [build_defense(n, **{**QUICK.get(n, {}), **overrides.get(n, {})}) for n in NAMES]


def _payload(model, x: torch.Tensor) -> float:
    return sum(model.compress(x).payload_bytes()) / len(x)


def _energy(u, f, w, fidelity, eps):
    gx = torch.nn.functional.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))
    gy = torch.nn.functional.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    tv = (w * torch.sqrt(gx**2 + gy**2 + eps**2)).sum()
    return fidelity / 2 * (u - f).pow(2).sum() + tv


# ------------------------------------------------------------------------ registry and repr
def test_registry_names_and_builder():
    assert set(DEFENSES) == {*NAMES, "rate_cap"}  # rate_cap changes no pixel: test_byte_cap.py
    assert known_defenses() == sorted({*NAMES, "rate_cap"})
    for name in NAMES:
        d = build_defense(name)
        assert d.name == name and isinstance(d, DEFENSES[name])
        assert d.gradient in ("exact", "bpda")
    assert build_defense("jpeg").gradient == "bpda"
    assert build_defense("object_tv", tv_weight=0.05).tv_weight == 0.05
    with pytest.raises(ValueError, match="did you mean 'object_tv'"):
        build_defense("object_vt")
    with pytest.raises(TypeError):
        build_defense("tv", quality=3)


def test_repr_and_paper_defaults():
    d = ObjectAwareTV()
    assert (d.steps, d.tv_weight, d.step_size) == (100, 0.1, 0.15)
    assert d.fidelity_weight > 0 and d.needs_model and d.gradient == "exact"
    text = repr(d)
    for part in ("ObjectAwareTV(", "steps=100", "tv_weight=0.1", "step_size=0.15",
                 "min_weight=", "fidelity_weight=", "tv_eps="):  # fmt: skip
        assert part in text
    assert repr(JPEG(50)) == "JPEG(quality=50)"
    assert "fraction=0.3" in repr(LowPass(0.3)) and "sigma=2" in repr(GaussianBlur(2.0))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ObjectAwareTV(tv_weight=0.1, tv_eps=0.01),  # unstable explicit TV step
        lambda: TotalVariation(fidelity_weight=-1),
        lambda: TotalVariation(steps=2.5),
        lambda: LowPass(0.0),
        lambda: JPEG(0),
        lambda: GaussianBlur(0.0),
        lambda: GaussianBlur(1.0, kernel_size=4),
    ],
)
def test_bad_hyper_parameters_are_refused(make):
    with pytest.raises(ValueError):
        make()


def test_bad_inputs_are_refused(untrained, images):
    x, _ = images
    for d in _all():
        with pytest.raises(InputError):
            d(untrained["fp"], x[0])
        with pytest.raises(InputError):
            d(untrained["fp"], x * 2)
    with pytest.raises(ValueError, match="needs the model"):
        ObjectAwareTV()(None, x)


# --------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_shape_range_dtype_and_input_untouched(untrained, images, prior):
    x = torch.cat([images[0][:3], colour_images(2)])
    before = x.clone()
    for d in _all():
        out = d(untrained[prior], x)
        assert out.shape == x.shape and out.dtype == x.dtype and not out.requires_grad
        assert out.min() >= 0 and out.max() <= 1, d.name
        assert not torch.equal(out, x), d.name  # it does something
        assert torch.equal(x, before), f"{d.name} modified its input"
        xg = x.clone().requires_grad_(True)
        d.differentiable(untrained[prior], xg)
        assert torch.equal(xg.detach(), before), f"{d.name}.differentiable modified its input"


def test_deterministic_and_batch_independent(untrained, images):
    x = torch.cat([images[0][:3], colour_images(2)])
    model = untrained["mshp"]
    for d in _all():
        a, b = d(model, x), d(model, x)
        assert torch.equal(a, b), d.name
        singles = torch.cat([d(model, x[i : i + 1]) for i in range(len(x))])
        assert torch.allclose(a, singles, atol=1e-4), d.name  # float rounding of the head


def test_model_state_is_restored(images):
    model = fresh("mshp").train()
    model.encoder.requires_grad_(False)
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    running = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    d = ObjectAwareTV(steps=5)
    d(model, images[0][:2])
    d.differentiable(model, images[0][:2].clone().requires_grad_(True))
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for k, v in running.items():  # batch-norm statistics untouched: it ran in eval mode
        assert torch.equal(model.state_dict()[k], v), k
    assert all(p.grad is None for p in model.parameters())


def test_empty_batch(untrained):
    x = torch.zeros(0, 3, 32, 32)
    for d in _all():
        if d.needs_model:
            continue
        assert d(None, x).shape == x.shape


# ------------------------------------------------------------------------- the TV solver
def test_fidelity_pulls_toward_the_received_image(untrained):
    """Fails if the fidelity term vanished (the published code's aliasing bug)."""
    model = untrained["fp"]
    x = colour_images(4, seed=1)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    dists = []
    for fidelity in (0.0, 1.0, 10.0, 100.0):
        out = ObjectAwareTV(steps=50, fidelity_weight=fidelity)(model, noisy)
        dists.append((out - noisy).pow(2).sum().item())
    assert all(a > b for a, b in zip(dists, dists[1:], strict=False)), dists
    assert dists[-1] < 0.05 * dists[0]
    plain = ObjectAwareTV(steps=50, fidelity_weight=0.0)(model, noisy)
    for fidelity in (0.25, 1.0):
        assert (
            ObjectAwareTV(steps=50, fidelity_weight=fidelity)(model, noisy) - plain
        ).abs().max() > 1e-2


def test_zero_tv_weight_keeps_the_image():
    x = colour_images(2)
    for fidelity in (0.0, 1.0):
        out = TotalVariation(tv_weight=0.0, fidelity_weight=fidelity)(None, x)
        assert torch.allclose(out, x, atol=1e-6)


def test_solver_minimises_the_documented_energy():
    """Many steps reach a point where the gradient of E(u) (module docstring) vanishes, and
    every run of steps lowers E."""
    f = colour_images(2, lo=0.2, hi=0.8, seed=3).double()[..., :12, :12]
    w = 0.05 + 0.05 * torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    w = w.double()
    kw = {"step_size": 0.15, "fidelity": 1.0, "eps": 0.1}
    energies = [
        _energy(tv_denoise_fast(f, w, steps=s, **kw), f, w, 1.0, 0.1).item()
        for s in (0, 5, 50, 500)
    ]
    assert all(a > b for a, b in zip(energies, energies[1:], strict=False)), energies
    u = tv_denoise_fast(f, w, steps=3000, **kw).requires_grad_(True)
    (grad,) = torch.autograd.grad(_energy(u, f, w, 1.0, 0.1), u)
    assert grad.abs().max() < 1e-6


def test_fast_and_differentiable_solvers_agree():
    x = torch.cat([colour_images(3), colour_images(1)[:, :1].expand(-1, 3, -1, -1)])
    w = 0.1 * torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    kw = {"steps": 25, "step_size": 0.15, "fidelity": 0.5, "eps": 0.1}
    assert torch.allclose(tv_denoise(x, w, **kw), tv_denoise_fast(x, w, **kw), atol=2e-6)
    grey = x[3:].expand(5, -1, -1, -1).contiguous()  # grey-image shortcut: same result
    fast = tv_denoise_fast(grey, w[3:], **kw)
    assert torch.equal(fast[:, 0], fast[:, 1]) and torch.equal(fast[:, 0], fast[:, 2])
    assert torch.allclose(fast, tv_denoise(grey, w[3:], **kw), atol=2e-6)


# ---------------------------------------------------------------------------- rate mask
@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_bit_map_keeps_every_coded_bit(untrained, images, prior):
    model, x = untrained[prior], images[0][:3]
    bits = latent_bit_map(model, x)
    assert bits.shape == (3, *model.latent_hw)
    assert torch.allclose(bits.flatten(1).sum(1), model.estimate(x).bits(), rtol=1e-4)  # y + z
    mask = rate_mask(model, x)
    assert mask.shape == (3, 1, 32, 32) and mask.min() >= 0 and mask.max() <= 1


def test_rate_mask_follows_the_bit_map(trained, images):
    x = images[0][:4]
    bits = latent_bit_map(trained, x)
    mask = rate_mask(trained, x)
    assert torch.allclose(mask.flatten(1).amin(1), torch.zeros(4), atol=1e-6)
    assert torch.allclose(mask.flatten(1).amax(1), torch.ones(4), atol=1e-6)
    # the pixels at the centre of a latent position rank like the positions' bits
    stride = 32 // bits.shape[-1]
    centres = mask[:, 0, stride // 2 :: stride, stride // 2 :: stride].flatten(1)
    for i in range(4):
        top, bottom = bits[i].flatten().argmax(), bits[i].flatten().argmin()
        assert centres[i, top] > centres[i, bottom] + 0.5
    # a constant rate map (nothing to tell apart) gives a zero mask, not amplified rounding
    flat = normalise_per_image(torch.full((2, 1, 4, 4), 3.0) + 1e-7 * torch.rand(2, 1, 4, 4))
    assert torch.equal(flat, torch.zeros_like(flat))


def test_weights_formula_and_stronger_smoothing_where_few_bits():
    d = ObjectAwareTV(tv_weight=0.1, min_weight=0.02)
    m = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(d.weights_from_mask(m), torch.tensor([0.1, 0.06, 0.02]))
    # a flat grey image with noise: the half marked "few bits" (mask 0) is smoothed more
    g = torch.Generator().manual_seed(0)
    x = (0.5 + 0.05 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 16:] = 1.0
    residual = (d.denoise_with_mask(x, mask) - 0.5).abs()  # noise left after denoising
    low, high = residual[..., 2:14].mean(), residual[..., 18:30].mean()
    assert high > 2 * low, (low, high)


def test_object_tv_smooths_low_rate_pixels_relatively_more(trained, images):
    """On attacked images, relative to uniform TV of the same weight, object_tv changes the
    lowest-rate pixels (mask < 0.25) much more than the highest-rate ones (mask > 0.75)."""
    x = RatePGD(8 / 255, steps=5, noise_copies=2)(trained, images[0])
    mask = rate_mask(trained, x)
    obj = (ObjectAwareTV()(trained, x) - x).abs().mean(1, keepdim=True)
    uni = (TotalVariation()(None, x) - x).abs().mean(1, keepdim=True)
    low, high = mask < 0.25, mask > 0.75
    ratio_low = obj[low].sum() / uni[low].sum()
    ratio_high = obj[high].sum() / uni[high].sum()
    assert ratio_low > ratio_high + 0.15, (ratio_low, ratio_high)


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", NAMES)
def test_gradient_path_is_finite_and_non_zero(untrained, images, name):
    """Fails if a defence's gradient path were broken (detached, NaN or zero)."""
    d = build_defense(name, **QUICK.get(name, {}))
    model = untrained["mshp"]
    x = torch.cat([images[0][:2], colour_images(1)]).requires_grad_(True)
    out = d.differentiable(model, x)
    assert torch.allclose(out, d(model, x.detach()), atol=2e-6), name  # same forward value
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((out * r).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    if d.gradient == "bpda":
        assert torch.equal(grad, r), "BPDA is the identity gradient"
    else:
        assert not torch.allclose(grad, r), "an exact gradient is not the identity here"


def test_exact_gradients_match_finite_differences():
    """gradcheck (float64) through the checkpointed unrolled TV steps (12 steps: two
    segments), the DCT low-pass and the blur."""
    x = colour_images(1, lo=0.3, hi=0.7)[..., :6, :6].double().requires_grad_(True)
    w = torch.linspace(0.02, 0.1, 36, dtype=torch.float64).view(1, 1, 6, 6)
    kw = {"steps": 12, "step_size": 0.15, "fidelity": 0.5, "eps": 0.1}
    assert torch.autograd.gradcheck(lambda t: tv_denoise(t, w, **kw), (x,))
    assert torch.autograd.gradcheck(lambda t: LowPass(0.3).transform(None, t, None), (x,))
    assert torch.autograd.gradcheck(lambda t: GaussianBlur(0.8).transform(None, t, None), (x,))


# -------------------------------------------------------------------------- frequency
def test_dct_is_orthonormal_and_the_band_is_spatial():
    d = dct_matrix(8, dtype=torch.float64)
    assert torch.allclose(d @ d.T, torch.eye(8, dtype=torch.float64), atol=1e-12)
    x = torch.rand(2, 3, 8, 12, dtype=torch.float64)
    assert torch.allclose(idct2(dct2(x)), x, atol=1e-12)
    mask = low_band_mask(32, 32, 0.1)
    assert mask.shape == (32, 32) and mask[0, 0] == 1 and mask[-1, -1] == 0
    assert 0.1 <= band_fraction(32, 32, 0.1) < 0.12
    # the projection acts on each image and channel alone
    x = torch.rand(3, 3, 32, 32)
    p = project_low_band(x, 0.1)
    assert torch.allclose(p[1, 2], project_low_band(x[1:2, 2:3], 0.1)[0, 0], atol=1e-6)
    assert out_of_band_energy(p, 0.1).max() < 1e-8 * p.pow(2).sum()
    assert torch.allclose(project_low_band(p, 0.1), p, atol=1e-6)


def test_lowpass_keeps_the_band():
    x = colour_images(2, lo=0.3, hi=0.7)
    out = LowPass(0.25)(None, x)
    rel = out_of_band_energy(out, 0.25) / out.pow(2).flatten(1).sum(1)
    assert rel.max() < 1e-10
    assert torch.allclose(project_low_band(x, 0.25), out, atol=1e-6)


def test_jpeg_outputs_8_bit_values():
    out = JPEG(50)(None, colour_images(2))
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-4)


# ------------------------------------------------------------------ real bytes, trained
def test_object_tv_lowers_the_payload_of_rate_attacked_images(trained, images):
    x, labels = images
    adv = RatePGD(8 / 255, steps=10, noise_copies=4)(trained, x)
    attacked = _payload(trained, adv)
    assert attacked > _payload(trained, x)  # the attack works on this model
    defended = ObjectAwareTV()(trained, adv)
    assert _payload(trained, defended) < attacked
    assert _payload(trained, ObjectAwareTV()(trained, x)) <= _payload(trained, x) + 1
