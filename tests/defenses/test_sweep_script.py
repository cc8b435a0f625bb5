"""scripts/sweep_object_tv.py: the sweep the README's object_tv table comes from runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "sweep_object_tv.py"


def test_the_sweep_measures_every_setting_on_clean_and_attacked_images(tmp_path):
    out = tmp_path / "sweep.json"
    cmd = [sys.executable, str(SCRIPT), "--models", "resnet_s-mshp-beta0.01", "--n", "4",
           "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = json.loads(out.read_text()).values()
    assert record["attacked"]["payload_bytes"] > record["clean"]["payload_bytes"]
    assert len(record["defended"]) == 6 and record["defended"][0]["params"] == {}
    for d in record["defended"]:
        assert d["attacked"]["payload_bytes"] < record["attacked"]["payload_bytes"]
    assert "defaults |" in done.stdout and "tv_eps" in done.stdout
