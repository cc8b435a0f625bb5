"""Format-1 packets through a model: "fp" ones decode as before, "mshp" ones are refused."""

from __future__ import annotations

import pytest
import torch
from eg_testutil import seeded_images, seeded_model

from entroguard.packet import Packet, PacketError, parse_packet


def _as_version(data: bytes, version: int) -> bytes:
    packet = parse_packet(data)
    return Packet(
        packet.prior, packet.fingerprint, packet.latent_hw, packet.strings, version
    ).to_bytes()


def test_format_1_fp_packets_decode_exactly_as_format_2():
    model = seeded_model("resnet_s", "fp")
    packets = model.to_packets(seeded_images(2))
    old = [_as_version(p, 1) for p in packets]
    assert old != packets
    assert torch.equal(model.from_packets(old), model.from_packets(packets))


def test_format_1_mshp_packets_are_refused_with_the_reason():
    model = seeded_model("resnet_s", "mshp")
    old = [_as_version(p, 1) for p in model.to_packets(seeded_images(2))]
    with pytest.raises(PacketError, match="floating point.*re-encode") as err:
        model.from_packets(old)
    assert err.value.reason == "bad_version"
