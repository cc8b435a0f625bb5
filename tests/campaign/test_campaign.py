"""Campaigns: config errors name the key; results are complete, resumable, never duplicated."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from entroguard.campaign import ConfigError, load_config, run_campaign
from entroguard.campaign.config import parse_config
from entroguard.campaign.export import COLUMNS

SMALL = {
    "n_images": 12,
    "batch_size": 6,
    "models": "zoo",
    "threats": [
        "clean",
        {"corruption": ["gaussian_noise", "defocus_blur"], "severities": [1, 5]},
        {"attack": "noise", "eps": [8]},
        {
            "attack": "rate_pgd",
            "eps": [8],
            "n_images": 6,
            "params": {"steps": 2, "noise_copies": 2},
        },
    ],
}


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_results_have_the_design_columns_and_one_row_per_condition(tiny_zoo, tmp_path):
    csv_path = run_campaign(parse_config(SMALL), tmp_path, zoo_dir=tiny_zoo, progress=False)
    rows = _rows(csv_path)
    assert list(rows[0])[: len(COLUMNS)] == COLUMNS
    assert len(rows) == 2 * (1 + 4 + 1 + 1)
    keys = {(r["model"], r["threat"], r["strength"], r["defense"]) for r in rows}
    assert len(keys) == len(rows)
    clean = [r for r in rows if r["threat"] == "clean"]
    assert all(float(r["rate_change_pct"]) == 0 and r["strength"] == "0" for r in clean)
    assert {r["threat"] for r in rows} == {
        "clean", "corruption/gaussian_noise", "corruption/defocus_blur", "noise", "rate_pgd"
    }  # fmt: skip
    attack = next(r for r in rows if r["threat"] == "rate_pgd")
    assert attack["n"] == "6" and attack["strength"] == "8"
    for r in rows:
        assert float(r["packet_bytes"]) > float(r["payload_bytes"]) > 0
    db = sqlite3.connect(tmp_path / "results.sqlite")
    assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 2 * (12 * 6 + 6)


def test_rerun_is_a_no_op(tiny_zoo, tmp_path):
    cfg = parse_config(SMALL)
    run_campaign(cfg, tmp_path, zoo_dir=tiny_zoo, progress=False)
    first = (tmp_path / "results.csv").read_text()
    run_campaign(cfg, tmp_path, zoo_dir=tiny_zoo, progress=False)
    lines = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]  # noqa: E731
    assert lines((tmp_path / "results.csv").read_text()) == lines(first)


def test_corruptions_are_reproducible_across_runs(tiny_zoo, tmp_path):
    cfg = parse_config(SMALL)
    run_campaign(cfg, tmp_path / "a", zoo_dir=tiny_zoo, progress=False)
    run_campaign(cfg, tmp_path / "b", zoo_dir=tiny_zoo, progress=False)
    drop_time = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop_time(_rows(tmp_path / "a" / "results.csv")) == drop_time(
        _rows(tmp_path / "b" / "results.csv")
    )


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"threats": ["clean"], "modles": "zoo"}, "modles"),
        ({"threats": [{"corruption": ["fogg"]}]}, "threats[0].corruption"),
        ({"threats": ["clean", {"corruption": "all", "severities": [6]}]}, "threats[1].severities"),
        ({"threats": [{"attack": "rate_pgd", "eps": "big"}]}, "threats[0].eps"),
        ({"threats": [{"attack": "rate_pgd", "params": {"stepz": 3}}]}, "threats[0].params"),
        ({"threats": [{"attack": "pgd"}]}, "threats[0].attack"),
        (
            {"threats": [{"attack": "rate_pgd", "params": {"step_size": 0.1}}]},
            "threats[0].params: RatePGD: step_size was renamed step_ratio",
        ),
        ({"threats": []}, "threats"),
        ({"threats": ["clean"], "n_images": 0}, "n_images"),
        ({"threats": ["clean"], "defenses": ["magic"]}, "defenses"),
    ],
)
def test_config_errors_name_the_key(raw, key):
    """Every config error starts with the offending key."""
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert str(info.value).startswith(key), str(info.value)


def test_yaml_cannot_execute_code(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("threats: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


@pytest.mark.slow
def test_killed_campaign_resumes_without_loss_or_duplicates(tiny_zoo, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        textwrap.dedent(
            """
            n_images: 24
            batch_size: 8
            threats:
              - clean
              - corruption: [gaussian_noise, shot_noise, fog, contrast, pixelate, snow]
                severities: [1, 3, 5]
            """
        )
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "entroguard.cli", "campaign", str(config), "--out", str(out),
           "--zoo-dir", str(tiny_zoo), "--no-report"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db_path = out / "results.sqlite"
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if db_path.exists():
            try:
                done = (
                    sqlite3.connect(db_path)
                    .execute("SELECT COUNT(*) FROM conditions")
                    .fetchone()[0]
                )
            except sqlite3.OperationalError:
                done = 0
            if done >= 5:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "campaign finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = sqlite3.connect(db_path).execute("SELECT COUNT(*) FROM conditions").fetchone()[0]
    assert 5 <= partial < 2 * 19
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = sqlite3.connect(db_path)
    assert db.execute("SELECT COUNT(*) FROM conditions").fetchone()[0] == 2 * (1 + 6 * 3)
    assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 2 * 19 * 24
    resumed = _rows(out / "results.csv")
    fresh_out = tmp_path / "fresh"
    fresh = _rows(run_campaign(load_config(config), fresh_out, zoo_dir=tiny_zoo, progress=False))
    key = lambda r: (r["model"], r["threat"], r["strength"])  # noqa: E731
    strip = lambda rows: sorted(  # noqa: E731
        ({k: v for k, v in r.items() if k != "seconds"} for r in rows), key=key
    )
    assert strip(resumed) == strip(fresh)
