"""The server decodes a slimmable head's packets at any setting, and refuses untrained ones."""

from __future__ import annotations

import httpx
from eg_testutil import seeded_images, slim_model
from serve_helpers import live_app, stats_of

from entroguard.packet import Packet, parse_packet

OCTET = {"content-type": "application/octet-stream"}


def test_a_server_decodes_any_setting_and_refuses_an_untrained_one():

    model = slim_model("mshp")
    x = seeded_images(2)
    model.set_mode(1, 0)
    small = model.to_packets(x)
    expected = model.from_packets(small).argmax(1).tolist()
    model.set_mode(4, 3)
    with live_app(model, stats_of(model, seeded_images(16, seed=5))) as (url, _):
        for packet, label in zip(small, expected, strict=True):
            reply = httpx.post(f"{url}/v1/infer", content=packet,
                               headers=OCTET)  # fmt: skip
            assert reply.status_code == 200, reply.text
            assert reply.json()["predicted"] == label
        parsed = parse_packet(small[0])
        forged = Packet(parsed.prior, parsed.fingerprint, parsed.latent_hw, parsed.strings,
                        setting=(9, 0)).to_bytes()  # fmt: skip
        reply = httpx.post(f"{url}/v1/infer", content=forged,
                           headers=OCTET)  # fmt: skip
        assert reply.status_code == 400 and "bad_setting" in reply.text


def test_the_guard_judges_each_packet_against_its_own_setting():
    from entroguard.serve.guard import GuardConfig

    model = slim_model("fp")
    images = seeded_images(16, seed=6)
    model.set_mode(1, 0)
    small_stats = stats_of(model, images)
    small = model.to_packets(images[:1])[0]
    model.set_mode(4, 3)
    large_stats = stats_of(model, images)
    tight = dict(small_stats, mean=1.0, std=0.0, max=1,
                    quantiles={k: 1.0 for k in small_stats["quantiles"]})  # fmt: skip
    config = GuardConfig(mode="refuse", cusum=False)
    for per_setting, status in (({}, 200), ({(1, 0): tight}, 422)):
        with live_app(model, large_stats, config, setting_stats=per_setting) as (url, _):
            reply = httpx.post(f"{url}/v1/infer", content=small, headers=OCTET)
            assert reply.status_code == status, reply.text
