"""The fixed-rate 8-bit bottleneck (q8): exact round trips, constant payload, clear errors."""

from __future__ import annotations

import pytest
import torch
from eg_testutil import seeded_images, seeded_model

from entroguard.codec import BitstreamError
from entroguard.codec.fixed_rate import SIDE_BYTES, AffineUint8


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("hw", [(8, 8), (5, 7)])
def test_round_trip_is_exact(batch, hw):
    codec = AffineUint8(4)
    y = torch.randn(batch, 4, *hw, generator=torch.Generator().manual_seed(batch)) * 3
    strings = codec.compress(y)
    assert [len(s[0]) for s in strings] == [SIDE_BYTES + 4 * hw[0] * hw[1]] * batch
    decoded = codec.decompress(strings, hw)
    assert torch.equal(decoded, codec.quantize(y))
    assert torch.equal(decoded, codec.likelihoods(y, "round").y_hat)
    step = (y.flatten(1).amax(1) - y.flatten(1).amin(1)) / 255
    assert ((decoded - y).abs().flatten(1).amax(1) <= step / 2 * 1.001).all()


def test_a_constant_latent_round_trips():
    codec = AffineUint8(2)
    y = torch.full((1, 2, 3, 3), -1.25)
    assert torch.equal(codec.decompress(codec.compress(y), (3, 3)), y)


def test_estimate_equals_payload_and_has_no_gradient():
    codec = AffineUint8(4)
    y = torch.randn(2, 4, 8, 8, requires_grad=True)
    out = codec.likelihoods(y, "ste")
    payload_bits = 8 * torch.tensor([len(s[0]) for s in codec.compress(y)], dtype=torch.float32)
    assert torch.equal(out.bits(), payload_bits)
    out.y_hat.sum().backward()  # straight through: the gradient of y_hat is the identity
    assert torch.equal(y.grad, torch.ones_like(y))


@pytest.mark.parametrize(
    "damage", [lambda s: s[:-1], lambda s: s + b"\x00", lambda s: b"\x7f\xc0\x00\x00" + s[4:]]
)
def test_bad_strings_are_one_clear_error(damage):
    codec = AffineUint8(4)
    (string,) = codec.compress(torch.randn(1, 4, 2, 2))[0]
    with pytest.raises(BitstreamError, match="q8"):
        codec.decompress([[damage(string)]], (2, 2))


def test_q8_split_model_packets_round_trip_and_have_a_constant_size():
    model = seeded_model("resnet_s", "q8")
    x = seeded_images(3)
    packets = model.to_packets(x)
    assert len({len(p) for p in packets}) == 1
    with torch.no_grad():
        expected = model.classify(model.codec.quantize(model.analyze(x)))
    assert torch.equal(model.from_packets(packets), expected)


@pytest.mark.parametrize("name", ["rate_pgd", "clf_pgd", "noise"])
def test_attacks_change_the_image_but_never_the_q8_payload(name):
    from entroguard.measure import measure_batch
    from entroguard.threats.attacks import build_attack

    model = seeded_model("regnet_s", "q8")
    x, labels = seeded_images(3), torch.tensor([0, 1, 2])
    kwargs = {"steps": 3, "random_start": True} if name != "noise" else {}
    attacked = build_attack(name, 16, **kwargs)(model, x, labels, torch.Generator().manual_seed(0))
    assert (attacked - x).abs().amax() > 0
    clean, hit = measure_batch(model, x, labels), measure_batch(model, attacked, labels)
    assert (hit.payload_bytes == clean.payload_bytes).all()
    assert (hit.est_bytes == hit.payload_bytes).all()
