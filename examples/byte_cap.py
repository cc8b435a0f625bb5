"""What the head's hard byte cap costs and what it holds, over the zoo (docs/defences.md).

    python examples/byte_cap.py [--clean 2000] [--attacked 128] [--quantile 0.99]

For each fp and mshp zoo model, with the budget at its clean payload quantile: on clean test
images, how often the cap triggers and what it costs in top-1; under ``rate_pgd`` eps 8/255
(paper settings: 20 steps, 16 noisy copies), the payload and top-1 without and with the cap;
and the largest payload seen, which must never exceed the budget. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math

import torch

import entroguard
from entroguard.data import load_dataset
from entroguard.measure import measure_batch
from entroguard.threats.attacks.rate_pgd import RatePGD
from entroguard.train.zoo import list_zoo


def _measure(model, images, labels, budget: int | None) -> dict:
    """Mean payload, max payload, top-1 and capped share of ``images``, through real coding."""
    model.set_byte_cap(budget)
    payload, top1, capped = [], [], 0
    for x, y in zip(images.split(500), labels.split(500), strict=True):
        m = measure_batch(model, x, y)
        payload += m.payload_bytes.tolist()
        top1 += m.correct.tolist()
        if budget is not None:
            capped += sum(1 for s in model.encode(model.analyze(x)).capped if s)
    model.set_byte_cap(None)
    n = len(payload)
    return {"mean": sum(payload) / n, "max": max(payload), "top1": 100 * sum(top1) / n,
            "capped": 100 * capped / n}  # fmt: skip


def _row(name: str, clean, attacked, quantile: str) -> str:
    model = entroguard.load(name)
    budget = math.ceil(model.metadata["clean_payload"]["quantiles"][quantile])
    free_c, cap_c = _measure(model, *clean, None), _measure(model, *clean, budget)
    x_adv = RatePGD(eps=8 / 255)(model, attacked[0], generator=torch.Generator().manual_seed(0))
    free_a, cap_a = (_measure(model, x_adv, attacked[1], b) for b in (None, budget))
    base, top = free_c["mean"], free_c["top1"]
    cells = [
        name, str(budget), f"{cap_c['capped']:.1f} %", f"{cap_c['top1'] - top:+.2f}",
        f"{100 * (free_a['mean'] / base - 1):+.1f} %", f"{100 * (cap_a['mean'] / base - 1):+.1f} %",
        f"{cap_a['capped']:.0f} %", f"{free_a['top1'] - top:+.1f}", f"{cap_a['top1'] - top:+.1f}",
        f"{free_a['max']} / {cap_a['max']}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", type=int, default=2000, help="clean test images per model")
    parser.add_argument("--attacked", type=int, default=128, help="attacked images per model")
    parser.add_argument("--quantile", default="0.99", help="clean payload quantile budget")
    args = parser.parse_args()
    test = load_dataset("fashion-mnist", "test")
    clean = (test.to_float(slice(0, args.clean)), test.labels[: args.clean])
    attacked = (test.to_float(slice(0, args.attacked)), test.labels[: args.attacked])
    print(f"budget: clean payload q{args.quantile}; {args.clean} clean and {args.attacked} "
          "attacked (rate_pgd eps 8/255, 20 steps, 16 copies) test images per model\n")  # fmt: skip
    print(
        "| model | budget B | capped, clean | top-1 change, clean (pp) | payload, attacked "
        "| payload, attacked + cap | capped, attacked | top-1, attacked (pp) "
        "| top-1, attacked + cap (pp) | max payload attacked / + cap (B) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in list_zoo():
        if row["recipe"] == "entropic_student":
            print(_row(row["name"], clean, attacked, args.quantile), flush=True)


if __name__ == "__main__":
    main()
