"""Tests of entroguard.threats.attacks: budgets, reproducibility, model state, and that the
attacks do what they claim on trained models (real payload bytes, accuracy)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from entroguard.data import load_dataset
from entroguard.errors import InputError
from entroguard.models import SplitClassifier
from entroguard.models.small import build_small
from entroguard.models.split import range_kept
from entroguard.threats.attacks import (
    ATTACKS,
    Attack,
    ClassifierPGD,
    RatePGD,
    SignNoise,
    build_attack,
    frozen_eval,
    rate_bits,
)
from entroguard.train.checkpoint import load_checkpoint
from entroguard.train.loop import TrainConfig, train_split
from entroguard.train.zoo import default_zoo_dir

EPS = 8 / 255


def _seed(s: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(s)


def _fresh(prior: str) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_small("resnet_s", prior).eval()


@pytest.fixture(scope="module")
def untrained() -> dict[str, nn.Module]:
    """Untrained models: enough for budgets, determinism and state checks."""
    return {prior: _fresh(prior) for prior in ("fp", "mshp")}


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """6 Fashion-MNIST test images (black backgrounds: the clip at 0 is exercised) plus a
    white one (the clip at 1), and their labels."""
    test = load_dataset("fashion-mnist", "test")
    x = torch.cat([test.to_float(slice(0, 6)), torch.ones(1, 3, 32, 32)])
    labels = torch.cat([test.labels[:6], test.labels[:1]])
    return x, labels


def _all_attacks(eps: float = EPS, norm: str = "linf", **pgd) -> list[Attack]:
    quick = {"steps": 3, "norm": norm, **pgd}
    attacks: list[Attack] = [
        RatePGD(eps, quantization="noise", noise_copies=4, **quick),
        RatePGD(eps, quantization="ste", **quick),
        ClassifierPGD(eps, **quick),
    ]
    if norm == "linf":
        attacks.append(SignNoise(eps))
    return attacks


# ------------------------------------------------------------------ registry and repr
def test_registry_builds_by_name_with_eps_in_grey_levels():
    assert set(ATTACKS) == {"rate_pgd", "clf_pgd", "noise"}
    attack = build_attack("rate_pgd", 8, steps=5, quantization="ste")
    assert isinstance(attack, RatePGD)
    assert attack.eps == pytest.approx(8 / 255)
    assert (attack.steps, attack.quantization) == (5, "ste")
    assert isinstance(build_attack("clf_pgd", 4), ClassifierPGD)
    assert build_attack("noise", 16).eps == pytest.approx(16 / 255)
    with pytest.raises(ValueError, match="did you mean 'rate_pgd'"):
        build_attack("rate_pdg", 8)


def test_repr_shows_hyper_parameters():
    text = repr(RatePGD(8 / 255, steps=7, step_ratio=0.2, norm="l2", noise_copies=3))
    for part in ("RatePGD(", "eps=0.0313725", "steps=7", "step_ratio=0.2", "norm='l2'",
                 "quantization='noise'", "noise_copies=3", "random_start=False"):  # fmt: skip
        assert part in text
    assert repr(SignNoise(0.5)) == "SignNoise(eps=0.5)"
    assert "ClassifierPGD(eps=0.0313725, steps=20" in repr(ClassifierPGD())


def test_step_ratio_is_a_fraction_of_eps_and_alpha_an_absolute_step():
    assert RatePGD(16 / 255, step_ratio=0.1).alpha == pytest.approx(1.6 / 255)
    assert RatePGD(8 / 255, alpha=2 / 255).step_ratio == pytest.approx(0.25)
    with pytest.raises(TypeError, match="step_size was renamed step_ratio.*alpha"):
        RatePGD(8 / 255, step_size=2 / 255)  # the torchattacks habit, read as a fraction
    with pytest.raises(TypeError, match="did you mean noise_copies"):
        RatePGD(8 / 255, noise_copy=4)


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: RatePGD(-1.0), "eps"),
        (lambda: RatePGD(EPS, steps=0), "steps"),
        (lambda: RatePGD(EPS, step_ratio=0), "step_ratio"),
        (lambda: RatePGD(EPS, norm="l1"), "norm"),
        (lambda: RatePGD(EPS, quantization="round"), "quantization"),
        (lambda: RatePGD(EPS, noise_copies=0), "noise_copies"),
        (lambda: ClassifierPGD(EPS, norm="linf2"), "norm"),
    ],
)
def test_bad_hyper_parameters_are_refused(make, error):
    with pytest.raises(ValueError, match=error):
        make()


def test_bad_inputs_are_refused_with_clear_errors(untrained, batch):
    model, (x, labels) = untrained["fp"], batch
    attack = RatePGD(EPS, steps=1, quantization="ste")
    with pytest.raises(InputError, match="unsqueeze"):
        attack(model, x[0])
    with pytest.raises(InputError, match="divide by 255"):
        attack(model, (x * 255).to(torch.uint8))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        attack(model, x * 2 - 0.5)
    with pytest.raises(InputError, match="labels"):
        ClassifierPGD(EPS, steps=1)(model, x)
    with pytest.raises(InputError, match="labels"):
        ClassifierPGD(EPS, steps=1)(model, x, labels[:2])
    with pytest.raises(TypeError, match="torch.Generator"):
        attack(model, x, generator=0)


def test_the_range_is_checked_once_per_attack_not_at_every_step(untrained, batch, monkeypatch):
    """The attack checks its images' range before the first step; inside it the model checks
    only the dtype (no min/max, which on a GPU waits for the device, at every step); after it,
    and outside any attack, the model checks the range again."""
    model, (x, _) = untrained["mshp"], batch
    reads = []
    original_min = torch.Tensor.min

    def counting_min(self, *args, **kwargs):
        reads.append(tuple(self.shape))
        return original_min(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "min", counting_min)
    RatePGD(EPS, steps=5, noise_copies=2)(model, x, generator=_seed())
    assert reads.count(tuple(x.shape)) == 1, reads  # the entry check only
    with range_kept():
        model.analyze(x * 2 - 0.5)  # the caller vouched for the range
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        model.analyze(x * 2 - 0.5)


# ---------------------------------------------------------------------------- budgets
@pytest.mark.parametrize("prior", ["fp", "mshp"])
@pytest.mark.parametrize("eps", [2 / 255, 32 / 255])
def test_linf_budget_and_range(untrained, batch, prior, eps):
    x, labels = batch
    for attack in _all_attacks(eps, random_start=True):
        adv = attack(untrained[prior], x, labels, _seed())
        assert adv.shape == x.shape and adv.dtype == x.dtype, attack
        assert (adv - x).abs().max() <= eps + 1e-6, attack
        assert adv.min() >= 0 and adv.max() <= 1, attack
        assert not torch.equal(adv, x), f"{attack} did not move the images"


def test_l2_budget_and_range(untrained, batch):
    x, labels = batch
    eps = 0.5
    for attack in _all_attacks(eps, norm="l2", random_start=True):
        adv = attack(untrained["mshp"], x, labels, _seed())
        assert ((adv - x).flatten(1).norm(dim=1) <= eps + 1e-5).all(), attack
        assert adv.min() >= 0 and adv.max() <= 1, attack
        assert (adv - x).flatten(1).norm(dim=1).max() > eps / 2, f"{attack} barely moved"


def test_zero_budget_returns_the_images(untrained, batch):
    x, labels = batch
    for attack in _all_attacks(0.0):
        assert torch.equal(attack(untrained["fp"], x, labels), x)


def test_sign_noise_has_exact_magnitude(untrained, batch):
    model, (x, _) = untrained["fp"], batch
    x = x[:6] * 0.5 + 0.25  # away from 0 and 1: nothing is clipped
    adv = SignNoise(EPS)(model, x, generator=_seed())
    delta = adv - x
    assert torch.allclose(delta.abs(), torch.full_like(x, EPS), atol=1e-6)
    share_up = (delta > 0).float().mean().item()
    assert 0.45 < share_up < 0.55
    clipped = SignNoise(EPS)(model, torch.ones(2, 3, 32, 32), generator=_seed())
    assert clipped.max() == 1 and torch.allclose(clipped.min(), torch.tensor(1 - EPS))


# ---------------------------------------------------------------- reproducibility
def test_same_seed_gives_bit_identical_images_and_global_rng_is_untouched(untrained, batch):
    model, (x, labels) = untrained["mshp"], (batch[0][:3], batch[1][:3])
    state = torch.get_rng_state()
    for attack in _all_attacks(random_start=True):
        a = attack(model, x, labels, _seed(3))
        assert torch.equal(a, attack(model, x, labels, _seed(3))), attack
        assert not torch.equal(a, attack(model, x, labels, _seed(4))), f"{attack} ignores seeds"
        if isinstance(attack, SignNoise):  # no generator: a fixed default seed, not global RNG
            assert torch.equal(attack(model, x, labels), attack(model, x, labels))
    assert torch.equal(torch.get_rng_state(), state)


def test_model_state_is_restored_and_no_parameter_gets_a_gradient(batch):
    x, labels = batch
    model = _fresh("mshp")
    model.train()
    model.codec.h_s.eval()  # a mixed-mode model keeps its modes
    frozen = model.decoder[0].weight
    frozen.requires_grad_(False)
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for attack in _all_attacks():
        attack(model, x, labels, _seed())
        assert {name: m.training for name, m in model.named_modules()} == modes
        assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
        assert all(p.grad is None for p in model.parameters())
    with pytest.raises(InputError):  # the model refuses 16x16 images inside the attack
        RatePGD(EPS, steps=1)(model, x[:, :, :16, :16])
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags


def test_frozen_eval_inside_no_grad_still_attacks(untrained, batch):
    x, _ = batch
    with torch.no_grad():
        adv = RatePGD(EPS, steps=2, quantization="ste")(untrained["fp"], x)
    assert not torch.equal(adv, x)
    with frozen_eval(untrained["fp"]) as m:
        assert not m.training and not any(p.requires_grad for p in m.parameters())


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_ste_attack_of_a_batch_equals_attacks_of_single_images(untrained, batch, prior):
    """Images do not interact. One step matches to float precision; over several sign steps
    a one-ulp difference between batched and single-image convolutions may flip the sign of
    a near-zero gradient, so a handful of pixels may differ by a step."""
    x, labels = batch
    model = untrained[prior]
    for steps, max_share in ((1, 0.0), (5, 0.002)):
        for attack in (RatePGD(EPS, steps, quantization="ste"), ClassifierPGD(EPS, steps)):
            together = attack(model, x, labels)
            alone = torch.cat([attack(model, x[i : i + 1], labels[i : i + 1]) for i in range(7)])
            differ = ((together - alone).abs() > 1e-5).float().mean().item()
            assert differ <= max_share, (attack, differ)
            assert not torch.equal(together, x)


# --------------------------------------------------------------------- the rate loss
def test_noise_copies_are_one_batched_codec_call(untrained, batch, monkeypatch):
    model, (x, _) = untrained["mshp"], batch
    sizes = []
    original = model.codec.likelihoods

    def spy(y, quantization="noise", generator=None):
        sizes.append((y.shape[0], quantization))
        return original(y, quantization, generator)

    monkeypatch.setattr(model.codec, "likelihoods", spy)
    RatePGD(EPS, steps=3, noise_copies=5)(model, x)
    assert sizes == [(5 * len(x), "noise")] * 3
    sizes.clear()
    RatePGD(EPS, steps=2, quantization="ste", noise_copies=5)(model, x)
    assert sizes == [(len(x), "ste")] * 2


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_rate_loss_counts_every_coded_symbol_and_reaches_the_input(untrained, batch, prior):
    model, (x, _) = untrained[prior], batch
    with frozen_eval(model):
        x = x.clone().requires_grad_(True)
        bits = rate_bits(model, x, "ste", _seed())
        out = model.codec.likelihoods(model.analyze(x), "ste")
        expected = sum(-torch.log2(v).flatten(1).sum(1) for v in out.likelihoods.values())
        assert set(out.likelihoods) == ({"y", "z"} if prior == "mshp" else {"y"})
        assert torch.allclose(bits, expected)
        for name, lik in out.likelihoods.items():  # each part moves with the input
            (grad,) = torch.autograd.grad(-torch.log2(lik).sum(), x, retain_graph=True)
            assert grad.abs().sum() > 0, name
        # the expectation over noisy copies is their mean, copy by copy
        noisy = rate_bits(model, x, "noise", _seed(1), noise_copies=3)
        y = model.analyze(x).repeat(3, 1, 1, 1)
        per_copy = model.codec.likelihoods(y, "noise", _seed(1)).bits().view(3, -1)
        assert torch.allclose(noisy, per_copy.mean(0))


# ------------------------------------------------- end to end, on trained models (slow)
def _fit_entropy_model(model: SplitClassifier, images: torch.Tensor, steps: int) -> None:
    """Fit the codec's densities to the latents of ``images`` (encoder fixed)."""
    gen = _seed()
    with torch.no_grad():
        y = model.analyze(images)
    params = [p for n, p in model.codec.named_parameters() if not n.endswith("quantiles")]
    optimizer = torch.optim.Adam(params, lr=2e-2)
    for _ in range(steps):
        loss = model.codec.likelihoods(y, "noise", gen).bits().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _quickly_trained(prior: str) -> SplitClassifier:
    """A resnet_s model trained in about a minute of 2 cores (used when the zoo is absent).

    A fresh entropy model's densities are far wider than the latents and would need thousands
    of steps to shrink, which leaves an untrained rate nothing to inflate; so they are first
    fitted to the fresh encoder's latents, then one short rate-distortion epoch at a high beta
    teaches the encoder to spend few bits.
    """
    model = _fresh(prior)
    train = load_dataset("fashion-mnist", "train").subset(1280)
    _fit_entropy_model(model, train.to_float(slice(0, 128)), steps=40)
    config = TrainConfig(beta=0.64, epochs=1, batch_size=64, lr=5e-3)
    train_split(model, train, config, progress=False)
    return model


@pytest.fixture(scope="module")
def trained():
    """``trained(prior)``: the zoo's resnet_s beta 0.01 model if shipped, else a quick one."""
    cache: dict[str, SplitClassifier] = {}

    def get(prior: str) -> SplitClassifier:
        if prior not in cache:
            path = default_zoo_dir() / f"resnet_s-{prior}-beta0.01.safetensors"
            cache[prior] = load_checkpoint(path) if path.is_file() else _quickly_trained(prior)
        return cache[prior]

    return get


@pytest.fixture(scope="module")
def test_images() -> tuple[torch.Tensor, torch.Tensor]:
    test = load_dataset("fashion-mnist", "test")
    return test.to_float(slice(0, 32)), test.labels[:32]


def _payload(model: SplitClassifier, images: torch.Tensor) -> float:
    """Mean real payload bytes per image (the coder's strings)."""
    return sum(model.compress(images).payload_bytes()) / len(images)


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_rate_pgd_inflates_the_real_payload_more_than_noise(trained, test_images, prior):
    model, (x, _) = trained(prior), test_images
    clean = _payload(model, x)
    adv = RatePGD(EPS, quantization="ste")(model, x, generator=_seed())
    noisy = SignNoise(EPS)(model, x, generator=_seed())
    assert (adv - x).abs().max() <= EPS + 1e-6
    inflation = _payload(model, adv) / clean - 1
    noise_inflation = _payload(model, noisy) / clean - 1
    assert inflation > 0.10, f"{prior}: rate attack inflated the payload by {inflation:.1%}"
    assert inflation > noise_inflation + 0.05, (inflation, noise_inflation)
    # the estimate the attack climbs counts every coded symbol (y and, for MSHP, z)
    est = model.estimate(adv)
    assert set(est.likelihoods) == ({"y", "z"} if prior == "mshp" else {"y"})
    assert est.bits().mean() > model.estimate(x).bits().mean() * 1.10


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_rate_pgd_with_noisy_copies_inflates_the_real_payload(trained, test_images, prior):
    model, x = trained(prior), test_images[0][:16]
    adv = RatePGD(EPS, steps=10, noise_copies=4)(model, x, generator=_seed())
    assert (adv - x).abs().max() <= EPS + 1e-6
    inflation = _payload(model, adv) / _payload(model, x) - 1
    assert inflation > 0.05, f"{prior}: inflation {inflation:.1%}"


@pytest.mark.slow
def test_classifier_pgd_lowers_accuracy(trained, test_images):
    model, (x, labels) = trained("fp"), test_images
    clean = (model(x).argmax(1) == labels).float().mean().item()
    adv = ClassifierPGD(16 / 255, steps=10)(model, x, labels)
    attacked = (model(adv).argmax(1) == labels).float().mean().item()
    assert (adv - x).abs().max() <= 16 / 255 + 1e-6
    assert clean >= 0.3, f"the test model is not trained (accuracy {clean:.0%})"
    assert attacked <= clean / 2, (clean, attacked)


@pytest.mark.slow
@pytest.mark.parametrize(("prior", "seeds"), [("fp", (0,)), ("mshp", (0, 1))])
def test_bf16_and_tf32_keep_the_rate_attack_strength_within_one_point(trained, prior, seeds):
    """The paper's attack (20 steps, 16 noisy copies) in bfloat16 autocast reaches the same
    real-payload inflation as in float32 within 1 point (64 test images; on mshp averaged over
    two seeds, whose own spread is near a point); TF32 changes nothing on the CPU and leaves
    the global flags as they were."""
    model = trained(prior)
    x = load_dataset("fashion-mnist", "test").to_float(slice(0, 64))
    clean = _payload(model, x)
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    inflation = {}
    for p in ("float32", "bf16"):
        adv = [RatePGD(EPS, precision=p)(model, x, generator=_seed(s)) for s in seeds]
        inflation[p] = sum(100 * (_payload(model, a) / clean - 1) for a in adv) / len(seeds)
    assert abs(inflation["bf16"] - inflation["float32"]) <= 1.0, inflation
    tf32 = RatePGD(EPS, precision="tf32", steps=2)(model, x[:4], generator=_seed())
    assert torch.equal(tf32, RatePGD(EPS, steps=2)(model, x[:4], generator=_seed()))
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags
    with pytest.raises(ValueError, match="precision must be one of"):
        RatePGD(EPS, precision="fp16")
