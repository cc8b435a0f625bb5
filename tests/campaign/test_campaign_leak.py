"""``leak`` entries in campaigns: parsed with clear errors, measured per (model, protection),
committed one measurement at a time, resumed without repeats, exported and reported."""

from __future__ import annotations

import csv

import pytest

from entroguard.campaign import ConfigError, run_campaign
from entroguard.campaign.config import parse_config
from entroguard.campaign.store import ResultStore
from entroguard.report.html import write_report

LEAKY = {
    "n_images": 40,
    "models": "zoo",
    "leak": [
        {"protections": ["none", "capr_noise"], "points": ["latent", "logits"],
         "probes": ["linear"], "shadow_images": 120},
        {"protections": ["keyed_noise"], "points": ["latent"], "probes": ["linear"],
         "shadow_images": 120, "test_images": 20, "models": ["resnet_s-fp-*"]},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def leaked(tiny_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("leak")
    run_campaign(parse_config(LEAKY), out, zoo_dir=tiny_zoo, progress=False)
    return out


def test_a_leak_only_campaign_measures_clean_and_every_unit(leaked):
    with ResultStore(leaked / "results.sqlite") as store:
        conditions = store.conditions()
        rows = store.leak_rows()
    assert {(c["model"], c["threat"]) for c in conditions} == {
        ("resnet_s-fp-beta0.01", "clean"), ("regnet_s-mshp-beta0.01", "clean")}  # fmt: skip
    units = {(r["model"], r["defense"]) for r in rows}
    assert units == {
        ("resnet_s-fp-beta0.01", "none"), ("resnet_s-fp-beta0.01", "capr_noise"),
        ("regnet_s-mshp-beta0.01", "none"), ("regnet_s-mshp-beta0.01", "capr_noise"),
        ("resnet_s-fp-beta0.01", "keyed_noise"),
    }  # fmt: skip
    keyed = [r for r in rows if r["defense"] == "keyed_noise"]
    assert {r["n_test"] for r in keyed} == {20} and {r["n_shadow"] for r in rows} == {120}
    probed = {(r["point"], r["probe"]) for r in rows if r["defense"] == "none"}
    assert {("latent", "linear"), ("logits", "linear"), ("packet_length", "histogram"),
            ("channel_bits", "mlp"), ("reference", "victim")} <= probed  # fmt: skip
    with (leaked / "leak.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(rows)


def test_a_rerun_measures_nothing_again(leaked, tiny_zoo):
    with ResultStore(leaked / "results.sqlite") as store:
        before = store.leak_rows()
    run_campaign(parse_config(LEAKY), leaked, zoo_dir=tiny_zoo, progress=False)
    with ResultStore(leaked / "results.sqlite") as store:
        assert store.leak_rows() == before


def test_another_set_up_is_another_measurement_not_a_resume(tmp_path, tiny_zoo):
    entry = {"points": ["latent"], "probes": ["linear"], "shadow_images": 100,
             "models": ["resnet_s-*"]}  # fmt: skip
    for shadow in (100, 110):
        raw = {"n_images": 20, "models": "zoo", "leak": [entry | {"shadow_images": shadow}]}
        run_campaign(parse_config(raw), tmp_path, zoo_dir=tiny_zoo, progress=False)
    with ResultStore(tmp_path / "results.sqlite") as store:
        assert {r["n_shadow"] for r in store.leak_rows()} == {100, 110}


def test_the_report_shows_what_the_bitstream_leaks(leaked):
    html = write_report(leaked).read_text()
    section = html[html.index('id="leak"') :]
    assert "label recovery per point" in section
    assert "privacy, bytes and accuracy per protection" in section
    assert section.count("<img") >= 2 and "capr_noise" in section


@pytest.mark.parametrize(
    ("leak", "key"),
    [
        ({"protections": ["salt"]}, "leak[0].protections: unknown 'salt'"),
        ({"points": ["pixels"]}, "leak[0].points: unknown 'pixels'"),
        ({"probes": []}, "leak[0].probes: expected a non-empty list"),
        ({"shadow_images": 0}, "leak[0].shadow_images"),
        ([{}, {"colour": "red"}], "leak[1].colour: unknown key"),
        ("yes", "leak: expected a mapping"),
    ],
)
def test_leak_config_errors_name_the_key(leak, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_config({"models": "zoo", "leak": leak})


def test_a_keyed_permutation_on_an_mshp_model_is_refused_before_running(tiny_zoo, tmp_path):
    raw = {"n_images": 8, "models": "zoo", "leak": {"protections": ["keyed_permutation"]}}
    with pytest.raises(ConfigError, match=r"leak\[0\].protections: keyed_permutation protects fp"):
        run_campaign(parse_config(raw), tmp_path, zoo_dir=tiny_zoo, progress=False)
    assert not (tmp_path / "results.csv").exists()
