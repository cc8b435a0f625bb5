"""One campaign per output folder, a corrupt store is a one-line error, and results.csv rows
come in the same order whatever order the workers finished in."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from typer.testing import CliRunner

from entroguard.campaign.export import write_csv
from entroguard.campaign.store import ConditionId, ResultStore
from entroguard.cli import app
from entroguard.measure import Measurement

CONFIG = "n_images: 4\nbatch_size: 4\nthreats: [clean]\n"
HOLD_LOCK = (
    "import sys, time\n"
    "from entroguard.campaign.out_lock import OutDirLock\n"
    "with OutDirLock(sys.argv[1]):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(120)\n"
)


def _campaign(tmp_path, out, zoo):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    args = ["campaign", str(config), "--out", str(out), "--zoo-dir", str(zoo), "--no-report"]
    return CliRunner().invoke(app, args)


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.output
    for fragment in fragments:
        assert fragment in error[0], result.output


def test_a_second_campaign_into_the_same_folder_is_refused(tiny_zoo, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = _campaign(tmp_path, out, tiny_zoo)
        _one_line_error(result, f"another campaign (process {holder.pid})", "another --out")
        assert not (out / "results.sqlite").exists()
    finally:
        holder.kill()
        holder.wait()
    assert _campaign(tmp_path, out, tiny_zoo).exit_code == 0  # the dead holder's lock is gone


def test_a_corrupt_results_store_is_a_one_line_error(tiny_zoo, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.sqlite").write_bytes(b"this is not an SQLite file " * 200)
    _one_line_error(_campaign(tmp_path, out, tiny_zoo), "not a readable results store",
                    "move it aside")  # fmt: skip
    _one_line_error(CliRunner().invoke(app, ["report", str(out)]), "not a readable results store")


def _measurement(seed: int) -> Measurement:
    rng = np.random.default_rng(seed)
    payload = rng.integers(100, 200, 4)
    return Measurement(payload * 8.0, payload, payload + 20, rng.integers(0, 2, 4).astype(bool),
                       rng.integers(0, 10, 4))  # fmt: skip


def test_results_csv_rows_do_not_depend_on_finishing_order(tmp_path):
    conditions = [ConditionId(m, t, s, d) for m in ("b-model", "a-model")
                  for t, s in (("clean", 0.0), ("rate_pgd", 8.0), ("corruption/fog", 3.0),
                               ("corruption/fog", 1.0))
                  for d in ("object_tv", "none")]  # fmt: skip
    texts = []
    for order in (conditions, conditions[::-1], conditions[3:] + conditions[:3]):
        folder = tmp_path / str(len(texts))
        with ResultStore(folder / "results.sqlite") as store:
            for cid in order:
                info = {"arch": "resnet_s", "prior": "fp", "beta": 0.01}
                store.add(cid, info, "{}", np.arange(4), _measurement(conditions.index(cid)), 1.0)
            texts.append(write_csv(store, folder / "results.csv").read_text())
    assert texts[0] == texts[1] == texts[2]
    rows = [line.split(",")[:7] for line in texts[0].splitlines()[1:]]
    assert [r[0] for r in rows[:8]] == ["a-model"] * 8
    assert rows[0][4:7] == ["clean", "0", "none"] and rows[1][4:7] == ["clean", "0", "object_tv"]
    assert [r[5] for r in rows[2:6]] == ["1", "1", "3", "3"]
