"""The report's "Winning the bytes back" section, from a real small campaign: a zoo model and its
rate-adversarial copy, undefended, behind object_tv and behind the byte cap."""

from __future__ import annotations

import numpy as np
import pytest

from entroguard.campaign.config import parse_config
from entroguard.campaign.runner import run_campaign
from entroguard.campaign.store import ResultStore
from entroguard.report.data import Results
from entroguard.report.html import build_html
from entroguard.report.winning_section import change_against_source, winning_rows

SOURCE = "resnet_s-mshp-beta0.01"
QUICK = {"steps": 2, "noise_copies": 2}
CONFIG = {
    "dataset": "fashion-mnist",
    "n_images": 8,
    "batch_size": 8,
    "models": [SOURCE, f"{SOURCE}-radv"],
    "defenses": ["none", {"object_tv": {"steps": 10}}, {"rate_cap": {"budget_q": 0.99}}],
    "threats": [
        "clean",
        {"attack": "rate_pgd", "eps": [8], "n_images": 6, "params": QUICK},
        {"attack": "rate_pgd_through", "eps": [8], "n_images": 6, "params": QUICK},
    ],
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Results:
    out = tmp_path_factory.mktemp("winning")
    run_campaign(parse_config(CONFIG), out, progress=False)
    store = ResultStore(out / "results.sqlite")  # open for the per-image reads
    yield Results.from_store(store)
    store.close()


def test_every_configuration_is_measured_against_the_original_clean_images(results):
    ((prior, rows),) = winning_rows(results).items()
    assert prior == "mshp"
    labels = [r["config"].label for r in rows]
    assert labels == ["undefended", "object_tv", "byte cap", "rate-adversarial",
                      "rate-adversarial + object_tv", "rate-adversarial + byte cap"]  # fmt: skip
    by_label = {r["config"].label: r for r in rows}
    # the tuned model behind object_tv, against the ORIGINAL model's clean images
    clean = results.per_image(SOURCE, "clean", 0.0)
    tuned = results.per_image(f"{SOURCE}-radv", "rate_pgd", 8.0, "object_tv")
    expected = 100 * (tuned["payload_bytes"].mean() / clean["payload_bytes"][:6].mean() - 1)
    assert np.isclose(by_label["rate-adversarial + object_tv"]["attack"]["rate"], expected)
    assert by_label["undefended"]["clean"]["rate"] == 0.0
    # adaptive: through object_tv where there is one, the plain attack otherwise
    through = change_against_source(results, SOURCE, SOURCE, "rate_pgd_through", 8.0,
                                    "object_tv")  # fmt: skip
    assert np.isclose(by_label["object_tv"]["adaptive"]["rate"], through[0])
    assert by_label["undefended"]["adaptive"] == by_label["undefended"]["attack"]


def test_the_section_and_the_clean_cost_reach_the_page(results):
    html = build_html(results)
    section = html[html.index('id="winning"') :]
    assert "rate-adversarial + byte cap" in section and "<table" in section
    assert "What each defence costs when nobody attacks" in html
    without = Results([r for r in results.rows if not r["model"].endswith("-radv")],
                      results.per_image_of)  # fmt: skip
    assert "No rate-adversarially trained model" in build_html(without)
