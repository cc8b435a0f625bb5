"""Sweep object_tv's hyper-parameters over zoo models: rate and accuracy, clean and attacked.

For each model: ``rate_pgd`` at eps 8/255 (paper settings) on the first ``--n`` test images,
then for each setting the real payload and top-1 of the defended clean and defended attacked
images, against the clean payload and top-1 without defence. Prints one line per setting (means
over models, and per prior) and writes every number to ``--out`` as JSON. The demo's deployed
object_tv (``entroguard.campaign.demo.OBJECT_TV_DEPLOYED``) was chosen with this script.

Usage::

    python scripts/sweep_object_tv.py --out sweep.json               # the grid below, all 24
    python scripts/sweep_object_tv.py --models '*-beta0.01' --n 32
    python scripts/sweep_object_tv.py --wide                           # 30 settings
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from entroguard.campaign.models import resolve_models
from entroguard.data import load_dataset
from entroguard.defenses import build_defense
from entroguard.measure import measure_batch
from entroguard.threats.threat import build_threat_attack

#: The settings compared: the class defaults (the paper's), then sharper TV (smaller tv_eps,
#: with the largest stable step scaled down with it) and stronger fidelity.
GRID = [
    {},
    {"fidelity_weight": 0.5},
    {"tv_eps": 0.05, "step_size": 0.1},
    {"tv_eps": 0.02, "step_size": 0.04},
    {"tv_eps": 0.02, "step_size": 0.04, "fidelity_weight": 0.5},
    {"tv_eps": 0.02, "step_size": 0.04, "steps": 200, "fidelity_weight": 0.5},
]

#: ``--wide`` adds these: fidelity, TV weight and min weight at the paper's TV smoothing (0.1;
#: TV weight 0.2 would need a smaller step to be stable).
WIDE_GRID = [
    {"fidelity_weight": f, "tv_weight": t, "min_weight": m}
    for f in (0.05, 0.1, 0.15, 0.25)
    for t in (0.1, 0.15)
    for m in (0.0, 0.02, 0.05)
]


def sweep_model(model, images, labels, grid: list[dict], seed: int) -> dict:
    """Payload (bytes/image) and top-1 (fraction) of one model: clean, attacked, and both
    after each setting of ``grid``."""
    attack = build_threat_attack("rate_pgd", 8, {})
    adv = attack(model, images, labels, torch.Generator().manual_seed(seed))
    clean, attacked = measure_batch(model, images, labels), measure_batch(model, adv, labels)
    out = {"clean": _summary(clean), "attacked": _summary(attacked), "defended": []}
    for params in grid:
        defense = build_defense("object_tv", **params)
        out["defended"].append(
            {
                "params": params,
                "clean": _summary(measure_batch(model, defense(model, images), labels)),
                "attacked": _summary(measure_batch(model, defense(model, adv), labels)),
            }
        )
    return out


def _summary(m) -> dict:
    return {"payload_bytes": float(m.payload_bytes.mean()), "top1": float(m.correct.mean())}


def changes(record: dict, k: int) -> tuple[float, float, float, float]:
    """(rate % attacked, top-1 pp attacked, rate % clean, top-1 pp clean) after setting ``k``,
    each against the clean images without defence."""
    base = record["clean"]
    d = record["defended"][k]
    rate = lambda s: 100.0 * (s["payload_bytes"] / base["payload_bytes"] - 1.0)  # noqa: E731
    top1 = lambda s: 100.0 * (s["top1"] - base["top1"])  # noqa: E731
    return rate(d["attacked"]), top1(d["attacked"]), rate(d["clean"]), top1(d["clean"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="*", help="shell-style pattern over zoo names")
    parser.add_argument("--n", type=int, default=64, help="test images per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("object_tv_sweep.json"))
    parser.add_argument("--wide", action="store_true", help="also the 24 settings of WIDE_GRID")
    args = parser.parse_args(argv)
    grid = GRID + WIDE_GRID if args.wide else GRID
    refs = [r for r in resolve_models("zoo") if fnmatch.fnmatchcase(r.name, args.models)]
    data = load_dataset("fashion-mnist", "test")
    images, labels = data.to_float(slice(0, args.n)), data.labels[: args.n]
    records = {}
    for ref in tqdm(refs, unit="model", desc="sweep"):
        model = ref.load()
        gc.freeze()  # the coder tables are large Python lists (see campaign.measurer)
        records[ref.name] = sweep_model(model, images, labels, grid, args.seed)
        args.out.write_text(json.dumps(records, indent=1))
    print(f"{len(records)} models, {args.n} images, rate_pgd eps 8/255; changes against clean")
    print("setting | attacked: rate, top-1 | clean: rate, top-1 | attacked fp / mshp")
    for k, params in enumerate(grid):
        cols = np.array([changes(r, k) for r in records.values()])
        by_prior = {
            p: np.array([changes(r, k) for n, r in records.items() if f"-{p}-" in n])
            for p in ("fp", "mshp")
        }
        prior_text = " / ".join(
            f"{v[:, 0].mean():+.1f} % {v[:, 1].mean():+.1f} pp" for v in by_prior.values() if len(v)
        )
        m = cols.mean(axis=0)
        print(f"{params or 'defaults'} | {m[0]:+.1f} %, {m[1]:+.1f} pp | {m[2]:+.1f} %, "
              f"{m[3]:+.1f} pp | {prior_text}")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
