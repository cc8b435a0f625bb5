"""Tests of entroguard.threats.adaptive: the low-frequency attack stays in its DCT band, the
region attack counts the region's bits, the attack through a defence differentiates it, and
all keep the attack contract (budget, range, reproducibility, recorded defence)."""

from __future__ import annotations

import pytest
import torch
from defense_helpers import (
    colour_images,
    fresh,
)

from entroguard.defenses import ObjectAwareTV
from entroguard.defenses.dct import out_of_band_energy
from entroguard.defenses.rate_mask import latent_bit_map
from entroguard.threats.adaptive import (
    ADAPTIVE_ATTACKS,
    RateLowFreq,
    RatePGDThrough,
    RateRegion,
    high_rate_region,
)
from entroguard.threats.attacks import RatePGD, frozen_eval, rate_bits

EPS = 8 / 255
QUICK = {"steps": 4, "noise_copies": 2}


def _seed(s: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(s)


def _relative_out_of_band(delta: torch.Tensor, fraction: float) -> torch.Tensor:
    return out_of_band_energy(delta, fraction) / delta.pow(2).flatten(1).sum(1)


def _payload(model, x: torch.Tensor) -> float:
    return sum(model.compress(x).payload_bytes()) / len(x)


def _quick_attacks(eps: float = EPS, **kw) -> list:
    through = {"defense": "object_tv", "defense_params": {"steps": 10}}
    return [
        RateLowFreq(eps, **QUICK, **kw),
        RateRegion(eps, **QUICK, **kw),
        RatePGDThrough(eps, **QUICK, **through, **kw),
    ]


# ------------------------------------------------------------------ registry and repr
def test_registry_and_campaign_style_construction():
    assert set(ADAPTIVE_ATTACKS) == {"rate_lowfreq", "rate_region", "rate_pgd_through"}
    for name, cls in ADAPTIVE_ATTACKS.items():
        attack = cls(eps=8 / 255, steps=3)  # how a campaign config builds them
        assert attack.name == name and attack.adapts_to == "object_tv"
    assert RatePGDThrough(defense="jpeg", defense_params={"quality": 50}).adapts_to == "jpeg"
    assert RateLowFreq(defense="tv").adapts_to == "tv"
    with pytest.raises(ValueError, match="did you mean 'object_tv'"):
        RatePGDThrough(defense="object_vt")
    with pytest.raises(ValueError):
        RateLowFreq(fraction=0.0)
    with pytest.raises(ValueError):
        RateRegion(top_fraction=1.5)


def test_repr_shows_hyper_parameters():
    assert "fraction=0.1" in repr(RateLowFreq()) and "box_iters=10" in repr(RateLowFreq())
    assert "top_fraction=0.25" in repr(RateRegion())
    text = repr(RatePGDThrough(defense="jpeg", defense_params={"quality": 50}))
    assert "adapts_to='jpeg'" in text and "{'quality': 50}" in text


# ------------------------------------------------------------------ attack contract
@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_budget_range_and_reproducibility(untrained, images, prior):
    x = images[0][:3]
    for attack in _quick_attacks():
        adv = attack(untrained[prior], x, generator=_seed())
        assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
        assert (adv - x).abs().max() <= EPS + 1e-6, attack.name
        assert (adv - x).abs().max() > 0, attack.name
        assert torch.equal(adv, attack(untrained[prior], x, generator=_seed())), attack.name


def test_l2_budget(untrained, images):
    x = images[0][:2]
    for attack in _quick_attacks(eps=0.5, norm="l2"):
        adv = attack(untrained["mshp"], x, generator=_seed())
        assert (adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5, attack.name


def test_model_state_is_restored(images):
    model = fresh("fp").train()
    modes = {n: m.training for n, m in model.named_modules()}
    for attack in _quick_attacks():
        attack(model, images[0][:2])
        assert {n: m.training for n, m in model.named_modules()} == modes
        assert all(p.requires_grad and p.grad is None for p in model.parameters())


# ------------------------------------------------------------------ low frequency
@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_lowfreq_perturbation_is_in_the_spatial_band(untrained, prior):
    """Fails if the DCT mask did not mask (e.g. built over batch and channels): on images
    that never saturate, the perturbation has no energy outside the band, but some inside."""
    x = colour_images(3, lo=0.2, hi=0.8)
    attack = RateLowFreq(EPS, **QUICK)
    delta = attack(untrained[prior], x, generator=_seed()) - x
    assert delta.pow(2).flatten(1).sum(1).min() > 1e-4  # a real perturbation, in the band
    assert _relative_out_of_band(delta, 0.1).max() < 1e-6
    # an ordinary rate attack is broadband
    plain = RatePGD(EPS, **QUICK)(untrained[prior], x, generator=_seed()) - x
    assert _relative_out_of_band(plain, 0.1).min() > 0.3


def test_lowfreq_clipping_residual_is_small_on_saturated_images(trained, images):
    """Fashion-MNIST's black background saturates at 0: the clip leaves an out-of-band
    residual, which the alternating projections keep small (documented tolerance 1e-2)."""
    x = images[0]
    delta = RateLowFreq(EPS, steps=10, noise_copies=2)(trained, x, generator=_seed()) - x
    assert _relative_out_of_band(delta, 0.1).max() < 1e-2
    # without the box projections the residual is much larger
    loose = RateLowFreq(EPS, steps=10, noise_copies=2, box_iters=0)(trained, x) - x
    assert _relative_out_of_band(loose, 0.1).max() > 3 * _relative_out_of_band(delta, 0.1).max()


def test_lowfreq_band_fraction_is_a_parameter(untrained):
    x = colour_images(2, lo=0.2, hi=0.8)
    delta = RateLowFreq(EPS, fraction=0.02, **QUICK)(untrained["fp"], x) - x
    assert _relative_out_of_band(delta, 0.02).max() < 1e-6
    grad = torch.rand(2, 3, 32, 32)
    kept = RateLowFreq(fraction=0.02).transform_gradient(grad)
    assert kept.shape == grad.shape and _relative_out_of_band(kept, 0.02).max() < 1e-6


# ------------------------------------------------------------------ region
def test_high_rate_region_picks_the_top_positions():
    bits = torch.arange(2 * 16, dtype=torch.float32).view(2, 4, 4)
    bits[1] = bits[1].flip(-1)
    region = high_rate_region(bits, 0.25)
    assert region.sum(dim=(1, 2)).tolist() == [4.0, 4.0]
    assert region[0, 3].tolist() == [1.0, 1.0, 1.0, 1.0]  # the last row has the most bits
    assert region[1, 3].tolist() == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_region_loss_is_the_rate_inside_the_region(untrained, images, prior):
    model, x = untrained[prior], images[0][:3]
    attack = RateRegion(EPS, quantization="ste")
    with frozen_eval(model):
        everywhere = torch.ones(3, *model.latent_hw)
        full = attack.region_bits(model, x, everywhere, _seed())
        assert torch.allclose(full, rate_bits(model, x, "ste", _seed()), rtol=1e-5)
        region = attack.region(model, x)
        assert region.sum(dim=(1, 2)).tolist() == [16.0] * 3  # 25% of the 8x8 positions
        inside = attack.region_bits(model, x, region, _seed())
        assert (inside < full).all()
        # the same as the clean bit map (hyper-latent bits spread over their positions)
        # summed over the region
        clean = latent_bit_map(model, x)
        assert torch.allclose(inside, (clean * region).flatten(1).sum(1), rtol=1e-4)
    assert attack._region is None  # the attack object keeps no batch state


# ------------------------------------------------------------------ through a defence
@pytest.mark.parametrize("defense", ["object_tv", "jpeg", "lowpass"])
def test_through_loss_is_the_rate_of_the_defended_images(untrained, images, defense):
    model, x = untrained["mshp"], images[0][:2]
    params = {"steps": 10} if defense == "object_tv" else {}
    attack = RatePGDThrough(EPS, quantization="ste", defense=defense, defense_params=params)
    with frozen_eval(model):
        xg = x.clone().requires_grad_(True)
        loss = attack.loss(model, xg, None, _seed())
        defended = attack.defense(model, x)
        assert torch.allclose(loss, rate_bits(model, defended, "ste", _seed()).mean(), rtol=1e-5)
        (grad,) = torch.autograd.grad(loss, xg)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_attacks_through_object_tv_beat_it_better_than_plain_rate_pgd(trained, images):
    """On the trained model, after object_tv, the images of the attack that knows the
    defence cost more bytes than those of the same-budget rate attack that ignores it."""
    x = images[0]
    defense = ObjectAwareTV()
    common = {"steps": 8, "noise_copies": 2, "step_ratio": 0.2}
    plain = RatePGD(EPS, **common)(trained, x, generator=_seed())
    through = RatePGDThrough(EPS, **common, defense="object_tv")(trained, x, generator=_seed())
    assert _payload(trained, defense(trained, through)) > _payload(trained, defense(trained, plain))


# ------------------------------------------------------------------ a randomised defence
def test_randomised_object_tv_draws_from_the_generator_and_keeps_both_paths_equal(trained, images):
    x = images[0][:4]
    defense = ObjectAwareTV(steps=20, jitter=0.5, dither=4 / 255)
    assert defense.randomized and not ObjectAwareTV().randomized
    a, b = (defense(trained, x, torch.Generator().manual_seed(s)) for s in (1, 1))
    c = defense(trained, x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(defense(trained, x), defense(trained, x))  # no generator: seeded 0
    with frozen_eval(trained):
        slow = defense.differentiable(trained, x, torch.Generator().manual_seed(1))
    assert torch.allclose(slow, a, atol=1e-5)
    with pytest.raises(ValueError, match="jitter"):
        ObjectAwareTV(jitter=1.0)
    with pytest.raises(ValueError, match="unstable"):
        ObjectAwareTV(tv_weight=0.1, step_size=0.15, tv_eps=0.07, jitter=0.5)


def test_eot_averages_over_the_randomised_defence(trained, images):
    """With a randomised object_tv the through attack's loss is the mean over eot_samples
    draws, taken from the attack's generator in order."""
    x = images[0][:2]
    params = {"steps": 10, "jitter": 0.5, "dither": 4 / 255}
    attack = RatePGDThrough(EPS, quantization="ste", defense="object_tv", defense_params=params,
                            eot_samples=3)  # fmt: skip
    assert attack.eot_samples == 3
    with frozen_eval(trained):
        loss = attack.loss(trained, x, None, _seed())
        draws = _seed()
        expected = torch.stack([rate_bits(trained, attack.defense(trained, x, draws), "ste",
                                          draws).mean() for _ in range(3)]).mean()  # fmt: skip
    assert torch.allclose(loss, expected, rtol=1e-4)
    deterministic = RatePGDThrough(EPS, defense="object_tv", eot_samples=3)
    assert deterministic.eot_samples == 1
