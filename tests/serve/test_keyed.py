"""Keyed protections: the tail regenerates exactly what the head drew, removal is exact where
it should be, a permutation costs no estimated bits, a wrong key is refused, never a crash."""

from __future__ import annotations

import random

import pytest
import torch
from eg_testutil import seeded_images, seeded_model

from entroguard.packet import PacketError, parse_packet
from entroguard.privacy.keyed import (
    KeyedNoise,
    KeyedPermutation,
    SplitKey,
    eavesdropped_latent,
    protected_latent,
    protected_packets,
)

KEY = SplitKey(b"deployment-key-0123456789abcdef")
OTHER = SplitKey(b"another-key-0123456789abcdefghij")


def _nonces(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(8) for _ in range(n)]


@pytest.fixture(scope="module")
def fp():
    return seeded_model("resnet_s", "fp")


@pytest.fixture(scope="module")
def mshp():
    return seeded_model("resnet_s", "mshp")


def test_the_keyed_draws_are_a_pure_function_of_key_and_nonce():
    noise = KeyedNoise(spread=3)
    a = noise.noise((4, 8, 8), KEY, b"\x01" * 8)
    assert torch.equal(a, noise.noise((4, 8, 8), SplitKey(KEY.secret), b"\x01" * 8))
    assert not torch.equal(a, noise.noise((4, 8, 8), KEY, b"\x02" * 8))
    assert not torch.equal(a, noise.noise((4, 8, 8), OTHER, b"\x01" * 8))
    assert a.abs().max() <= 3 and a.eq(a.round()).all() and len(a.unique()) == 7
    order = KeyedPermutation.order(4, 64, KEY, b"\x01" * 8)
    assert all(sorted(row.tolist()) == list(range(64)) for row in order)
    # committed values: the same draws on every machine (SHA-256 and integer arithmetic)
    assert a.flatten()[:6].tolist() == KEYED_NOISE_HEAD and order[0, :6].tolist() == PERM_HEAD


KEYED_NOISE_HEAD = [2.0, 1.0, -2.0, 1.0, 1.0, 1.0]
PERM_HEAD = [0, 63, 18, 19, 42, 5]


@pytest.mark.parametrize("batch", [1, 3])
def test_keyed_noise_is_removed_exactly_with_the_factorized_prior(fp, batch):
    x, nonces = seeded_images(batch, seed=batch), _nonces(batch)
    packets = protected_packets(fp, x, KeyedNoise(), KEY, nonces)
    assert all(parse_packet(p).keyed[0] == n for p, n in zip(packets, nonces, strict=True))
    recovered = protected_latent(fp, packets, KeyedNoise(), KEY)
    assert torch.equal(recovered, fp.codec.quantize(fp.analyze(x)))
    seen = eavesdropped_latent(fp, packets)
    assert not torch.equal(seen, recovered)
    plain = sum(fp.compress(x).payload_bytes())
    assert sum(len(parse_packet(p).strings[0]) for p in packets) > plain  # the noise costs bytes


def test_keyed_noise_with_the_hyperprior_is_close_not_exact(mshp):
    x = seeded_images(3, seed=4)
    packets = protected_packets(mshp, x, KeyedNoise(spread=1), KEY, _nonces(3))
    recovered = protected_latent(mshp, packets, KeyedNoise(spread=1), KEY)
    clean = mshp.codec.quantize(mshp.analyze(x))
    assert recovered.shape == clean.shape and (recovered - clean).abs().max() <= 1.0 + 1e-5


def test_a_permutation_costs_no_estimated_bits_and_is_undone_exactly(fp):
    x, nonces = seeded_images(3, seed=5), _nonces(3, seed=1)
    perm = KeyedPermutation()
    packets = protected_packets(fp, x, perm, KEY, nonces)
    assert torch.equal(protected_latent(fp, packets, perm, KEY), fp.codec.quantize(fp.analyze(x)))
    y = fp.analyze(x)
    shuffled = torch.stack([perm.protect(y[i], KEY, n) for i, n in enumerate(nonces)])
    torch.testing.assert_close(fp.codec.likelihoods(shuffled, "round").bits(),
                               fp.codec.likelihoods(y, "round").bits())  # fmt: skip
    plain = fp.compress(x).payload_bytes()
    keyed = [len(parse_packet(p).strings[0]) for p in packets]
    assert all(abs(a - b) <= 4 for a, b in zip(plain, keyed, strict=True))


def test_a_permutation_is_refused_for_the_hyperprior(mshp):
    with pytest.raises(ValueError, match="keyed_permutation protects fp"):
        protected_packets(mshp, seeded_images(1), KeyedPermutation(), KEY)


def test_a_byte_capped_head_is_refused_rather_than_coded_past_its_cap():
    model = seeded_model("resnet_s", "fp")
    x = seeded_images(2, seed=0)
    model.set_byte_cap(max(model.compress(x).payload_bytes()))
    with pytest.raises(ValueError, match="formats 4 and 5 do not combine.*set_byte_cap"):
        protected_packets(model, x, KeyedNoise(), KEY, _nonces(2))
    model.set_byte_cap(None)
    assert len(protected_packets(model, x, KeyedNoise(), KEY, _nonces(2))) == 2


def test_a_wrong_key_or_an_unkeyed_tail_is_refused_with_bad_key(fp):
    packets = protected_packets(fp, seeded_images(2), KeyedNoise(), KEY, _nonces(2))
    with pytest.raises(PacketError) as info:
        protected_latent(fp, packets, KeyedNoise(), OTHER)
    assert info.value.reason == "bad_key" and "another key" in str(info.value)
    with pytest.raises(PacketError) as info:
        fp.from_packets(packets)
    assert info.value.reason == "bad_key" and "has no key" in str(info.value)
    with pytest.raises(PacketError) as info:
        protected_latent(fp, fp.to_packets(seeded_images(1)), KeyedNoise(), KEY)
    assert info.value.reason == "bad_key"


def test_a_short_key_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 16 secret bytes"):
        SplitKey(b"short")


def test_the_server_with_the_key_classifies_and_refuses_other_keys(fp):
    import httpx
    from serve_helpers import live_app, stats_of

    x = seeded_images(4, seed=8)
    packets = protected_packets(fp, x, KeyedNoise(), KEY, _nonces(4))
    expected = fp.classify(fp.codec.quantize(fp.analyze(x))).argmax(1).tolist()
    octet = {"content-type": "application/octet-stream"}
    stats = stats_of(fp, x)
    with live_app(fp, stats, keyed=(KeyedNoise(), KEY)) as (url, _):
        for packet, label in zip(packets, expected, strict=True):
            reply = httpx.post(f"{url}/v1/infer", content=packet, headers=octet)
            assert reply.status_code == 200 and reply.json()["predicted"] == label
        wrong = protected_packets(fp, x[:1], KeyedNoise(), OTHER, _nonces(1))[0]
        for bad in (wrong, fp.to_packets(x[:1])[0]):
            reply = httpx.post(f"{url}/v1/infer", content=bad, headers=octet)
            assert reply.status_code == 400 and "bad_key" in reply.text
    with live_app(fp, stats) as (url, _):
        reply = httpx.post(f"{url}/v1/infer", content=packets[0], headers=octet)
        assert reply.status_code == 400 and "bad_key" in reply.text
