"""The rate attack with glibc's default allocator against :mod:`entroguard.allocator`'s.

Each measurement runs in a fresh child process (the allocator's thresholds are per process and
cannot be set back), one torch thread, the two settings interleaved; prints the best seconds
of each, their ratio, the kernel (system) time of each and checks that both produced the same
adversarial images.

    python benchmarks/allocator.py [--models resnet_s-mshp-beta0.01,resnet_s-fp-beta0.01]
        [--n 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import torch
from entroguard.allocator import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory(), "mallopt refused"
torch.set_num_threads(1)
from entroguard.campaign.models import resolve_models
from entroguard.data import load_dataset
from entroguard.threats.attacks import RatePGD
x = load_dataset("fashion-mnist", "test").to_float(slice(0, int(sys.argv[3])))
models = [resolve_models([n])[0].load() for n in sys.argv[2].split(",")]
sys0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime, time.perf_counter()
sums = [float(RatePGD(8 / 255)(m, x, generator=torch.Generator().manual_seed(0)).double().sum())
        for m in models]
print(json.dumps({"s": time.perf_counter() - t0, "sums": sums,
                  "sys": resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0}))
"""


def run(setting: str, models: str, n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, setting, models, str(n)], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet_s-mshp-beta0.01,resnet_s-fp-beta0.01")
    parser.add_argument("--n", type=int, default=32, help="test images attacked")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for setting in ("default", "tuned"):
            r = run(setting, args.models, args.n)
            if setting not in best or r["s"] < best[setting]["s"]:
                best[setting] = r
    same = best["default"]["sums"] == best["tuned"]["sums"]
    print(f"rate_pgd eps 8/255 (20 steps, 16 copies), {args.n} images, {args.models}")
    for setting, r in best.items():
        print(f"  {setting:8s} {r['s']:6.2f} s   kernel time {r['sys']:5.2f} s")
    print(
        f"  tuned / default speed: {best['default']['s'] / best['tuned']['s']:.2f}x; "
        f"same adversarial images: {same}"
    )


if __name__ == "__main__":
    main()
