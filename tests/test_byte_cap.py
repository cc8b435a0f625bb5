"""The head's hard byte cap: no payload over the budget, whatever the latent, at the fewest
reset symbols; capped packets are marked (format 5) and decode like any other."""

from __future__ import annotations

import math

import pytest
import torch
from eg_testutil import seeded_model

import entroguard
from entroguard.codec.byte_cap import ByteCap
from entroguard.data import load_dataset
from entroguard.defenses import build_defense
from entroguard.errors import InputError
from entroguard.packet import CAPPED_VERSION, VERSION, parse_packet
from entroguard.threats.attacks.rate_pgd import RatePGD

MODELS = ("resnet_s-fp-beta0.01", "resnet_s-mshp-beta0.01")
LATENTS = {"resnet_s-fp-beta0.01": 7000, "resnet_s-mshp-beta0.01": 3000}  # 10,000 packets


def _budget(model) -> int:
    return int(model.metadata["clean_payload"]["quantiles"]["0.99"]) + 1


def _hostile_latents(model, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` latents (n, C, h, w) of every kind the head could be made to code, and worse:
    clean images' latents, rate-attacked ones, the same scaled up, Gaussian and uniform noise
    of growing size, sparse spikes at the coder's range edges."""
    test = load_dataset("fashion-mnist", "test")
    images = test.to_float(slice(0, 64))
    attacked = RatePGD(eps=16 / 255, steps=5, noise_copies=2)(model, images, generator=generator)
    with torch.no_grad():
        real = torch.cat([model.analyze(images), model.analyze(attacked)])
    shape = (n - len(real), *real.shape[1:])
    kind = torch.arange(shape[0]) % 5
    scale = torch.logspace(0, 2, shape[0])[torch.randperm(shape[0], generator=generator)]
    noise = torch.randn(shape, generator=generator) * scale.view(-1, 1, 1, 1)
    uniform = (torch.rand(shape, generator=generator) * 2 - 1) * scale.view(-1, 1, 1, 1)
    spikes = (torch.rand(shape, generator=generator) < 0.05) * 300.0 * torch.sign(noise)
    scaled = real[torch.randint(0, len(real), (shape[0],), generator=generator)] * scale.view(
        -1, 1, 1, 1
    ).clamp(max=20)
    mixed = torch.stack([noise, uniform, spikes, scaled, noise + spikes], dim=0)
    return torch.cat([real, mixed[kind, torch.arange(shape[0])]])


@pytest.mark.parametrize("name", MODELS)
def test_no_packet_exceeds_the_budget_whatever_the_latent(name):
    model = entroguard.load(name)
    budget = _budget(model)
    cap = ByteCap(budget)
    latents = _hostile_latents(model, LATENTS[name], torch.Generator().manual_seed(0))
    over, capped, decoded = 0, 0, 0
    for y in latents.split(500):
        coded = cap.compress(model.codec, y)
        plain = [sum(map(len, s)) for s in model.codec.compress(y)]
        for strings, share, before in zip(coded.strings, coded.reset_share, plain, strict=True):
            size = sum(map(len, strings))
            over += size > budget
            capped += share > 0
            # only a packet over the budget is touched; one that fits is coded as before
            assert (share > 0) == (before > budget)
        model.byte_cap = cap  # the head's own path, on a slice: packets mark the cap, decode
        packets = model.packets(model.encode(y[:50]))
        model.byte_cap = None
        for data, share in zip(packets, coded.reset_share[:50], strict=True):
            assert parse_packet(data).version == (CAPPED_VERSION if share else VERSION)
        decoded += len(model.from_packets(packets))
    assert over == 0 and len(latents) == LATENTS[name]
    assert capped > LATENTS[name] // 2  # most of these latents needed the cap
    assert decoded == 50 * (LATENTS[name] // 500)


def test_the_cap_resets_the_fewest_symbols_that_fit():
    model = entroguard.load("resnet_s-fp-beta0.01")
    y = model.analyze(load_dataset("fashion-mnist", "test").to_float(slice(0, 4))) * 3
    loose = ByteCap(10_000).compress(model.codec, y)
    plain = model.codec.compress(y)
    assert loose.strings == plain and loose.reset_share == [0] * 4  # nothing to do: unchanged
    sizes = [sum(map(len, s)) for s in plain]
    tight = ByteCap(min(sizes) - 20).compress(model.codec, y)
    again = ByteCap(min(sizes) - 20).compress(model.codec, y)
    assert tight == again  # integer ordering: the same bytes every time
    assert all(0 < share < 255 for share in tight.reset_share)


def test_budgets_below_the_floor_and_uncappable_models_are_one_clear_error():
    model = entroguard.load("resnet_s-mshp-beta0.01")
    floor = ByteCap(1).floor_bytes(model.codec, model.latent_hw)
    assert floor > 0
    with pytest.raises(InputError, match=f"smallest payload .* \\({floor} B\\)"):
        model.set_byte_cap(floor - 1)
    model.set_byte_cap(floor)  # the floor itself is a valid, if brutal, budget
    assert max(model.compress(torch.rand(3, 3, 32, 32)).payload_bytes()) <= floor
    with pytest.raises(InputError, match="positive number of bytes"):
        ByteCap(0)
    with pytest.raises(InputError, match="fixed-rate"):
        entroguard.load("resnet_s-q8-c4-bottlefit").set_byte_cap(500)


def test_rate_cap_as_a_defence_reads_the_budget_from_the_checkpoint():
    model = entroguard.load("resnet_s-fp-beta0.01")
    cap = build_defense("rate_cap", budget_q=0.9)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(cap(model, x), x)
    expected = model.metadata["clean_payload"]["quantiles"]["0.9"]
    with cap.applied(model) as budget:
        assert budget == int(-(-expected // 1)) and model.byte_cap.budget_bytes == budget
    assert model.byte_cap is None
    with pytest.raises(InputError, match="clean payload statistics"):
        cap.budget_bytes(seeded_model("resnet_s", "fp"))
    with pytest.raises(ValueError, match="budget_q must be one of"):
        build_defense("rate_cap", budget_q=0.95)


def test_a_campaign_measures_through_the_capped_head(tmp_path):
    from entroguard.campaign.config import parse_config
    from entroguard.campaign.runner import run_campaign
    from entroguard.campaign.store import ConditionId, ResultStore

    config = {"dataset": "fashion-mnist", "n_images": 16, "batch_size": 16,
              "models": ["resnet_s-mshp-beta0.01"],
              "defenses": ["none", {"rate_cap": {"budget_q": 0.5}}],
              "threats": ["clean", {"attack": "rate_pgd", "eps": [8],
                                    "params": {"steps": 2, "noise_copies": 1}}]}  # fmt: skip
    run_campaign(parse_config(config), tmp_path, progress=False)
    name = "resnet_s-mshp-beta0.01"
    budget = math.ceil(entroguard.load(name).metadata["clean_payload"]["quantiles"]["0.5"])
    with ResultStore(tmp_path / "results.sqlite") as store:
        for threat, strength in (("clean", 0.0), ("rate_pgd", 8.0)):
            free, capped = (store.per_image(ConditionId(name, threat, strength, d).key)
                            ["payload_bytes"] for d in ("none", "rate_cap"))  # fmt: skip
            assert capped.max() <= budget < free.max()
            assert (capped <= free).all()


def test_the_edge_refuses_a_cap_below_the_floor_before_sending_anything():
    from typer.testing import CliRunner

    from entroguard.cli import app

    args = ["edge", "test", "--model", "resnet_s-fp-beta0.01", "--server", "http://127.0.0.1:9",
            "--byte-cap", "1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "below the smallest payload" in result.output
