"""Packets decode the same on any machine: the decoder's choices do not depend on float kernels.

Every mshp zoo model codes the full Fashion-MNIST test set; its decoder's CDF indexes and means
are then recomputed under other correct kernels (oneDNN off, float64 weights, channels-last
memory, one thread, CUDA when present), each from a fresh copy of the model, as a fresh machine
would. Decoded latents are symbols + means and the symbols follow from the indexes, so equal
indexes and means are equal decoded latents; real packets are also decoded under every variant.
With packet format 1 (the float ``h_s``) the same comparison found 170 to 482 index flips per
variant on the 122.9 M latent elements (``benchmarks/portability.py``; docs/portability.md).
"""

from __future__ import annotations

import pytest
import torch

from entroguard.campaign.models import resolve_models
from entroguard.codec.kernels import (
    available_variants,
    coding_params_under,
    count_differences,
    hyper_symbols,
    kernel_variant,
)
from entroguard.data import load_dataset

MSHP = [r for r in resolve_models("zoo") if r.prior == "mshp"]
VARIANTS = available_variants()[1:]


@pytest.fixture(scope="module")
def test_set() -> torch.Tensor:
    return load_dataset("fashion-mnist", "test").to_float(slice(0, 10_000))


@pytest.mark.slow
@pytest.mark.parametrize("ref", MSHP, ids=[r.name for r in MSHP])
def test_decoder_choices_match_under_every_kernel_on_the_full_test_set(ref, test_set):
    model = ref.load()
    with torch.no_grad():
        y = torch.cat([model.analyze(x) for x in test_set.split(1000)])
    z, hw = hyper_symbols(model.codec, y), tuple(y.shape[-2:])
    reference = coding_params_under(model.codec, z, hw)
    assert reference[0].numel() == 10_000 * model.codec.channels * hw[0] * hw[1]
    for variant in VARIANTS:
        diff = count_differences(reference, coding_params_under(model.codec, z, hw, variant))
        assert diff["indexes"] == diff["means"] == 0, f"{variant}: {diff}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_real_packets_decode_exactly_under_every_kernel(variant, test_set):
    model = resolve_models(["resnet_s-mshp-beta0.16"])[0].load()
    x = test_set[:64]
    with torch.no_grad():
        y = model.analyze(x)
        expected = model.codec.quantize(y)
    strings, hw = model.codec.compress(y), tuple(y.shape[-2:])
    with kernel_variant(model.codec, variant) as (twin, _):
        decoded = twin.decompress(strings, hw)
    assert torch.equal(decoded.cpu().float(), expected)
