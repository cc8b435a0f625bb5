"""The plan as a figure: latency and device energy of every option over uplink bandwidth."""

from __future__ import annotations

from matplotlib.figure import Figure

OPTION_STYLES = {
    "local": ("#5f6670", "-", "o"),
    "offload_png": ("#b2182b", (0, (4, 2)), "s"),
    "offload_jpeg": ("#ef8a62", (0, (4, 2)), "^"),
    "split": ("#1f4e9c", "-", "D"),
}


def plan_figure(record: dict) -> Figure:
    """Two panels over bandwidth (Mbit/s, log): end-to-end latency (ms) and device energy (mJ),
    one line per option of ``record`` (:func:`entroguard.plan.record.plan_record`)."""
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    for ax, metric, label in ((axes[0], "latency_ms", "end-to-end latency (ms)"),
                              (axes[1], "device_energy_mj", "device energy (mJ)")):  # fmt: skip
        for option, (colour, line, marker) in OPTION_STYLES.items():
            rows = [r for r in record["rows"] if r["option"] == option]
            if not rows:
                continue
            ax.plot([r["bandwidth_mbps"] for r in rows], [r[metric] for r in rows],
                    color=colour, linestyle=line, marker=marker, markersize=4,
                    label=option.replace("_", " "))  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("uplink bandwidth (Mbit/s)")
        ax.set_ylabel(label)
        ax.grid(True, which="major", alpha=0.3)
    for crossing in record.get("crossovers", []):
        axes[0].axvline(crossing["bandwidth_mbps"], color="#8c8c8c", linewidth=0.8, alpha=0.7)
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle(f"{record['model']}: where splitting pays off", fontsize=10)
    fig.tight_layout()
    return fig
