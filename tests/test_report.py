"""report.html: a real (tiny) campaign in, one self-contained page with every section out."""

from __future__ import annotations

import re
import shutil
import sqlite3

import matplotlib
import pytest
from eg_testutil import TINY_CAMPAIGN_MODELS as MODELS
from eg_testutil import seeded_model

from entroguard.campaign.config import parse_config
from entroguard.campaign.runner import run_campaign
from entroguard.errors import EntroguardError
from entroguard.report.html import ResultsNotFoundError, write_report
from entroguard.train.checkpoint import save_checkpoint

SECTIONS = ("What was run", "Clean baseline", "Corruptions", "Attacks", "Summary",
            "Per-image distributions", "Defences")  # fmt: skip


@pytest.fixture
def campaign(tiny_campaign):
    """The tiny finished campaign (two seeded models, clean, corruptions, two attacks)."""
    return tiny_campaign


def _copy(src, dst):
    dst.mkdir()
    shutil.copy(src / "results.sqlite", dst / "results.sqlite")
    return dst


def test_report_is_self_contained_with_every_section(campaign):
    rc_before = dict(matplotlib.rcParams)
    backend = matplotlib.get_backend()
    path = write_report(campaign)
    assert path == campaign / "report.html" and path.is_file()
    assert not list(campaign.glob("*.tmp")) and not list(campaign.glob(".*.tmp"))
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    # nothing loaded from elsewhere: no remote src/href/url(), figures embedded
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "url(" not in html and "<script" not in html and "<link" not in html
    assert html.count("data:image/png;base64,") >= 6
    for heading in SECTIONS:
        assert f">{heading}</h2>" in html
    for name in MODELS:
        assert name in html
    for text in ("Estimated bytes", "Payload bytes", "Packet bytes", "defocus_blur", "rate_pgd"):
        assert text in html
    assert "No defence was measured" in html
    assert len(html) < 3_000_000
    # matplotlib's global settings are left as they were
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == rc_before


def test_missing_families_are_noted_not_fatal(campaign, tmp_path):
    out = _copy(campaign, tmp_path / "clean-only")
    with sqlite3.connect(out / "results.sqlite") as db:
        db.execute("DELETE FROM images WHERE key NOT LIKE '%|clean|%'")
        db.execute("DELETE FROM conditions WHERE threat != 'clean'")
    html = write_report(out).read_text(encoding="utf-8")
    assert "No corruption was measured" in html and "No attack was measured" in html
    assert ">Clean baseline</h2>" in html and "data:image/png;base64," in html


def test_defences_get_their_own_section(campaign, tmp_path):
    """A second defence: a 'Defences' section compares rate and accuracy with and without."""
    out = _copy(campaign, tmp_path / "defended")
    with sqlite3.connect(out / "results.sqlite") as db:
        keys = [k for (k,) in db.execute("SELECT key FROM conditions WHERE defense = 'none'")]
        db.execute(
            "INSERT INTO conditions SELECT substr(key, 1, length(key) - 4) || 'tv', model, "
            "arch, prior, beta, threat, strength, 'tv', params, n, top1, est_bytes * 0.8, "
            "payload_bytes * 0.8, packet_bytes * 0.8, seconds, finished_at FROM conditions "
            "WHERE defense = 'none'"
        )
        db.executemany(
            "INSERT INTO images SELECT substr(key, 1, length(key) - 4) || 'tv', image, "
            "est_bytes, payload_bytes * 0.8, packet_bytes, correct, predicted FROM images "
            "WHERE key = ?",
            [(k,) for k in keys],
        )
    html = write_report(out).read_text(encoding="utf-8")
    section = html[html.index('id="defences"') :]
    assert "Payload change per defence" in section and "Top-1 change per defence" in section
    assert "<th class=num>tv</th>" in section and "<th class=num>none</th>" in section
    assert "data:image/png;base64," in section
    assert "\u221220.0\u202f%" in section  # clean with the defence: 0.8 x clean payload


def test_missing_results_is_a_clear_error(tmp_path):
    with pytest.raises(ResultsNotFoundError, match="entroguard campaign") as info:
        write_report(tmp_path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, EntroguardError)
    assert not (tmp_path / "results.sqlite").exists()  # the check creates nothing


def test_empty_results_is_a_clear_error(tmp_path):
    from entroguard.campaign.store import ResultStore

    ResultStore(tmp_path / "results.sqlite").close()
    with pytest.raises(EntroguardError, match="no measured condition"):
        write_report(tmp_path)


def test_adaptive_attacks_and_defences_compare_the_same_budget(tmp_path, monkeypatch):
    """Defences measured at eps 8 only: the 'none' bar is eps 8 too (not the strongest eps),
    and the adaptive attack sits next to the plain rate attack with and without its defence."""
    from entroguard.campaign.store import ResultStore
    from entroguard.report import summary as S
    from entroguard.report.data import Results

    zoo = tmp_path / "zoo"
    save_checkpoint(seeded_model("resnet_s", "mshp"), zoo / "resnet_s-mshp-beta0.01", beta=0.01,
                    dataset="fashion-mnist", metrics={})  # fmt: skip
    fast = {"steps": 1, "noise_copies": 1}
    config = {
        "n_images": 4,
        "batch_size": 4,
        "defenses": ["none", "lowpass"],
        "threats": [
            "clean",
            {"attack": "rate_pgd", "eps": [32], "params": fast, "defenses": ["none"]},
            {"attack": "rate_pgd", "eps": [8], "params": fast},
            {"attack": "rate_lowfreq", "eps": [8], "params": {**fast, "defense": "lowpass"}},
        ],
    }
    out = tmp_path / "out"
    run_campaign(parse_config(config), out, zoo_dir=zoo, progress=False)
    with ResultStore(out / "results.sqlite") as store:
        results = Results.from_store(store)
    bars = {(r["family"], r["defense"]): r for r in S.defense_family_rows(results)}
    eps8 = results.mean_over_models("rate_pgd", 8.0, "rate_change_pct")
    eps32 = results.mean_over_models("rate_pgd", 32.0, "rate_change_pct")
    assert eps8 != eps32
    assert bars["rate_pgd", "none"]["rate_change_pct"] == pytest.approx(eps8)
    (row,) = S.adaptive_rows(results)
    assert row["attack"] == "rate_lowfreq" and row["defense"] == "lowpass"
    assert set(row["rate"]) == {"plain", "plain, defended", "adaptive"}
    html = write_report(out).read_text(encoding="utf-8")
    section = html[html.index('id="defences"') :]
    assert "Adaptive attacks" in section and "rate, adaptive + defence" in section
    assert "won back" in section


def test_corruption_rows_are_labelled_by_the_sign_of_their_rate_change(campaign, monkeypatch):
    from entroguard.campaign.store import ResultStore
    from entroguard.report import html, summary
    from entroguard.report.data import Results

    rates = (("fog", 156.0), ("snow", 40.0), ("blur", 3.0), ("jpeg", 0.5))  # all raise the rate
    effects = [summary.CorruptionEffect(name, 5, rate, 0.0, rate) for name, rate in rates]
    monkeypatch.setattr(html.S, "corruption_effects", lambda results: effects)
    with ResultStore(campaign / "results.sqlite") as store:
        section = html._summary_section(Results.from_store(store))
    table = section.split("Corruptions that move the rate most", 1)[1]
    assert "lowers" not in table and table.count("raises") == len(effects)


def test_the_heat_map_caption_is_read_from_the_data(campaign, monkeypatch):
    from entroguard.campaign.store import ResultStore
    from entroguard.report import html, summary
    from entroguard.report.data import Results

    rates = (("fog", -20.0), ("snow", -35.0), ("gaussian_noise", 80.0), ("contrast", -60.0))
    effects = [summary.CorruptionEffect(name, 5, rate, 0.0, rate) for name, rate in rates]
    monkeypatch.setattr(html.S, "corruption_effects", lambda results: effects)
    with ResultStore(campaign / "results.sqlite") as store:
        caption = html._heatmap_reading(Results.from_store(store))
    assert caption.startswith("Top rows here: gaussian noise (+80.0 %), fog (-20.0 %); ")
    assert "bottom rows: snow (-35.0 %), contrast (-60.0 %) (mean rate change" in caption
