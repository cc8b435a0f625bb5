"""The GPU attack benchmark's code path, run on the CPU with tiny settings (no GPU here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_attack_benchmark_runs_its_imagenet_path_on_the_cpu():
    """``benchmarks/attacks.py --imagenet`` builds the ResNet-50 mshp model at 224 px that the
    GPU run measures and prints all three tables, the published loop's ratio included."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "attacks.py"), "--device", "cpu",
           "--imagenet", "--n", "2", "--single-n", "1", "--steps", "1", "--copies", "2",
           "--repeats", "1", "--no-compiled"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "resnet50/mshp (3, 224, 224)" in out
    assert re.search(r"published loop\s+1\s+[\d.]+\s+-\s+[+-][\d.]+\s+1\.0x", out), out
    assert re.search(r"ours, batched\s+2\s+[\d.]+\s+[+-][\d.]+\s+[+-][\d.]+\s+[\d.]+x", out), out
    for mode in ("ste float32", "noise x2 float32", "noise x2 bf16", "noise x2 tf32"):
        assert mode in out
