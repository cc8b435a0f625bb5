"""Split models: real bitstreams that decode exactly, packets, clear errors."""

from __future__ import annotations

import pytest
import torch
from eg_testutil import SMALL_ARCHS, seeded_images, seeded_model

from entroguard.errors import InputError, ModelMismatchError
from entroguard.packet import PacketError, parse_packet


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_exact_round_trip(small_model, batch):
    x = seeded_images(batch, seed=batch)
    encoded = small_model.compress(x)
    assert len(encoded.strings) == batch and encoded.latent_hw == (8, 8)
    decoded = small_model.decompress(encoded)
    assert torch.equal(decoded, small_model.codec.quantize(small_model.analyze(x)))


def test_packets_decode_to_the_in_process_logits(small_model):
    x = seeded_images(3, seed=7)
    packets = small_model.to_packets(x)
    expected = small_model.classify(small_model.decompress(small_model.compress(x)))
    assert torch.equal(small_model.from_packets(packets), expected)
    for p in packets:
        parsed = parse_packet(p)
        assert parsed.header_bytes <= 16
        assert parsed.fingerprint == small_model.fingerprint_bytes


def test_forward_agrees_with_the_bitstream_path(small_model):
    x = seeded_images(3, seed=8)
    via_bytes = small_model.from_packets(small_model.to_packets(x))
    torch.testing.assert_close(small_model(x), via_bytes, atol=1e-3, rtol=1e-3)


def test_estimate_is_the_likelihood_of_the_coded_symbols(small_model):
    x = seeded_images(2, seed=9)
    bits = small_model.estimate(x).bits()
    assert bits.shape == (2,) and (bits > 0).all()


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(3, 32, 32), "add a batch dimension"),
        (torch.rand(2, 1, 32, 32), "grayscale"),
        (torch.rand(2, 3, 28, 28), r"\(B, 3, 32, 32\)"),
        ((torch.rand(2, 3, 32, 32) * 255).to(torch.uint8), "divide by 255"),
        (torch.rand(2, 3, 32, 32) * 4 - 2, r"in \[0, 1\]"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_wrong_input_is_one_clear_error(bad, match):
    model = seeded_model("resnet_s", "fp")
    with pytest.raises(InputError, match=match):
        model.compress(bad)


def test_packets_of_another_model_are_refused():
    a, b = seeded_model("resnet_s", "fp", seed=0), seeded_model("resnet_s", "fp", seed=1)
    assert a.fingerprint != b.fingerprint
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        b.from_packets(a.to_packets(seeded_images(1)))
    mshp = seeded_model("resnet_s", "mshp")
    with pytest.raises(ModelMismatchError, match="prior"):
        mshp.from_packets(a.to_packets(seeded_images(1)))


def test_corrupt_packets_raise_the_typed_error():
    model = seeded_model("regnet_s", "mshp")
    packet = bytearray(model.to_packets(seeded_images(1))[0])
    packet[-1] ^= 0xFF
    with pytest.raises(PacketError) as info:
        model.from_packets([bytes(packet)])
    assert info.value.reason == "checksum"
    with pytest.raises(PacketError):
        model.from_packets([bytes(packet[:5])])


@pytest.mark.parametrize("arch", SMALL_ARCHS)
def test_fingerprint_is_deterministic_and_tracks_weights(arch):
    a, b = seeded_model(arch, "fp"), seeded_model(arch, "fp")
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    with torch.no_grad():
        next(b.backbone_tail.parameters()).add_(1e-3)
    b.prepare_coding()
    assert a.fingerprint != b.fingerprint


def test_coding_before_prepare_is_a_clear_error():
    from entroguard.models import build_model

    model = build_model("resnet_s", "fp").eval()
    with pytest.raises(RuntimeError, match="update_tables|prepare_coding"):
        model.to_packets(seeded_images(1))
