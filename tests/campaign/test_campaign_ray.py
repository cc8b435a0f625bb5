"""The Ray backend: the same results as the local backend, byte for byte but the seconds, and a
Ray worker killed mid-campaign is restarted with nothing lost or measured twice."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from entroguard.campaign import run_campaign
from entroguard.campaign.config import parse_config

ray = pytest.importorskip("ray", reason="scripts/install.sh --dev installs Ray")
psutil = pytest.importorskip("psutil")

CONFIG = {
    "n_images": 8,
    "batch_size": 4,
    "models": "zoo",
    "defenses": ["none", "jpeg"],
    "threats": [
        "clean",
        {"corruption": ["gaussian_noise", "fog", "contrast"], "severities": [2, 4],
         "defenses": ["none"]},
        {"attack": "rate_pgd", "eps": [4, 8], "n_images": 4,
         "params": {"steps": 2, "noise_copies": 2}},
    ],
}  # fmt: skip


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        rows = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
    return sorted(rows, key=lambda r: (r["model"], r["threat"], r["strength"], r["defense"]))


@pytest.fixture(scope="module")
def local_rows(tiny_zoo, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("local")
    return _rows(run_campaign(parse_config(CONFIG), out, zoo_dir=tiny_zoo, progress=False,
                              workers=2))  # fmt: skip


def test_ray_measures_exactly_what_the_local_backend_measures(tiny_zoo, tmp_path, local_rows):
    """Also with each actor's coding lane on (as on a GPU), against local workers coding
    inline."""
    csv_path = run_campaign(parse_config(CONFIG), tmp_path, zoo_dir=tiny_zoo, progress=False,
                            workers=2, backend="ray", overlap=True)  # fmt: skip
    assert _rows(csv_path) == local_rows
    assert not ray.is_initialized()  # the local instance it started is stopped again
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        (provenance,) = db.execute("SELECT provenance FROM runs").fetchone()
    assert '"backend": "ray"' in provenance


def _actor_processes() -> list:
    return [p for p in psutil.process_iter(["cmdline"])
            if any("_MeasurerActor" in part for part in (p.info["cmdline"] or []))]  # fmt: skip


def test_a_killed_ray_worker_is_restarted_and_nothing_is_lost_or_doubled(
    tiny_zoo, tmp_path, local_rows
):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    killed: list[tuple[int, int]] = []  # (pid, conditions stored when it was killed)

    def kill_one_worker_mid_run() -> None:
        db_path = tmp_path / "results.sqlite"
        for _ in range(600):
            time.sleep(0.05)
            actors = _actor_processes()
            if not actors or not db_path.exists():
                continue
            try:
                with sqlite3.connect(db_path) as db:
                    (done,) = db.execute("SELECT COUNT(*) FROM conditions").fetchone()
            except sqlite3.Error:
                continue
            if done >= 2:
                os.kill(actors[0].pid, signal.SIGKILL)
                killed.append((actors[0].pid, done))
                return

    killer = threading.Thread(target=kill_one_worker_mid_run)
    try:
        killer.start()
        csv_path = run_campaign(parse_config(CONFIG), tmp_path, zoo_dir=tiny_zoo,
                                progress=False, workers=2, backend="ray")  # fmt: skip
    finally:
        killer.join()
        ray.shutdown()
    assert killed and killed[0][1] < len(local_rows), "the worker was not killed mid-campaign"
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        (conditions,) = db.execute("SELECT COUNT(*) FROM conditions").fetchone()
        (images,) = db.execute("SELECT COUNT(*) FROM images").fetchone()
    assert conditions == len(local_rows)
    assert images == sum(int(r["n"]) for r in local_rows)  # no image measured twice
    assert _rows(csv_path) == local_rows
