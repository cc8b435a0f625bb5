"""Where splitting pays off: latency and energy arithmetic, crossovers, the plan command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from entroguard.plan.costs import OptionCost, PlanParameters, crossovers, plan_rows

PARAMS = PlanParameters(
    rtt_ms=10.0, device_compute_w=2.0, radio_w=1.0, bandwidths_mbps=(0.01, 1, 10)
)
COSTS = [
    OptionCost("local", 50.0, 0.0, 0.0),
    OptionCost("offload_png", 1.0, 1000.0, 5.0),
    OptionCost("split", 10.0, 100.0, 5.0),
]


def test_latency_and_energy_follow_the_documented_formulas():
    split = COSTS[2]
    # 100 B at 1 Mbit/s = 0.8 ms on the radio
    assert split.latency_ms(1.0, PARAMS) == pytest.approx(10.0 + 0.8 + 10.0 + 5.0)
    assert split.energy_mj(1.0, PARAMS) == pytest.approx(10.0 * 2.0 + 0.8 * 1.0)
    assert COSTS[0].latency_ms(0.1, PARAMS) == 50.0 and COSTS[0].energy_mj(0.1, PARAMS) == 100.0


def test_rows_mark_one_fastest_and_one_least_energy_option_per_bandwidth():
    rows = plan_rows(COSTS, PARAMS)
    assert len(rows) == 9  # 3 bandwidths x 3 options
    for bw in PARAMS.bandwidths_mbps:
        group = [r for r in rows if r["bandwidth_mbps"] == bw]
        assert sum(r["fastest"] for r in group) == 1 and sum(r["least_energy"] for r in group) == 1
        fastest = next(r for r in group if r["fastest"])
        assert fastest["latency_ms"] == min(r["latency_ms"] for r in group)


def test_crossovers_are_exact_ties():
    # local 50 ms; split 25 + 0.8 / bw; offload 16 + 8 / bw: ties at 0.032 and 0.8 Mbit/s
    found = crossovers(COSTS, PARAMS)
    assert [round(c["bandwidth_mbps"], 6) for c in found] == [0.032, 0.8]
    assert [(c["from"], c["to"]) for c in found] == [("local", "split"), ("split", "offload_png")]
    for c in found:
        a, b = (next(x for x in COSTS if x.option == c[k]) for k in ("from", "to"))
        bw = c["bandwidth_mbps"]
        assert a.latency_ms(bw, PARAMS) == pytest.approx(b.latency_ms(bw, PARAMS))


def test_bad_parameters_are_clear_errors():
    with pytest.raises(ValueError, match="bandwidths"):
        PlanParameters(bandwidths_mbps=(0.0,))
    with pytest.raises(ValueError, match="rtt_ms"):
        PlanParameters(rtt_ms=-1)


@pytest.mark.slow
def test_plan_command_prints_the_design_fields():
    out = subprocess.run(
        [sys.executable, "-m", "entroguard.cli", "plan", "--model", "resnet_s-fp-beta0.16",
         "--json", "--n-images", "12", "--bandwidths", "0.5,50"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = json.loads(out.stdout)
    assert {r["option"] for r in rows} == {"local", "offload_png", "offload_jpeg", "split"}
    assert {r["bandwidth_mbps"] for r in rows} == {0.5, 50.0}
    for r in rows:
        assert {"bandwidth_mbps", "option", "latency_ms", "device_energy_mj"} <= set(r)
        assert r["latency_ms"] > 0 and r["device_energy_mj"] > 0
    split = next(r for r in rows if r["option"] == "split")
    assert 100 < split["upload_bytes"] < 140  # the model's packets (header + payload)


def test_a_written_plan_becomes_a_report_section(tmp_path):
    from entroguard.plan.record import plan_record, read_plan, write_plan
    from entroguard.report.plan_section import plan_section

    path = write_plan(tmp_path / "plan", plan_record("toy", COSTS, PARAMS))
    record = read_plan(path.parent)
    assert record["model"] == "toy" and len(record["rows"]) == 9
    html = plan_section(record)
    assert "data:image/png;base64," in html and "fastest changes from" in html
    assert "device 50.00 ms" in html
    assert "No plan in this folder" in plan_section(read_plan(tmp_path / "nowhere"))
