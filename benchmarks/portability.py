"""Would a packet decode on another machine? Decoder choices under other float kernels.

For every mshp zoo model, the test set's hyper-latent symbols are computed once (default
kernels); the decoder's CDF indexes and means are then recomputed under each kernel variant of
:mod:`entroguard.codec.kernels` (oneDNN off, float64, channels-last, one thread, CUDA where
present), once with packet format 1's float ``h_s`` and once with the integer hyper-synthesis
that format 2 codes with. Prints, per model and variant, how many indexes (a different CDF:
the rANS decoder desynchronises) and means (a different decoded latent) differ from the default
kernels, and the totals.

    python benchmarks/portability.py [--n 10000] [--models NAME,...] [--json]
"""

from __future__ import annotations

import argparse
import json

import torch
from tqdm.auto import tqdm

from entroguard.codec.kernels import (
    available_variants,
    coding_params_under,
    count_differences,
    hyper_symbols,
)
from entroguard.data import load_dataset
from entroguard.report.table import format_table
from entroguard.train.checkpoint import load_checkpoint
from entroguard.train.zoo import list_zoo


def model_rows(path: str, name: str, images: torch.Tensor, variants: list[str]) -> list[dict]:
    """One row per variant: index and mean differences, float ``h_s`` and integer ``h_s``."""
    model = load_checkpoint(path)
    with torch.no_grad():
        y = torch.cat([model.analyze(x) for x in images.split(1000)])
    z, hw = hyper_symbols(model.codec, y), tuple(y.shape[-2:])
    reference = {
        a: coding_params_under(model.codec, z, hw, arithmetic=a) for a in ("float", "integer")
    }
    rows = []
    for variant in variants:
        row = {"model": name, "variant": variant}
        for arithmetic, ref in reference.items():
            diff = count_differences(ref, coding_params_under(model.codec, z, hw, variant,
                                                              arithmetic=arithmetic))  # fmt: skip
            row[f"{arithmetic}_indexes"] = diff["indexes"]
            row[f"{arithmetic}_means"] = diff["means"]
            row["elements"] = diff["elements"]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="test images per model")
    parser.add_argument("--models", default="", help="comma-separated zoo names (default: mshp)")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args()
    zoo = [r for r in list_zoo() if r["prior"] == "mshp"]
    if args.models:
        zoo = [r for r in zoo if r["name"] in set(args.models.split(","))]
    images = load_dataset("fashion-mnist", "test").to_float(slice(0, args.n))
    variants = available_variants()[1:]
    rows = [row for r in tqdm(zoo, desc="models") for row in
            model_rows(r["path"], r["name"], images, variants)]  # fmt: skip
    totals = {"model": "all", "variant": "all"}
    for key in ("float_indexes", "float_means", "integer_indexes", "integer_means"):
        totals[key] = sum(r[key] for r in rows)
    totals["elements"] = sum(r["elements"] for r in rows) // max(len(variants), 1)
    if args.json:
        print(json.dumps(rows + [totals], indent=1))
        return
    print(f"{args.n} test images per model; differences from the default kernels")
    print(format_table(rows + [totals], list(totals)))


if __name__ == "__main__":
    main()
