"""The shipped default zoo meets the foundation issue's numbers (measured, not assumed)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import pytest

from entroguard.train.zoo import ZOO_ARCHS, ZOO_BETAS, ZOO_PRIORS, list_zoo, zoo_entries

REQUIRED = {"name", "arch", "prior", "beta", "dataset", "top1", "est_bytes", "payload_bytes",
            "packet_bytes"}  # fmt: skip


@pytest.fixture(scope="module")
def zoo() -> list[dict]:
    """The default zoo: the shipped entropic students (BottleFit's models are tested apart)."""
    rows = [r for r in list_zoo() if r["recipe"] == "entropic_student"]
    assert rows, "no shipped zoo: train it with `entroguard train --zoo --out <dir>`"
    return rows


def test_zoo_is_complete(zoo):
    assert {r["name"] for r in zoo} == {e.name for e in zoo_entries()}
    assert len(zoo) == len(ZOO_ARCHS) * len(ZOO_PRIORS) * len(ZOO_BETAS)


def test_zoo_json_has_the_design_fields():
    out = subprocess.run([sys.executable, "-m", "entroguard.cli", "zoo", "--json"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    rows = json.loads(out.stdout)
    assert sum(r["recipe"] == "entropic_student" for r in rows) == 24
    for r in rows:
        assert REQUIRED | {"recipe"} <= set(r)
        assert r["recipe"] in ("entropic_student", "bottlefit", "slimmable", "rate_adversarial")
        assert r["prior"] in ("fp", "mshp", "q8") and r["dataset"] == "fashion-mnist"
        assert 0 <= r["top1"] <= 1 and r["n_test"] == 10_000
        if r["prior"] == "q8":
            assert r["est_bytes"] == r["payload_bytes"]


def test_best_model_of_each_pair_reaches_90_percent(zoo):
    best = defaultdict(float)
    for r in zoo:
        best[(r["arch"], r["prior"])] = max(best[(r["arch"], r["prior"])], r["top1"])
    assert len(best) == 6
    assert all(top1 >= 0.90 for top1 in best.values()), best


def test_payload_is_within_one_percent_plus_8_bytes_of_the_estimate(zoo):
    for r in zoo:
        assert r["payload_bytes"] <= 1.01 * r["est_bytes"] + 8, r["name"]


def test_packet_header_is_at_most_16_bytes(zoo):
    for r in zoo:
        assert 0 < r["packet_bytes"] - r["payload_bytes"] <= 16, r["name"]


def test_betas_span_at_least_3x_in_payload(zoo):
    by_pair = defaultdict(dict)
    for r in zoo:
        by_pair[(r["arch"], r["prior"])][r["beta"]] = r["payload_bytes"]
    for pair, sizes in by_pair.items():
        ratio = sizes[min(sizes)] / sizes[max(sizes)]
        assert ratio >= 3.0, (pair, sizes)


@pytest.mark.slow
def test_stored_measurement_is_reproduced_on_the_full_test_set(zoo):
    """Re-measure one model of each prior on all 10k test images: the same numbers."""
    from entroguard.data import load_dataset
    from entroguard.measure import measure
    from entroguard.train.checkpoint import load_checkpoint

    test = load_dataset("fashion-mnist", "test")
    for prior in ZOO_PRIORS:
        row = next(r for r in zoo if r["prior"] == prior and r["arch"] == "resnet_s")
        fresh = measure(load_checkpoint(row["path"]), test.batches(500), progress=False).summary()
        assert fresh["n"] == 10_000
        for k in ("top1", "payload_bytes", "packet_bytes"):
            assert fresh[k] == pytest.approx(row[k], abs=1e-9), (row["name"], k)
        assert fresh["est_bytes"] == pytest.approx(row["est_bytes"], rel=1e-4)
