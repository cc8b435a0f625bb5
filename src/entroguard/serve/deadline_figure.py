"""The deadline run as a figure: per request, the adaptive policy's total time and chosen rate
against the deadline; per policy, deadline hits and bytes."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def deadline_figure(rows: list[dict], deadline_ms: float) -> Figure:
    """``rows``: :func:`entroguard.serve.deadline.compare_on_trace`'s, adaptive first."""
    fig = Figure(figsize=(11, 3.6))
    ax_time, ax_hits = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    for row in rows:
        totals = [r["total_ms"] for r in row["records"]]
        style = {"linewidth": 2.0, "color": "#1f4e9c"} if row["policy"] == "adaptive" else \
            {"linewidth": 0.8, "alpha": 0.6}  # fmt: skip
        ax_time.plot(range(len(totals)), totals, label=row["policy"], **style)
    ax_time.axhline(deadline_ms, color="#b2182b", linestyle="--", linewidth=1, label="deadline")
    ax_time.set_yscale("log")
    ax_time.set_xlabel("request")
    ax_time.set_ylabel("device + network time (ms)")
    ax_time.legend(fontsize=7, frameon=False, ncol=2)
    rates = ax_time.twinx()
    chosen = [int(r["setting"].split(",r")[1]) for r in rows[0]["records"]]
    rates.step(range(len(chosen)), chosen, where="mid", color="#8c8c8c", linewidth=0.8)
    rates.set_ylabel("adaptive: rate setting", color="#5f6670")
    rates.set_yticks(sorted(set(chosen)))
    names = [r["policy"] for r in rows]
    ax_hits.barh(names, [100 * r["deadline_hits"] for r in rows], color="#1f4e9c")
    for i, r in enumerate(rows):
        ax_hits.text(1, i, f"{r['packet_bytes']:.0f} B", va="center", fontsize=7, color="white")
    ax_hits.set_xlabel("deadline hits (%)")
    ax_hits.set_xlim(0, 100)
    ax_hits.invert_yaxis()
    fig.tight_layout()
    return fig


def write_deadline_figure(rows: list[dict], deadline_ms: float, path: str | Path) -> Path:
    """Write the figure as a PNG to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = deadline_figure(rows, deadline_ms)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path
