"""The paper's Figure 5 for one model: images, their rate maps and TV maps, and band rates."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def save_analysis_figure(result: dict, path: str | Path, title: str, rows: int = 6) -> Path:
    """Write a PNG: ``rows`` images with their rate and TV maps, then the band rates."""
    maps = result["maps"]
    rows = min(rows, maps["images"].shape[0])
    fig = Figure(figsize=(7.5, 2.0 * rows + 2.6), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows + 1, 3, height_ratios=[1] * rows + [1.3])
    titles = ("image", "rate map (bits per latent position)", "total-variation map")
    for r in range(rows):
        panels = (
            maps["images"][r].permute(1, 2, 0).cpu().numpy(),
            maps["rate"][r].cpu().numpy(),
            maps["tv"][r].cpu().numpy(),
        )
        for c, panel in enumerate(panels):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(panel, cmap=None if c == 0 else "magma")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
    ax = fig.add_subplot(grid[rows, :])
    bands = result["bands"]
    labels = [f"{b['keep']} {b['fraction']:g}" for b in bands]
    values = [b["rate_change_pct"] for b in bands]
    ax.bar(labels, values, color=["#3b6ea5" if b["keep"] == "low" else "#c0504d" for b in bands])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("payload change vs unfiltered (%)")
    ax.set_xlabel("DCT band kept (fraction of frequencies)")
    ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(
        f"{title}: Spearman(rate, TV) = {result['spearman_mean']:.2f} "
        f"+/- {result['spearman_std']:.2f} over {result['n']} images",
        fontsize=10,
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
