"""Campaign throughput: the local backend with 1 and 2 workers, with the coding lane on and
off, against the Ray backend, in the same run, on the same grid.

Prints conditions per second and images per second of each, and their ratio to the local
backend with one worker coding inline (the baseline measured in this run). Every run measures
into a fresh folder, so nothing is resumed; the results of all runs are checked equal (all but
seconds; on CUDA a difference is reported, not fatal, since GPU kernels are not bit-exact).
The coding lane (``overlap``) codes one batch on a background thread while the device attacks
the next: on a GPU that hides the CPU coding; on a CPU both share the same cores.

    python benchmarks/campaign.py [--models resnet_s-fp-beta0.01,resnet_s-mshp-beta0.01]
                                  [--n-images 64] [--no-ray] [--device cuda]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from entroguard.campaign import run_campaign
from entroguard.campaign.config import parse_config
from entroguard.report.table import format_table

MODELS = "resnet_s-fp-beta0.01,resnet_s-mshp-beta0.01,regnet_s-fp-beta0.01,regnet_s-mshp-beta0.01"


def _config(models: list[str], n_images: int) -> dict:
    return {"n_images": n_images, "batch_size": 64, "models": models, "threats": [
        "clean",
        {"corruption": ["gaussian_noise", "defocus_blur", "fog", "jpeg_compression"],
         "severities": [1, 3, 5]},
        {"attack": "rate_pgd", "eps": [8], "n_images": 16,
         "params": {"steps": 5, "noise_copies": 4}},
    ]}  # fmt: skip


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        rows = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
    return sorted(rows, key=lambda r: (r["model"], r["threat"], r["strength"], r["defense"]))


def _run(config: dict, out: Path, **backend) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    csv_path = run_campaign(parse_config(config), out, progress=False, **backend)
    return time.perf_counter() - start, _rows(csv_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray backend")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    args = parser.parse_args()
    config = _config(args.models.split(","), args.n_images)
    runs = {"local, 1 worker": {"workers": 1, "overlap": False},
            "local, 1 worker, coding lane": {"workers": 1, "overlap": True},
            "local, 2 workers": {"workers": 2, "overlap": False}}  # fmt: skip
    if not args.no_ray:
        runs["ray, 2 workers"] = {"workers": 2, "backend": "ray", "overlap": False}
        if args.device.startswith("cuda"):  # Ray hides the GPU from actors that reserve none
            runs["ray, 2 workers"]["gpus_per_task"] = 0.5
    for backend in runs.values():
        backend["device"] = args.device
    table, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, backend) in enumerate(runs.items()):
            seconds, rows = _run(config, Path(tmp) / str(i), **backend)
            if reference is None:
                reference, base = rows, seconds
            if rows != reference:
                if not args.device.startswith("cuda"):
                    raise SystemExit(f"{name} measured something else than the first run")
                print(f"note: {name} differs from the first run (CUDA kernels are not "
                      "bit-deterministic across processes)")  # fmt: skip
            images = sum(int(r["n"]) for r in rows)
            table.append({"backend": name, "conditions": len(rows), "seconds": f"{seconds:.1f}",
                          "conditions_per_s": f"{len(rows) / seconds:.2f}",
                          "images_per_s": f"{images / seconds:.1f}",
                          "ratio_vs_local_1": f"{base / seconds:.2f}x"})  # fmt: skip
    print(format_table(table, list(table[0])))


if __name__ == "__main__":
    main()
