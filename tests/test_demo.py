"""The main job end to end: `entroguard demo` on the shipped zoo (small image count)."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from entroguard.campaign.demo import DEMO_DEFENSES


@pytest.mark.slow
def test_demo_writes_every_condition_and_the_report(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "entroguard.cli", "demo", "--out", str(out), "--n-images", "4"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    # 24 models x (clean + 19 x 5 corruptions + 3 attacks x 5 budgets, clean and rate_pgd
    # eps 8 also behind the 5 defences) + 3 adaptive attacks on the 6 beta-0.01 models
    # + 3 slice models x (clean behind the 6 defences, rate_pgd eps 8 and 32) + the q8 model's
    # 19 corruptions + 2 rate-adversarial models x (clean behind the 6 defences, rate_pgd eps 8
    # without and behind object_tv, rate_pgd_through)
    assert len(rows) == 24 * (1 + 95 + 15 + 2 * 5) + 6 * 3 + 3 * (6 + 2) + 19 + 2 * (6 + 2 + 1)
    slices = {r["model"] for r in rows if "bottlefit" in r["model"] or "@" in r["model"]}
    assert slices == {"resnet_s-q8-c2-bottlefit", "resnet_s-slim-mshp@m1,r0",
                      "resnet_s-slim-mshp@m4,r3"}  # fmt: skip
    q8 = [r for r in rows if r["model"] == "resnet_s-q8-c2-bottlefit"]
    q8_attacked = {r["payload_bytes"] for r in q8 if r["threat"] == "rate_pgd"}
    assert len(q8_attacked) == 1, "a fixed-rate payload cannot grow under the rate attack"
    names = {d if isinstance(d, str) else next(iter(d)) for d in DEMO_DEFENSES}
    assert {r["defense"] for r in rows} == names
    adaptive = [r for r in rows if r["threat"] in ("rate_lowfreq", "rate_region",
                                                    "rate_pgd_through")]  # fmt: skip
    assert len(adaptive) == 20 and {r["defense"] for r in adaptive} == {"object_tv"}
    radv = {r["model"] for r in rows if r["model"].endswith("-radv")}
    assert radv == {"resnet_s-fp-beta0.01-radv", "resnet_s-mshp-beta0.01-radv"}
    rate = [float(r["rate_change_pct"]) for r in rows if r["threat"] == "rate_pgd"]
    assert sum(rate) / len(rate) > 10, "the rate attack should inflate the bitstream"
    html = (out / "report.html").read_text()
    assert "Corruptions" in html and "Attacks" in html and "data:image/png;base64" in html
    assert "Adaptive attacks" in html and "How threats move energy between DCT bands" in html
    winning = html[html.index('id="winning"') : html.index('id="bits"')]
    assert "rate-adversarial + object_tv" in winning and "What each defence costs" in html
    assert (out / "analysis" / "analysis.json").is_file()
    assert (out / "plan" / "plan.json").is_file() and "Where splitting pays off" in html
    assert "resnet_s-fp-beta0.01" in done.stdout  # the clean table is printed
    with (out / "leak.csv").open() as f:
        leak = list(csv.DictReader(f))
    assert {(r["model"], r["defense"]) for r in leak} == {
        ("resnet_s-mshp-beta0.01", "none"), ("resnet_s-mshp-beta0.01", "keyed_noise")}  # fmt: skip
    assert {r["point"] for r in leak} >= {"latent", "logits", "packet_length", "channel_bits"}
    section = html[html.index('id="leak"') :]
    assert section.count("<img") == 2  # recovery per point; the protections' trade-off
