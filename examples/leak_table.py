"""Markdown tables of a leak campaign (``examples/leak.yaml``) for the documentation.

    python examples/leak_table.py runs/leak/leak.csv [docs/img/leak-shadow-size.png]

Prints: recovery per point (best probe) with the side channels, unprotected, one row per
model; every protection of every model with its payload and top-1 change; each protection
summarised over the models; and recovery from the latent against the shadow-set size.
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

from entroguard.privacy.summary import POINT_TITLES, points_in, summarise

NUMERIC = ("top1", "val_top1", "payload_bytes", "agreement", "beta", "seconds")
INTEGER = ("epochs", "n_shadow", "n_test")


def read_rows(path: Path) -> list[dict]:
    """``leak.csv`` rows with numbers as numbers (empty cells as None)."""
    rows = []
    with path.open() as f:
        for row in csv.DictReader(f):
            for k in NUMERIC + INTEGER:
                value = row.get(k)
                row[k] = None if value in (None, "") else (int if k in INTEGER else float)(value)
            rows.append(row)
    return rows


def fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "" if value is None else pattern.format(value)


def markdown(headers: list[str], body: list[list[str]]) -> str:
    align = ["---"] + ["---:"] * (len(headers) - 1)
    lines = [headers, align, *body]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def recovery_table(lines: list[dict], points: list[str]) -> str:
    body = [[ln["model"], fmt(ln.get("model_top1")), *(fmt(ln["best"].get(p)) for p in points)]
            for ln in lines if ln["defense"] == "none"]  # fmt: skip
    return markdown(["model", "model top-1", *(POINT_TITLES[p] for p in points)], body)


def protection_table(lines: list[dict], points: list[str]) -> str:
    body = [[ln["model"], ln["defense"], *(fmt(ln["best"].get(p)) for p in points),
             fmt(ln.get("payload_bytes"), "{:.1f}"), fmt(ln["payload_change_pct"], "{:+.1f} %"),
             fmt(ln["top1_change_pp"], "{:+.2f} pp")]
            for ln in lines]  # fmt: skip
    headers = ["model", "protection", *(POINT_TITLES[p] for p in points), "payload B",
               "payload change", "victim top-1 change"]  # fmt: skip
    return markdown(headers, body)


def summary_table(lines: list[dict], points: list[str]) -> str:
    body = []
    for defense in dict.fromkeys(ln["defense"] for ln in lines):
        mine = [ln for ln in lines if ln["defense"] == defense]
        cells = [defense, str(len(mine))]
        for p in points:
            values = [ln["best"][p] for ln in mine if p in ln["best"]]
            cells.append(f"{statistics.mean(values):.3f}" if values else "")
        for key, pattern in (("payload_change_pct", "{:+.1f} %"), ("top1_change_pp", "{:+.2f} pp")):
            values = [ln[key] for ln in mine if ln[key] is not None]
            cells.append(f"{pattern.format(min(values))} .. {pattern.format(max(values))}"
                         if values else "")  # fmt: skip
        body.append(cells)
    headers = ["protection", "models", *(f"mean {POINT_TITLES[p]}" for p in points),
               "payload change (range)", "top-1 change (range)"]  # fmt: skip
    return markdown(headers, body)


def growth_table(rows: list[dict]) -> str:
    latent = [r for r in rows if r["point"] == "latent" and r["defense"] == "none"]
    by_model: dict[str, dict[int, float]] = {}
    for r in latent:
        best = by_model.setdefault(r["model"], {})
        best[r["n_shadow"]] = max(best.get(r["n_shadow"], 0.0), r["top1"])
    body = [[model, str(n), f"{top1:.3f}"] for model, sizes in by_model.items()
            if len(sizes) > 1 for n, top1 in sorted(sizes.items())]  # fmt: skip
    return markdown(["model", "shadow images", "best probe, latent"], body)


def growth_figure(rows: list[dict], path: Path) -> None:
    """Best probe's recovery from the latent against the shadow-set size (log x), as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    latent = [r for r in rows if r["point"] == "latent" and r["defense"] == "none"]
    models = {r["model"] for r in latent if len({x["n_shadow"] for x in latent
                                                   if x["model"] == r["model"]}) > 1}  # fmt: skip
    fig = Figure(figsize=(5.5, 3.4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for model in sorted(models):
        best: dict[int, float] = {}
        for r in latent:
            if r["model"] == model:
                best[r["n_shadow"]] = max(best.get(r["n_shadow"], 0.0), r["top1"])
        sizes = sorted(best)
        ax.plot(sizes, [best[n] for n in sizes], marker="o", label=model)
        own = [r["top1"] for r in rows if r["model"] == model and r["probe"] == "model"]
        if own:
            ax.axhline(own[0], color="#8c8c8c", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("attacker's labelled shadow images")
    ax.set_ylabel("best probe's top-1 from the latent")
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(path: str) -> None:
    rows = read_rows(Path(path))
    full = max(r["n_shadow"] for r in rows)
    main_rows = [r for r in rows if r["n_shadow"] == full]
    lines, points = summarise(main_rows), points_in(main_rows)
    for title, text in (
        ("Recovery per point, unprotected (best probe)", recovery_table(lines, points)),
        ("Every protection", protection_table(lines, points)),
        ("Each protection over the models", summary_table(lines, points)),
        ("Recovery against the shadow-set size", growth_table(rows)),
    ):
        print(f"### {title}\n\n{text}\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/leak/leak.csv")
    if len(sys.argv) > 2:  # a second argument: where to draw the shadow-size figure
        growth_figure(read_rows(Path(sys.argv[1])), Path(sys.argv[2]))
