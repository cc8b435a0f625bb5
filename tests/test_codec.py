"""The entropy models: exact round trips, honest estimates, differentiable paths."""

from __future__ import annotations

import pytest
import torch

from entroguard.codec import FactorizedPrior, MeanScaleHyperprior
from entroguard.models.transforms import hyper_analysis, hyper_synthesis


def make_codec(prior: str, channels: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    if prior == "fp":
        codec = FactorizedPrior(channels)
    else:
        codec = MeanScaleHyperprior(
            channels, 4, hyper_analysis(channels, 4), hyper_synthesis(4, channels)
        )
    codec.update_tables()
    return codec.eval()


@pytest.mark.parametrize("prior", ["fp", "mshp"])
@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("hw", [(8, 8), (5, 7)])
def test_round_trip_is_exact(prior, batch, hw):
    codec = make_codec(prior)
    y = torch.randn(batch, 8, *hw, generator=torch.Generator().manual_seed(batch)) * 3
    strings = codec.compress(y)
    assert len(strings) == batch and all(len(s) == len(codec.string_names) for s in strings)
    assert all(isinstance(b, bytes) for s in strings for b in s)
    decoded = codec.decompress(strings, hw)
    assert torch.equal(decoded, codec.quantize(y))
    # The differentiable path runs the float h_s, coding its integer form: they agree to the
    # integer network's precision (about 2e-3 in a mean), except where that moves y - mean
    # across a rounding boundary (a symbol 1 apart).
    gap = (decoded - codec.likelihoods(y, "round").y_hat).abs()
    assert gap.max() <= 1.01
    assert (gap > 4e-3).float().mean() <= 0.01


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_per_image_strings_do_not_depend_on_the_batch(prior):
    codec = make_codec(prior)
    y = torch.randn(3, 8, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    batched = codec.compress(y)
    alone = [codec.compress(y[i : i + 1])[0] for i in range(3)]
    assert batched == alone


def test_uninitialised_tables_fail_loudly():
    codec = FactorizedPrior(4)
    with pytest.raises(RuntimeError, match="update_tables"):
        codec.compress(torch.zeros(1, 4, 2, 2))


def test_wrong_latent_shape_is_a_clear_error():
    codec = make_codec("fp")
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        codec.compress(torch.zeros(1, 3, 2, 2))


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_estimate_matches_real_bytes_on_a_fitted_density(prior):
    """After a short fit of the density, the coder's bytes track -log2 p within a few bytes."""
    codec = make_codec(prior)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(64, 8, 8, 8, generator=g) * 2
    opt = torch.optim.Adam(codec.parameters(), lr=1e-2)
    for _ in range(150):
        loss = codec.likelihoods(data, "noise", g).bits().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    codec.update_tables()
    y = torch.randn(16, 8, 8, 8, generator=g) * 2
    est_bytes = codec.likelihoods(y, "round").bits() / 8
    real = torch.tensor([sum(len(s) for s in strings) for strings in codec.compress(y)])
    assert (real <= 1.01 * est_bytes + 8).all(), (real, est_bytes)
    assert (real >= 0.95 * est_bytes - 1).all(), (real, est_bytes)


@pytest.mark.parametrize("prior", ["fp", "mshp"])
@pytest.mark.parametrize("quantization", ["noise", "ste"])
def test_likelihood_paths_are_differentiable(prior, quantization):
    codec = make_codec(prior)
    y = torch.randn(2, 8, 8, 8, requires_grad=True)
    out = codec.likelihoods(y, quantization, torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(out.bits().sum(), y)
    assert grad.abs().sum() > 0
    if prior == "mshp":
        assert set(out.likelihoods) == {"y", "z"}


def test_mshp_gradient_flows_through_the_means():
    """The published attack only reached the input through the scales; ours sees the means."""
    codec = make_codec("mshp")
    y = torch.randn(2, 8, 8, 8)
    z_hat = codec.entropy_bottleneck.quantize(
        codec.h_a(y), "dequantize", codec.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1)
    )
    scales, means = codec.gaussian_params(z_hat, (8, 8))
    means = means.detach().requires_grad_()
    residual = y - means
    residual = residual + (torch.round(residual) - residual).detach()
    bits = -torch.log2(codec._gaussian_likelihood(residual, scales)).sum()
    (grad,) = torch.autograd.grad(bits, means)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_noise_mode_is_seeded(prior):
    codec = make_codec(prior)
    y = torch.randn(2, 8, 8, 8)
    a = codec.likelihoods(y, "noise", torch.Generator().manual_seed(3)).bits()
    b = codec.likelihoods(y, "noise", torch.Generator().manual_seed(3)).bits()
    c = codec.likelihoods(y, "noise", torch.Generator().manual_seed(4)).bits()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bit_maps_sum_to_bits():
    codec = make_codec("mshp")
    out = codec.likelihoods(torch.randn(2, 8, 8, 8), "round")
    maps = out.bit_maps()
    assert maps["y"].shape == (2, 8, 8) and maps["z"].shape == (2, 2, 2)
    total = sum(m.flatten(1).sum(1) for m in maps.values())
    torch.testing.assert_close(total, out.bits())
