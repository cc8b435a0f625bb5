"""Slimmable heads: every setting codes exactly, settings travel in packets, bad settings fail
clearly, the sandwich rule trains the settings it should."""

from __future__ import annotations

import pytest
import torch
from eg_testutil import seeded_images, slim_model

from entroguard.errors import InputError, ModelMismatchError
from entroguard.models import build_model
from entroguard.models.slimmable import SlimmableSplitClassifier, parse_setting_suffix
from entroguard.packet import Packet, PacketError, parse_packet
from entroguard.train.recipes.slimmable import SlimmableConfig, sandwich, sandwich_terms


@pytest.fixture(scope="module", params=["fp", "mshp"])
def slim(request) -> SlimmableSplitClassifier:
    return slim_model(request.param)


def test_sixteen_settings_and_the_largest_is_the_default(slim):
    assert len(slim.settings) == 16 and slim.mode == slim.largest == (4, 3)
    assert slim.settings[0] == (1, 0)


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_every_setting_round_trips_exactly(slim, batch):
    x = seeded_images(batch, seed=batch)
    for members, rate in slim.settings:
        slim.set_mode(members, rate)
        y = slim.analyze(x)
        sent = slim.codec.quantize(y)
        packets = slim.to_packets(x)
        encoded = slim.packets_to_batch(packets)
        assert encoded.settings == [(members, rate)] * batch
        decoded = slim.decompress(encoded)
        gain = slim.codec.log_inverse_gain[rate].exp().view(1, -1, 1, 1)
        if slim.spec.prior == "fp":
            assert torch.equal(decoded, (sent * gain).detach())
        assert torch.equal(slim.from_packets(packets), slim.classify(decoded))
        assert all(parse_packet(p).setting == (members - 1, rate) for p in packets)
    slim.set_mode(*slim.largest)


def test_the_knobs_change_compute_and_bytes(slim):
    x = seeded_images(8, seed=3)
    spread = []
    for rate in range(4):  # a larger gain sends larger symbols (more bytes once trained)
        slim.set_mode(4, rate)
        spread.append(float(slim.codec.quantize(slim.analyze(x)).abs().sum().detach()))
    assert spread[0] != spread[3]
    if slim.spec.prior == "fp":  # mshp sends residuals from an untrained h_s here
        assert spread == sorted(spread) and spread[0] < spread[3]
    slim.set_mode(1, 3)
    one = slim.analyze(x)
    slim.set_mode(4, 3)
    assert not torch.equal(one, slim.analyze(x))


def test_the_tail_decodes_a_packet_of_another_setting_without_switching(slim):
    x = seeded_images(3, seed=4)
    slim.set_mode(1, 0)
    small = slim.to_packets(x[:2])
    small_latent = slim.decompress(slim.packets_to_batch(small))
    slim.set_mode(4, 3)
    large = slim.to_packets(x[2:])
    mixed = slim.decompress(slim.packets_to_batch([small[0], large[0], small[1]]))
    assert slim.mode == (4, 3)
    assert torch.equal(mixed[[0, 2]], small_latent)
    assert torch.equal(mixed[1:2], slim.decompress(slim.packets_to_batch(large)))
    logits = slim.from_packets([small[0], large[0], small[1]])
    torch.testing.assert_close(logits[[0, 2]], slim.from_packets(small))


@pytest.mark.parametrize("setting", [(5, 0), (0, 1), (2, 4), (1, -1)])
def test_an_untrained_setting_is_one_clear_error_on_the_head(slim, setting):
    with pytest.raises(InputError, match="not one this model was trained for"):
        slim.set_mode(*setting)
    assert slim.mode == slim.largest


def test_an_untrained_setting_in_a_packet_is_refused(slim):
    packet = parse_packet(slim.to_packets(seeded_images(1))[0])
    forged = Packet(packet.prior, packet.fingerprint, packet.latent_hw, packet.strings,
                    setting=(7, 2)).to_bytes()  # fmt: skip
    with pytest.raises(PacketError) as info:
        slim.from_packets([forged])
    assert info.value.reason == "bad_setting" and "members=8" in str(info.value)


def test_packets_without_a_setting_and_plain_models_do_not_mix(slim):
    torch.manual_seed(0)
    plain = build_model("resnet_s", slim.spec.prior).eval()
    plain.prepare_coding()
    slim_packet = slim.to_packets(seeded_images(1))[0]
    with pytest.raises(ModelMismatchError, match="not slimmable"):
        plain.from_packets([slim_packet])
    parsed = parse_packet(slim_packet)
    old = Packet(parsed.prior, parsed.fingerprint, parsed.latent_hw, parsed.strings).to_bytes()
    with pytest.raises(ModelMismatchError, match="carries no setting"):
        slim.from_packets([old])


def test_a_slimmable_checkpoint_round_trips(slim, tmp_path):
    from entroguard.train.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint(slim, tmp_path / "slim", beta=0.01)
    loaded = load_checkpoint(path)
    assert isinstance(loaded, SlimmableSplitClassifier)
    assert loaded.fingerprint == slim.fingerprint
    x = seeded_images(2)
    slim.set_mode(2, 1)
    packets = slim.to_packets(x)
    assert torch.equal(loaded.from_packets(packets), slim.from_packets(packets))
    slim.set_mode(*slim.largest)


@pytest.mark.parametrize(
    "text, expected", [("m2,r1", (2, 1)), ("m4,r0", (4, 0)), ("m10,r15", (10, 15))]
)
def test_setting_suffixes_parse(text, expected):
    assert parse_setting_suffix(text) == expected


@pytest.mark.parametrize("text", ["2,1", "m2", "r1,m2", "mx,r1", ""])
def test_a_bad_setting_suffix_is_a_clear_error(text):
    with pytest.raises(InputError, match="m<members>,r<rate>"):
        parse_setting_suffix(text)


def test_the_sandwich_has_the_largest_the_smallest_and_distinct_random_settings():
    model = slim_model("fp")
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        settings = sandwich(model, 2, g)
        assert settings[:2] == [(4, 3), (1, 0)] and len(set(settings)) == 4


def test_sandwich_terms_distil_from_the_largest_and_leave_the_mode_largest():
    model = slim_model("mshp")
    model.train()
    x, labels = seeded_images(4), torch.tensor([0, 1, 2, 3])
    terms = sandwich_terms(model, x, labels, SlimmableConfig(), torch.Generator().manual_seed(0))
    assert {"loss", "ce_largest", "bpp_largest", "kl_smallest", "bpp_smallest"} <= set(terms)
    assert terms["kl_smallest"] >= 0 and model.mode == (4, 3)
    terms["loss"].backward()
    for member in model.encoder.members:  # the smallest setting reaches member 0 only, the
        assert member[0].weight.grad is not None  # largest every member
    model.eval()


def test_campaigns_address_each_setting_as_a_model(slim, tmp_path):
    from entroguard.campaign.models import resolve_models
    from entroguard.train.checkpoint import save_checkpoint

    rows = [{"members": m, "rate": r} for m, r in slim.settings]
    save_checkpoint(slim, tmp_path / "resnet_s-slim-x", recipe="slimmable", settings=rows)
    refs = resolve_models("zoo:slimmable", tmp_path)
    assert [ref.name for ref in refs][:2] == ["resnet_s-slim-x@m1,r0", "resnet_s-slim-x@m1,r1"]
    assert len(refs) == 16 and refs[5].load().mode == (2, 1)
    (ref,) = resolve_models(["resnet_s-slim-x@m3,r2"], tmp_path)
    assert ref.setting == (3, 2) and ref.load().mode == (3, 2)
    (bad,) = resolve_models(["resnet_s-slim-x@m9,r0"], tmp_path)
    with pytest.raises(InputError, match="not one this model was trained for"):
        bad.load()
    assert len(resolve_models("zoo:all", tmp_path)) == 1


def test_a_warm_start_copies_the_source_into_every_member_and_rate():
    from entroguard.train.recipes.slimmable import warm_start

    torch.manual_seed(1)
    source = build_model("resnet_s", "mshp").eval()
    source.prepare_coding()
    head = build_model("resnet_s", "mshp", members=4).eval()
    warm_start(head, source)
    head.prepare_coding()
    x = seeded_images(3, seed=11)
    head.set_mode(1, 3)  # gain 1 at the last rate: the source exactly
    assert head.compress(x).strings == source.compress(x).strings
    assert torch.equal(head.analyze(x), source.analyze(x))
    head.set_mode(4, 3)
    torch.testing.assert_close(head.analyze(x), source.analyze(x))
    with pytest.raises(ValueError, match="another shape"):
        warm_start(build_model("resnet_s", "mshp", members=4, latent_channels=8), source)
