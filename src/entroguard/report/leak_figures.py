"""Figures of "What the bitstream leaks": recovery per point and probe, and the trade-off of
each protection between leakage, bytes and the victim's accuracy."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from entroguard.privacy.summary import POINT_TITLES, points_in, summarise

PROBE_STYLES = {
    "linear": ("#1f4e9c", "-", "o"),
    "mlp": ("#b2182b", (0, (4, 2)), "s"),
    "cnn": ("#1b7837", ":", "^"),
}
SIDE_STYLE = ("#5f6670", "D")
PROTECTION_MARKERS = {"none": "o", "keyed_noise": "s", "keyed_permutation": "^",
                      "capr_noise": "D"}  # fmt: skip
MODEL_COLOURS = ("#1f4e9c", "#b2182b", "#1b7837", "#6a3d9a", "#8c510a", "#01665e")
MAX_PANELS = 6


def recovery_figure(rows: list[dict], defense: str = "none") -> Figure | None:
    """One panel per model (at most ``MAX_PANELS``): top-1 of each probe at each point in
    data-flow order, the side channels as grey diamonds, chance and the model's own top-1 as
    horizontal lines."""
    rows = [r for r in rows if r["defense"] == defense]
    models = list(dict.fromkeys(r["model"] for r in rows))[:MAX_PANELS]
    if not models:
        return None
    cols = min(3, len(models))
    n_rows = -(-len(models) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.3 * n_rows + 0.4))
    axes = fig.subplots(n_rows, cols, squeeze=False, sharey=True).ravel()
    for ax, model in zip(axes, models, strict=False):
        _recovery_panel(ax, [r for r in rows if r["model"] == model], model)
    for ax in axes[len(models) :]:
        ax.set_visible(False)
    axes[0].legend(frameon=False, fontsize=8, loc="center left")
    fig.suptitle(f"label recovery per point (protection: {defense})", fontsize=10)
    fig.tight_layout()
    return fig


def _recovery_panel(ax, rows: list[dict], model: str) -> None:
    points = points_in(rows)
    x = {p: i for i, p in enumerate(points)}
    for probe, (colour, line, marker) in PROBE_STYLES.items():
        mine = [r for r in rows if r["probe"] == probe and r["point"] in x
                and r["point"] not in ("packet_length", "channel_bits")]  # fmt: skip
        if mine:
            ax.plot([x[r["point"]] for r in mine], [r["top1"] for r in mine], color=colour,
                    linestyle=line, marker=marker, label=probe)  # fmt: skip
    side = [r for r in rows if r["point"] in ("packet_length", "channel_bits")]
    if side:
        ax.plot([x[r["point"]] for r in side], [r["top1"] for r in side], linestyle="none",
                color=SIDE_STYLE[0], marker=SIDE_STYLE[1], label="side channel")  # fmt: skip
    for probe, style in (("chance", ":"), ("model", "--")):
        ref = [r["top1"] for r in rows if r["point"] == "reference" and r["probe"] == probe]
        if ref:
            ax.axhline(ref[0], color="#8c8c8c", linestyle=style, linewidth=1)
            ax.annotate(probe, (len(points) - 0.5, ref[0]), fontsize=7, color="#5f6670",
                        ha="right", va="bottom")  # fmt: skip
    ax.set_xticks(range(len(points)), [POINT_TITLES[p] for p in points], rotation=35,
                  ha="right", fontsize=8)  # fmt: skip
    ax.set_xlim(-0.4, len(points) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("attacker's top-1 on the victim's images")
    ax.set_title(model, fontsize=9)


def tradeoff_figure(rows: list[dict], points: tuple[str, ...] = ("latent", "g_s")) -> Figure | None:
    """One panel per point of ``points`` that was measured (the latent that travels; the
    tail's first features, what a curious server holds): for each protection of each model,
    the payload change against the unprotected model (%, x) and the best probe's recovery (y);
    labels give the victim's top-1 change. Colour: model; marker: protection."""
    lines = [ln for ln in summarise(rows) if ln["payload_change_pct"] is not None]
    points = tuple(p for p in points if any(p in ln["best"] for ln in lines))
    if len({ln["defense"] for ln in lines}) < 2 or not points:
        return None
    fig = Figure(figsize=(5.2 * len(points), 4.2))
    axes = fig.subplots(1, len(points), squeeze=False, sharey=True)[0]
    models = list(dict.fromkeys(ln["model"] for ln in lines))
    protections = list(dict.fromkeys(ln["defense"] for ln in lines))
    for ax, point in zip(axes, points, strict=True):
        _tradeoff_panel(ax, [ln for ln in lines if point in ln["best"]], point, models)
    axes[0].set_ylabel("best probe's top-1 (retrained against it)")
    handles = [Line2D([], [], color=MODEL_COLOURS[i % len(MODEL_COLOURS)], marker="o",
                      linestyle="none", label=m) for i, m in enumerate(models)]  # fmt: skip
    handles += [Line2D([], [], color="#5f6670", marker=PROTECTION_MARKERS.get(p, "o"),
                       linestyle="none", label=p) for p in protections]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), frameon=False,
               fontsize=8)  # fmt: skip
    fig.suptitle("privacy, bytes and accuracy per protection (attacker retrained against it)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout(rect=(0, 0.06 * (1 + (len(handles) - 1) // 4), 1, 1))
    return fig


def _tradeoff_panel(ax, lines: list[dict], point: str, models: list[str]) -> None:
    stacked: dict[tuple[float, float], int] = {}  # labels at one spot stack upwards
    for ln in lines:
        colour = MODEL_COLOURS[models.index(ln["model"]) % len(MODEL_COLOURS)]
        xy = (ln["payload_change_pct"], ln["best"][point])
        ax.scatter(*xy, color=colour, s=40, marker=PROTECTION_MARKERS.get(ln["defense"], "o"))
        if ln["defense"] != "none":
            spot = (round(xy[0] / 10, 1), round(xy[1], 2))
            offset = 9 * stacked.get(spot, 0)
            stacked[spot] = stacked.get(spot, 0) + 1
            ax.annotate(f"{ln['top1_change_pp']:+.1f} pp", xy, fontsize=7, color=colour,
                        xytext=(6, offset - 4), textcoords="offset points")  # fmt: skip
    chance = [ln["chance"] for ln in lines if ln.get("chance") is not None]
    if chance:
        ax.axhline(chance[0], color="#8c8c8c", linestyle=":", linewidth=1)
    changes = [ln["payload_change_pct"] for ln in lines]
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(min(-3.0, 2 * min(changes)), max(30.0, 3 * max(changes)))
    ax.set_ylim(0, 1)
    ax.set_xlabel("payload change against unprotected (%, symlog)")
    ax.set_title(POINT_TITLES[point], fontsize=9)
