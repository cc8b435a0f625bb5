"""DCT band energies, how threats move them, write_analysis, and the report's analysis section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from eg_testutil import seeded_images, seeded_model, write_idx

from entroguard.analysis.bands import (
    band_energy,
    band_labels,
    band_masks,
    energy_change,
    high_bands,
    low_ac_bands,
    perturbation_share,
)
from entroguard.analysis.defended_maps import defended_rate_maps, payload_summary
from entroguard.analysis.run import write_analysis
from entroguard.analysis.threat_bands import threat_bands
from entroguard.campaign.config import parse_config
from entroguard.campaign.runner import run_campaign
from entroguard.defenses.dct import low_band_mask, project_low_band
from entroguard.report.html import write_report
from entroguard.threats import Threat, corruption_threat
from entroguard.train.checkpoint import save_checkpoint

FAST_PGD = {"steps": 2, "noise_copies": 1}
FAST_THREATS = [
    corruption_threat("gaussian_noise", 3),
    corruption_threat("gaussian_blur", 3),
    Threat("rate_pgd", 8.0, FAST_PGD),
]


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 2, 12, 20)])
def test_bands_partition_the_frequencies_and_their_energies_sum_to_the_total(shape):
    h, w = shape[-2:]
    masks = band_masks(h, w, 8)
    assert masks.shape == (9, h, w) and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(masks.sum(dim=0), torch.ones(h, w))  # each frequency in one band
    assert masks[0, 0, 0] == 1 and masks[0].sum() == 1  # band 0 is the DC alone
    # bands 0..k together are project_low_band's "lowest k/8 of the frequencies"
    for k in range(1, 9):
        assert torch.equal(masks[: k + 1].sum(dim=0), low_band_mask(h, w, k / 8, dtype=masks.dtype))
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    energy = band_energy(x)
    assert energy.shape == (shape[0], 9) and (energy >= 0).all()
    total = x.double().pow(2).flatten(1).sum(dim=1)
    assert torch.allclose(energy.sum(dim=1), total, rtol=1e-10)  # Parseval
    assert band_labels(8)[0] == "DC" and band_labels(8)[-1] == "87.5-100%"


def _noise(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 3, 32, 32, generator=g, dtype=torch.float64)


def test_a_high_pass_perturbation_moves_energy_to_the_high_bands():
    x = seeded_images(3).double()
    noise = _noise(1)
    d = 0.05 * (noise - project_low_band(noise, 0.5))  # the upper half of the frequencies
    change = energy_change(x, x + d)
    high, low = high_bands(), low_ac_bands()
    assert change[:, high].sum(dim=1).min() > 1.0  # % of the clean AC energy
    assert change[:, : high.start].abs().max() < 1e-9  # DC and lower half untouched
    assert torch.allclose(perturbation_share(x, x + d)[:, high].sum(dim=1), torch.full((3,), 100.0,
                          dtype=torch.float64))  # fmt: skip
    assert low.stop == high.start


def test_a_low_band_perturbation_leaves_the_high_bands_alone():
    x = seeded_images(3).double()
    d = 0.2 * project_low_band(_noise(2), 0.25)
    change = energy_change(x, x + d)
    assert change[:, high_bands()].abs().max() < 1e-9
    assert change[:, 1:3].abs().sum(dim=1).min() > 1.0  # the lowest quarter did change
    assert perturbation_share(x, x + d)[:, high_bands()].max() < 1e-6
    assert (perturbation_share(x, x) == 0).all()  # no perturbation, no share


def test_threat_bands_noise_adds_and_blur_removes_high_frequencies():
    torch.manual_seed(0)
    model = seeded_model("resnet_s", "mshp")
    images, labels = seeded_images(4), torch.arange(4)
    result = threat_bands(model, images, labels, FAST_THREATS, seed=3, batch_size=3)
    noise, blur, pgd = result["threats"]
    assert [r["label"] for r in result["threats"]] == [
        "gaussian_noise s3", "gaussian_blur s3", "rate_pgd eps8"]  # fmt: skip
    assert noise["high_change_pct"] > 0 and noise["perturbation_high_pct"] > 20
    assert blur["high_change_pct"] < 0 and blur["high_gain_pct"] < -50
    assert len(pgd["energy_change_pct"]) == 9 and result["clean_payload_bytes"] > 0
    assert set(result["spearman_vs_rate"]) == {
        "dc_change_pct", "low_change_pct", "high_change_pct", "high_gain_pct"}  # fmt: skip
    again = threat_bands(model, images, labels, FAST_THREATS, seed=3, batch_size=3)
    assert again["threats"] == result["threats"]  # seeded: identical on a rerun


# -- write_analysis and the report, on a seeded model and a tiny Fashion-MNIST -----------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A seeded checkpoint, 8 random Fashion-MNIST-shaped test images, and a finished campaign
    (clean and one corruption) on them: ``(root, checkpoint stem, campaign folder)``."""
    root = tmp_path_factory.mktemp("bands")
    data = root / "fashion-mnist"
    data.mkdir()
    rng = np.random.default_rng(0)
    write_idx(data / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (8, 28, 28)))
    write_idx(data / "t10k-labels-idx1-ubyte.gz", np.arange(8) % 10)
    name = "resnet_s-mshp-beta0.01"
    save_checkpoint(seeded_model("resnet_s", "mshp"), root / "zoo" / name, beta=0.01,
                    dataset="fashion-mnist", metrics={})  # fmt: skip
    threats = ["clean", {"corruption": ["gaussian_noise"], "severities": [3]}]
    config = {"dataset": "fashion-mnist", "n_images": 4, "batch_size": 4, "models": "zoo",
              "threats": threats}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENTROGUARD_FASHION_MNIST", str(data))
        mp.setenv("ENTROGUARD_CACHE", str(root / "cache"))
        run_campaign(parse_config(config), root / "out", zoo_dir=root / "zoo", progress=False)
        yield root, str(root / "zoo" / name), root / "out"


def test_write_analysis_writes_json_and_figures(tiny):
    root, checkpoint, _ = tiny
    out = root / "analysis-full"
    path = write_analysis(checkpoint, out, n_images=6, seed=1, progress=False,
                          threats=FAST_THREATS)  # fmt: skip
    assert path == out / "analysis.json"
    summary = json.loads(path.read_text())
    assert {"n", "spearman_mean", "spearman_std", "clean_payload_bytes", "bands", "model",
            "dataset", "threat_bands"} <= set(summary)  # fmt: skip
    assert summary["n"] == 6 and summary["model"] == "resnet_s-mshp-beta0.01"
    assert len(summary["bands"]) == 8 and -1 <= summary["spearman_mean"] <= 1
    bands = summary["threat_bands"]
    assert bands["n"] == 6 and bands["seed"] == 1 and len(bands["labels"]) == 9
    assert abs(sum(bands["band_sizes"]) - 1) < 1e-9
    assert [r["threat"] for r in bands["threats"]] == [t.name for t in FAST_THREATS]
    for row in bands["threats"]:
        assert len(row["energy_change_pct"]) == 9 and abs(sum(row["perturbation_share_pct"])
                                                          - 100) < 1e-6  # fmt: skip
    for png in ("analysis.png", "bands.png", "rate_maps.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    defended = summary["defended_maps"]
    assert defended["n"] == 4 and defended["eps_255"] == 8
    assert set(defended["payload_bytes"]) == {"clean", "attacked", "defended"}
    # no threats: no threat section, and no stale bands.png or rate maps left beside the JSON
    write_analysis(checkpoint, out, n_images=4, progress=False, threats=[])
    summary = json.loads(path.read_text())
    assert "threat_bands" not in summary and "defended_maps" not in summary
    assert not (out / "bands.png").exists() and not (out / "rate_maps.png").exists()


def test_defended_rate_maps_are_the_coders_bits_of_the_attacked_and_defended_images():
    model = seeded_model("resnet_s", "mshp")
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    maps = defended_rate_maps(model, images, eps=4 / 255, seed=3)
    again = defended_rate_maps(model, images, eps=4 / 255, seed=3)
    clean, attacked = maps["conditions"]["clean"], maps["conditions"]["attacked"]
    assert torch.equal(clean["images"], images)
    assert (attacked["images"] - images).abs().max() <= 4 / 255 + 1e-6
    for name, cond in maps["conditions"].items():
        assert cond["rate"].shape == (2, 32, 32) and (cond["rate"] >= 0).all()
        assert cond["payload_bytes"] == model.compress(cond["images"]).payload_bytes(), name
        assert torch.equal(cond["images"], again["conditions"][name]["images"])
    summary = payload_summary(maps)
    assert summary["payload_bytes"]["clean"] == sum(clean["payload_bytes"]) / 2


def test_report_embeds_the_analysis_or_says_how_to_make_it(tiny):
    _, checkpoint, campaign = tiny
    html = write_report(campaign).read_text(encoding="utf-8")
    assert ">Where the bits go</h2>" in html
    section = html[html.index('id="bits"') :]
    assert "entroguard analyze --model NAME --out OUT/analysis" in section
    assert "data:image/png" not in section
    write_analysis(checkpoint, campaign / "analysis", n_images=4, progress=False,
                   threats=FAST_THREATS)  # fmt: skip
    summary = json.loads((campaign / "analysis" / "analysis.json").read_text())
    html = write_report(campaign).read_text(encoding="utf-8")
    section = html[html.index('id="bits"') :]
    assert "entroguard analyze --model NAME" not in section
    assert section.count("data:image/png;base64,") == 3  # analysis, bands and rate_maps.png
    paid = summary["defended_maps"]["payload_bytes"]
    assert f"Mean payload {paid['clean']:.1f} B clean, {paid['attacked']:.1f} B attacked" in section
    assert f"{summary['spearman_mean']:.2f} \u00b1" in section
    assert "How threats move energy between DCT bands" in section
    for label in ("gaussian_noise s3", "gaussian_blur s3", "rate_pgd eps8"):
        assert label in section
