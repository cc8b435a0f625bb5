"""The paper's Figure 5 for one model (images, rate maps, TV maps, band rates), and the
threats x DCT bands heat map of energy changes."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure


def save_analysis_figure(result: dict, path: str | Path, title: str, rows: int = 6) -> Path:
    """Write a PNG: ``rows`` images with their rate and TV maps (each column on one colour
    scale, with its colour bar), then the band rates."""
    maps = result["maps"]
    rows = min(rows, maps["images"].shape[0])
    fig = Figure(figsize=(8.2, 2.0 * rows + 2.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows + 1, 3, height_ratios=[1] * rows + [1.3])
    titles = ("image", "rate map", "total-variation map")
    columns = (maps["images"][:rows].permute(0, 2, 3, 1), maps["rate"][:rows], maps["tv"][:rows])
    for c, column in enumerate(columns):
        column = column.cpu().numpy()
        norm = None if c == 0 else mpl.colors.Normalize(0.0, float(column.max()) or 1.0)
        axes = [fig.add_subplot(grid[r, c]) for r in range(rows)]
        for r, ax in enumerate(axes):
            image = ax.imshow(column[r], cmap=None if c == 0 else "magma", norm=norm)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0].set_title(titles[c], fontsize=9)
        if c:
            bar = fig.colorbar(image, ax=axes, shrink=0.6, pad=0.02)
            bar.set_label("bits per pixel" if c == 1 else "local total variation", fontsize=8)
            bar.ax.tick_params(labelsize=7)
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
    path = Path(path)
    fig.savefig(path)
    return path


def save_defended_maps_figure(maps: dict, path: str | Path, title: str, rows: int = 4) -> Path:
    """Write a PNG: ``rows`` images clean, attacked and defended, each beside its rate map,
    all rate maps on one colour scale with one colour bar (bits per pixel); each map is
    labelled with the image's real payload. ``maps`` is
    :func:`~entroguard.analysis.defended_maps.defended_rate_maps`'s result."""
    conditions = maps["conditions"]
    rows = min(rows, len(conditions["clean"]["payload_bytes"]))
    top = max(float(c["rate"][:rows].max()) for c in conditions.values()) or 1.0
    norm = mpl.colors.Normalize(0.0, top)
    fig = Figure(figsize=(10.0, 1.75 * rows + 1.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 2 * len(conditions), squeeze=False)
    for j, (name, cond) in enumerate(conditions.items()):
        mean = sum(cond["payload_bytes"]) / len(cond["payload_bytes"])
        axes[0, 2 * j].set_title(f"{name} image", fontsize=9)
        axes[0, 2 * j + 1].set_title(f"{name} rate map\n(mean {mean:.1f} B)", fontsize=9)
        for r in range(rows):
            axes[r, 2 * j].imshow(cond["images"][r].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            image = axes[r, 2 * j + 1].imshow(cond["rate"][r].cpu().numpy(), cmap="magma",
                                               norm=norm)  # fmt: skip
            axes[r, 2 * j + 1].set_xlabel(f"{cond['payload_bytes'][r]} B", fontsize=8, labelpad=2)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(image, ax=axes, shrink=0.7, pad=0.015)
    bar.set_label("bits per pixel (one scale for every map)", fontsize=8)
    eps = round(maps["eps"] * 255, 3)
    fig.suptitle(f"{title}: rate_pgd \u03b5 {eps:g}/255, then object_tv (deployed); payloads "
                 "from the rANS coder", fontsize=10)  # fmt: skip
    path = Path(path)
    fig.savefig(path)
    return path


def _cell_text(v: float) -> str:
    if abs(v) >= 9.5:
        return f"{v:+.0f}"
    return f"{v:+.1f}" if abs(v) >= 0.05 else "0"


def save_bands_figure(bands: dict, path: str | Path, title: str) -> Path:
    """Write a PNG: a heat map of threats x DCT bands of the mean energy change (in % of the
    clean image's AC energy), rows sorted by payload change, with the payload change (%) of
    each threat as bars on the right. ``bands`` is :func:`~entroguard.analysis.threat_bands.
    threat_bands`'s result."""
    rows = sorted(bands["threats"], key=lambda r: r["rate_change_pct"], reverse=True)
    grid = np.array([r["energy_change_pct"] for r in rows], dtype=float).reshape(len(rows), -1)
    rates = np.array([r["rate_change_pct"] for r in rows], dtype=float)
    fig = Figure(figsize=(10.0, 0.3 * len(rows) + 2.4), dpi=100)
    FigureCanvasAgg(fig)
    layout = fig.add_gridspec(2, 2, width_ratios=[3.2, 1], height_ratios=[20, 1], hspace=0.25)
    heat_ax = fig.add_subplot(layout[0, 0])
    bar_ax = fig.add_subplot(layout[0, 1], sharey=heat_ax)
    lim = max(1.0, float(np.abs(grid).max(initial=0.0)))
    norm = SymLogNorm(linthresh=1.0, linscale=0.5, vmin=-lim, vmax=lim, base=10)
    cmap = mpl.colormaps["RdBu_r"]
    image = heat_ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            rgba = cmap(norm(grid[i, j]))
            dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
            heat_ax.text(j, i, _cell_text(grid[i, j]), ha="center", va="center", fontsize=7,
                         color="white" if dark else "#222222")  # fmt: skip
    heat_ax.set_xticks(range(grid.shape[1]), bands["labels"], rotation=35, ha="right")
    heat_ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
    heat_ax.set_xlabel("DCT band (share of frequencies, lowest radius first)")
    heat_ax.set_title("energy change per band (% of the clean AC energy)", fontsize=9)
    ticks = [t for t in (-1000, -100, -10, -1, 0, 1, 10, 100, 1000) if abs(t) <= lim]
    bar = fig.colorbar(image, cax=fig.add_subplot(layout[1, 0]), orientation="horizontal")
    bar.set_ticks(ticks, labels=[f"{t:+g}" if t else "0" for t in ticks])
    bar.ax.tick_params(labelsize=8)
    colours = ["#c0504d" if v > 0 else "#3b6ea5" for v in rates]
    bar_ax.barh(range(len(rows)), rates, color=colours)
    for i, v in enumerate(rates):
        bar_ax.text(v, i, f" {_cell_text(v)} ", ha="left" if v >= 0 else "right", va="center",
                    fontsize=7)  # fmt: skip
    bar_ax.axvline(0, color="black", linewidth=0.8)
    bar_ax.margins(x=0.25)
    bar_ax.set_xlabel("payload change vs clean (%)")
    bar_ax.set_title("real payload (rANS bytes)", fontsize=9)
    bar_ax.tick_params(axis="y", length=0, labelleft=False)
    rho = bands.get("spearman_vs_rate", {})
    extra = "".join(
        f"; Spearman({name}, payload) = {rho[key]:.2f}"
        for key, name in (("dc_change_pct", "DC"), ("high_gain_pct", "upper-half gain"))
        if rho.get(key) is not None
    )
    fig.suptitle(f"{title}: {bands['n']} images{extra}", fontsize=10)
    fig.subplots_adjust(left=0.17, right=0.97, top=0.93, bottom=0.07, wspace=0.05)
    path = Path(path)
    fig.savefig(path)
    return path
