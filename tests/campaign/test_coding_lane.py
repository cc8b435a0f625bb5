"""Coding beside the device: the measurer's coding lane changes nothing but where it codes."""

from __future__ import annotations

import csv
import threading

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from entroguard.campaign import measurer as measurer_module
from entroguard.campaign.coding_lane import (
    CodingLane,
    overlap_by_default,
    raise_failed,
    results,
)
from entroguard.campaign.measurer import Measurer, Task
from entroguard.campaign.models import ModelRef
from entroguard.cli import app
from entroguard.data import load_dataset
from entroguard.measure import code_batch
from entroguard.threads import torch_threads
from entroguard.threats.threat import Threat
from entroguard.train.zoo import default_zoo_dir

MODEL = "resnet_s-mshp-beta0.01"


def _task() -> Task:
    ref = ModelRef(MODEL, default_zoo_dir() / f"{MODEL}.safetensors", "resnet_s", "mshp", 0.01)
    attack = Threat("rate_pgd", 8, {"steps": 3, "noise_copies": 4})
    return Task(ref, attack, 20, ("none", "rate_cap", "object_tv"))


def _measure(overlap: bool, monkeypatch) -> tuple[list, set[str]]:
    """The task's results with the lane on or off, and the names of the threads that coded."""
    coders: set[str] = set()

    def recording(*args):
        coders.add(threading.current_thread().name)
        return code_batch(*args)

    monkeypatch.setattr(measurer_module, "code_batch", recording)
    data = load_dataset("fashion-mnist", "test")
    measurer = Measurer(data, batch_size=8, seed=0, overlap=overlap)
    try:
        return measurer.run(_task()), coders
    finally:
        measurer.lane.close()


def test_coding_on_the_lane_gives_the_same_results_as_coding_inline(monkeypatch):
    """An attack behind no defence, the byte cap (a head that changes while the lane codes)
    and object_tv, in batches of 8, 8 and 4: every per-image column is identical."""
    inline, inline_coders = _measure(False, monkeypatch)
    lane, lane_coders = _measure(True, monkeypatch)
    assert inline_coders == {threading.current_thread().name}
    assert lane_coders and all(name.startswith("entroguard-coding") for name in lane_coders)
    assert [r.cid for r in lane] == [r.cid for r in inline]
    for a, b in zip(inline, lane, strict=True):
        assert a.measurement.n == 20
        for column in ("est_bytes", "payload_bytes", "packet_bytes", "correct", "predicted"):
            assert np.array_equal(getattr(a.measurement, column), getattr(b.measurement, column))
    capped = {r.cid.defense: r.measurement.payload_bytes.max() for r in lane}
    assert capped["rate_cap"] < capped["none"]  # the cap held on the lane's thread


def test_the_lane_is_on_by_default_on_cuda_only():
    assert not overlap_by_default("cpu") and overlap_by_default("cuda:0")
    assert not Measurer(load_dataset("fashion-mnist", "test"), 8, 0).lane.enabled


def test_the_lane_codes_with_the_submitters_thread_count_and_in_order():
    lane = CodingLane(enabled=True)
    try:
        with torch_threads(1):
            counts = results([lane.submit(torch.get_num_threads) for _ in range(3)])
        order: list[int] = []
        results([lane.submit(order.append, i) for i in range(20)])
    finally:
        lane.close()
    assert counts == [1, 1, 1]
    assert order == list(range(20))


def test_a_failed_job_is_raised_after_the_others_are_done():
    lane, done = CodingLane(enabled=True), []

    def fail() -> None:
        raise ValueError("bad latent")

    pending = [lane.submit(fail), lane.submit(done.append, 1), lane.submit(done.append, 2)]
    with pytest.raises(ValueError, match="bad latent"):
        results(pending)
    assert done == [1, 2]
    with pytest.raises(ValueError, match="bad latent"):
        raise_failed(pending)  # what the measurer checks after each batch
    lane.close()


def test_with_the_lane_off_a_job_runs_and_fails_at_once():
    lane = CodingLane(enabled=False)
    assert lane.submit(sum, [1, 2]).result() == 3
    with pytest.raises(KeyboardInterrupt):
        lane.submit(_interrupt)


def _interrupt() -> None:
    raise KeyboardInterrupt


def test_the_campaign_command_takes_overlap_and_measures_the_same(tiny_zoo, tmp_path):
    """``entroguard campaign --overlap`` in two worker processes against the default (inline
    on the CPU): the same rows in every column but ``seconds``."""
    config = tmp_path / "c.yaml"
    config.write_text("n_images: 8\nbatch_size: 4\nthreats:\n  - clean\n"
                      "  - attack: rate_pgd\n    eps: [8]\n    params: {steps: 2}\n")  # fmt: skip
    rows = []
    for flags in (["--overlap", "--workers", "2"], ["--workers", "2"]):
        out = tmp_path / flags[0]
        result = CliRunner().invoke(
            app,
            [
                "campaign",
                str(config),
                "--out",
                str(out),
                "--zoo-dir",
                str(tiny_zoo),
                "--no-report",
                *flags,
            ],
        )
        assert result.exit_code == 0, result.output
        with (out / "results.csv").open() as f:
            rows.append([{k: v for k, v in r.items() if k != "seconds"}
                         for r in csv.DictReader(f)])  # fmt: skip
    assert len(rows[0]) == 4 and rows[0] == rows[1]
