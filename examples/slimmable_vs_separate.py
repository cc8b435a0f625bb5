"""Accuracy against payload bytes: every setting of the slimmable heads next to the separately
trained zoo models of the same architecture and prior, on the same test images.

The slimmable settings' figures are the checkpoints' own measurements (real coding, the first
``SETTING_TEST_IMAGES`` test images); the separate models are measured here on the same images.
Prints a Markdown table (one row per slimmable rate setting at every member count, with the
separate model of that rate's beta) and writes a figure.

    python examples/slimmable_vs_separate.py [--out docs/img/slimmable-vs-separate.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matplotlib.figure import Figure

from entroguard.data import load_dataset
from entroguard.measure import measure
from entroguard.train.checkpoint import load_checkpoint, read_metadata
from entroguard.train.recipes.runs import SETTING_TEST_IMAGES
from entroguard.train.zoo import list_zoo


def separate_rows(zoo: dict, arch: str, prior: str, betas, test_set) -> dict[float, dict]:
    """Top-1 and payload of the separate zoo model at each beta, measured on ``test_set``."""
    out = {}
    for beta in betas:
        name = f"{arch}-{prior}-beta{beta:g}"
        if name in zoo:
            model = load_checkpoint(zoo[name]["path"])
            out[beta] = measure(model, test_set.batches(500), total=len(test_set)).summary()
    return out


def comparison(test_set) -> list[dict]:
    """One row per slimmable model and setting, with its separate counterpart."""
    zoo = {row["name"]: row for row in list_zoo()}
    rows = []
    for name, row in zoo.items():
        if row["recipe"] != "slimmable":
            continue
        meta = read_metadata(row["path"])
        betas = meta["train"]["config"]["betas"]
        separate = separate_rows(zoo, row["arch"], row["prior"], betas, test_set)
        for s in meta["settings"]:
            beta = betas[s["rate"]]
            other = separate.get(beta, {})
            rows.append({"model": name, "arch": row["arch"], "prior": row["prior"],
                         "members": s["members"], "rate": s["rate"], "beta": beta,
                         "top1": s["top1"], "payload_bytes": s["payload_bytes"],
                         "separate_top1": other.get("top1"),
                         "separate_payload_bytes": other.get("payload_bytes")})  # fmt: skip
    return rows


def figure(rows: list[dict]) -> Figure:
    """Top-1 against payload bytes per architecture and prior: the slimmable settings (one line
    per member count) and the separate models (black squares)."""
    groups = sorted({(r["arch"], r["prior"]) for r in rows})
    fig = Figure(figsize=(4 * len(groups) / 2 + 1, 7))
    axes = fig.subplots(2, (len(groups) + 1) // 2, squeeze=False).ravel()
    for ax, (arch, prior) in zip(axes, groups, strict=False):
        mine = [r for r in rows if (r["arch"], r["prior"]) == (arch, prior)]
        for members in sorted({r["members"] for r in mine}):
            line = sorted((r for r in mine if r["members"] == members), key=lambda r: r["rate"])
            ax.plot([r["payload_bytes"] for r in line], [100 * r["top1"] for r in line],
                    marker="o", markersize=3, label=f"slimmable, {members} member(s)")  # fmt: skip
        sep = sorted({(r["separate_payload_bytes"], r["separate_top1"]) for r in mine
                      if r["separate_top1"] is not None})  # fmt: skip
        ax.plot([b for b, _ in sep], [100 * t for _, t in sep], "ks--", label="separate models")
        ax.set_xscale("log")
        ax.set_title(f"{arch} / {prior}", fontsize=9)
        ax.set_xlabel("payload bytes per image")
        ax.set_ylabel("top-1 (%)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/slimmable-vs-separate.png"))
    args = parser.parse_args()
    test_set = load_dataset("fashion-mnist", "test").subset(SETTING_TEST_IMAGES)
    rows = comparison(test_set)
    print("| model | members | rate (beta) | top-1 | payload B | separate top-1 | separate B |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        sep_top1, sep_bytes = r["separate_top1"], r["separate_payload_bytes"]
        sep = "- | -" if sep_top1 is None else f"{100 * sep_top1:.2f} | {sep_bytes:.1f}"
        print(f"| {r['model']} | {r['members']} | {r['rate']} ({r['beta']:g}) | "
              f"{100 * r['top1']:.2f} | {r['payload_bytes']:.1f} | {sep} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure(rows).savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
