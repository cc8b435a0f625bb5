"""The allocator setting: accepted by glibc, harmless elsewhere, results unchanged."""

from __future__ import annotations

import platform
import subprocess
import sys

CHILD = """
import sys, torch
from entroguard.allocator import keep_freed_memory
ok = keep_freed_memory() if sys.argv[1] == "tuned" else None
assert keep_freed_memory.cache_info().currsize == (1 if ok is not None else 0)
g = torch.Generator().manual_seed(0)
x = [torch.randn(2_000_000, generator=g) for _ in range(3)]  # blocks above the old threshold
print(ok, float(sum(t.double().sum() for t in x)))
"""


def _run(setting: str) -> tuple[str, str]:
    out = subprocess.run([sys.executable, "-c", CHILD, setting], check=True,
                         capture_output=True, text=True).stdout.split()  # fmt: skip
    return out[0], out[1]


def test_glibc_accepts_the_thresholds_and_nothing_computed_changes():
    tuned, default = _run("tuned"), _run("default")
    expected = "True" if platform.libc_ver()[0] == "glibc" else "False"
    assert tuned[0] == expected
    assert tuned[1] == default[1]
