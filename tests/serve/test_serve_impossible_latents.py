"""The tail refuses latents no image can make (crafted coder strings), and never a real one."""

from __future__ import annotations

import httpx
import pytest
import torch
from serve_helpers import live_app, noise_images, smooth_images

from entroguard.models.latent_bounds import latent_bounds, latent_check
from entroguard.models.split import EncodedBatch
from entroguard.serve.app import ServeLimits
from entroguard.serve.framing import PACKET_CONTENT_TYPE

OCTET = {"content-type": PACKET_CONTENT_TYPE}


def _extreme_images() -> torch.Tensor:
    """Images at the corners of [0, 1]: black, white, checkerboards, noise."""
    board = (torch.arange(32).reshape(1, 32) + torch.arange(32).reshape(32, 1)) % 2
    boards = torch.stack([board, 1 - board]).float().unsqueeze(1).expand(-1, 3, -1, -1)
    return torch.cat([torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 32, 32), boards,
                      noise_images(4, seed=9)])  # fmt: skip


def _crafted(model, value: float) -> bytes:
    """A well-formed packet of ``model`` whose latent carries ``value`` at one position."""
    y = model.analyze(smooth_images(1, seed=1)).detach()
    y[0, 0, 1, 1] = value
    encoded = EncodedBatch(model.codec.compress(y), tuple(y.shape[-2:]))
    return model.packets(encoded)[0]


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_every_real_latent_is_inside_the_heads_bounds(prior, fp_model, mshp_model):
    model = fp_model if prior == "fp" else mshp_model
    bounds = latent_bounds(model)
    assert bounds is not None and bounds[0].shape == model.analyze(smooth_images(1))[0].shape
    images = torch.cat([smooth_images(8), _extreme_images()])
    with torch.no_grad():
        y_hat = model.codec.quantize(model.analyze(images))
    assert latent_check(model).excess(y_hat, [None] * len(images)).max() == 0


def test_a_slimmable_heads_decoded_latents_are_inside_at_every_setting():
    from eg_testutil import slim_model

    model = slim_model("mshp").eval()
    check = latent_check(model)
    assert check is not None and set(check.boxes) == set(range(model.codec.settings))
    images = torch.cat([smooth_images(4), _extreme_images()])
    for members, rate in model.settings:
        model.set_mode(members, rate)
        encoded = model.compress(images)
        y_hat = model.codec.decompress_at(encoded.strings, encoded.latent_hw, rate)
        assert check.excess(y_hat, [rate] * len(images)).max() == 0, (members, rate)
    y_hat[0, 0, 0, 0] = 1e4
    assert check.excess(y_hat, [rate] * len(images))[0] > 0


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_crafted_symbols_are_refused_and_counted(prior, fp_model, mshp_model, fp_stats, mshp_stats):
    model, stats = (fp_model, fp_stats) if prior == "fp" else (mshp_model, mshp_stats)
    limits = ServeLimits(budget_packets_per_s=0)
    with live_app(model, stats, limits=limits) as (url, app), httpx.Client(base_url=url) as client:
        for value in (1e3, -4e4, 1.3e8):
            r = client.post("/v1/infer", content=_crafted(model, value), headers=OCTET)
            error = r.json()["error"]
            assert (r.status_code, error["reason"]) == (400, "impossible_latent"), r.text
            assert "crafted" in error["detail"]
        real = model.to_packets(_extreme_images())[0]
        assert client.post("/v1/infer", content=real, headers=OCTET).status_code == 200
        metrics = client.get("/metrics").text
        assert 'entroguard_rejections_total{reason="impossible_latent"} 3' in metrics
        assert 'entroguard_guard_decisions_total{decision="impossible_latent"} 3' in metrics
        # each crafted packet counted against its client's sequential test at the largest score
        assert app.state.cusums.statistic("peer:127.0.0.1") > 0
