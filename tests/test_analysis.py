"""Analysis: rank correlation, TV maps, DCT bands, and `entroguard analyze` on a zoo model."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from entroguard.analysis import band_filtered, spearman_per_image, tv_map
from entroguard.cli import app


def test_spearman_is_one_for_monotone_maps_and_minus_one_reversed():
    a = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(spearman_per_image(a, a**3), torch.ones(3))
    assert torch.allclose(spearman_per_image(a, -a), -torch.ones(3))


def test_tv_map_is_zero_on_flat_images_and_high_on_edges():
    flat = torch.full((1, 3, 16, 16), 0.4)
    assert tv_map(flat).abs().max() == 0
    edge = torch.zeros(1, 3, 16, 16)
    edge[..., 8:] = 1.0
    tv = tv_map(edge, patch=1)
    assert tv.shape == (1, 16, 16) and tv[0, :, 7].min() > 0.9 and tv[0, :, 2].max() == 0


def test_bands_split_the_image():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    assert torch.allclose(band_filtered(x, 1.0, "low"), x, atol=1e-5)
    low = band_filtered(x, 0.1, "low")
    assert (low - x).abs().mean() > 0.01  # the band limit removed something
    assert low.min() >= 0 and band_filtered(x, 0.1, "high").max() <= 1


def test_analyze_command_on_a_zoo_model(tmp_path):
    result = CliRunner().invoke(
        app, ["analyze", "--model", "resnet_s-fp-beta0.01", "--n-images", "16", "--out",
              str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "analysis.json").read_text())
    # On the trained model, the coder spends its bits where the image varies.
    assert summary["spearman_mean"] > 0.3
    assert len(summary["bands"]) == 8 and summary["clean_payload_bytes"] > 0
    assert (tmp_path / "analysis.png").read_bytes()[:4] == b"\x89PNG"
    # every corruption at severity 3 and the four attacks at eps 8, with the payload change
    rows = summary["threat_bands"]["threats"]
    assert len(rows) == 23 and {r["strength"] for r in rows} == {3.0, 8.0}
    assert (tmp_path / "bands.png").read_bytes()[:4] == b"\x89PNG"
    assert "rate_pgd eps8" in result.output and "dE high" in result.output
    noise = next(r for r in rows if r["threat"] == "corruption/gaussian_noise")
    blur = next(r for r in rows if r["threat"] == "corruption/defocus_blur")
    assert noise["high_change_pct"] > 0 > blur["high_change_pct"]


def test_analyze_with_an_unknown_model_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["analyze", "--model", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "neither a zoo model" in result.output
