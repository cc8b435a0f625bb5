"""The report's figures, drawn with matplotlib's object API (no pyplot, no global state).

Each ``*_figure`` function builds and returns a :class:`matplotlib.figure.Figure` (or None when
there is nothing to draw); :func:`render` builds one inside the report's style and returns it
as an embeddable PNG. Matplotlib's rc settings are only changed inside ``rc_context`` while a
figure is built and saved, so importing or using this module leaves a user's settings alone.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    FuncFormatter,
    NullFormatter,
    NullLocator,
    SymmetricalLogLocator,
)

from entroguard.report import intervals as I
from entroguard.report.data import (
    ATTACK_TITLES,
    CORRUPTION_FAMILIES,
    PRIOR_TITLES,
    Group,
    Results,
    corruption_family,
    family_label,
)

DPI = 100
STYLE = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "axes.edgecolor": "#555555",
    "axes.titlecolor": "#222222",
    "lines.linewidth": 1.6,
    "lines.markersize": 4,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.facecolor": "white",
}
#: One hue per architecture: (dark shade for FP, light shade for MSHP).
ARCH_SHADES = (
    ("#1f4e9c", "#5b9be0"),
    ("#b2182b", "#ef8a62"),
    ("#1b7837", "#6cc070"),
    ("#6a3d9a", "#b08fd8"),
    ("#8c510a", "#d9a44f"),
    ("#01665e", "#4fb3a9"),
)
PRIOR_LINES = (("-", "o"), ((0, (4, 2)), "s"), (":", "^"))
#: Diverging colour maps: red always means "worse" (more bytes, lower accuracy).
RATE_CMAP = "RdBu_r"
TOP1_CMAP = "RdBu"
#: Colours of condition kinds in the distribution figure.
KIND_COLOURS = {
    "clean": "#8c8c8c",
    "attack": "#c0392b",
    "noise": "#e08a1e",
    "blur": "#2e6fb7",
}
METRIC_LABELS = {
    "rate_change_pct": "rate change (%)",
    "top1_change_pp": "top-1 change (pp)",
}


@dataclass(frozen=True)
class Image:
    """A rendered figure: a ``data:`` URI and its size in pixels."""

    uri: str
    width: int
    height: int


def render(builder: Callable[..., Figure | None], *args, **kwargs) -> Image | None:
    """Build a figure in the report's style and encode it as a PNG ``data:`` URI."""
    with mpl.rc_context(STYLE):
        fig = builder(*args, **kwargs)
        if fig is None:
            return None
        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    width, height = (int(round(v)) for v in fig.get_size_inches() * DPI)
    return Image(
        "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), width, height
    )


def group_styles(groups: Sequence[Group]) -> dict[Group, dict]:
    """Line colour, style and marker per (arch, prior): hue by arch, shade and dash by prior."""
    archs = list(dict.fromkeys(g.arch for g in groups))
    known = list(PRIOR_TITLES)
    priors = sorted(
        dict.fromkeys(g.prior for g in groups),
        key=lambda p: known.index(p) if p in known else len(known),
    )
    out = {}
    for g in groups:
        shades = ARCH_SHADES[archs.index(g.arch) % len(ARCH_SHADES)]
        k = priors.index(g.prior)
        ls, marker = PRIOR_LINES[k % len(PRIOR_LINES)]
        out[g] = {"color": shades[min(k, 1)], "linestyle": ls, "marker": marker}
    return out


def _legend_handles(groups: Sequence[Group], styles: dict[Group, dict]) -> list[Line2D]:
    return [Line2D([], [], label=g.label, **styles[g]) for g in groups]


def signed_text(value: float, fmt: str = "{:+g}") -> str:
    """``+12``, ``−3``; a value that rounds to zero is written without a sign."""
    text = fmt.format(round(value, 6))
    if text.lstrip("+-").strip("0.") == "":
        return text.lstrip("+-")
    return text.replace("-", "\u2212")


def _signed(fmt: str = "{:+g}") -> FuncFormatter:
    return FuncFormatter(lambda v, _: signed_text(v, fmt))


def _log_label(v: float) -> str:
    """Label 1, 2 and 5 times a power of ten on a log axis, nothing else."""
    if v <= 0:
        return ""
    mantissa = v / 10 ** np.floor(np.log10(v) + 1e-9)
    return f"{v:g}" if any(abs(mantissa - m) < 1e-6 for m in (1, 2, 5)) else ""


SYMLOG_ABOVE = 60.0
"""A rate axis whose values reach beyond +-60 % turns symlog (linear within +-10 %), so the
small effects near zero and a +1600 % outlier are both readable."""


def symlog_if_wide(axes: Sequence[Axes], limit: float = SYMLOG_ABOVE) -> bool:
    """Give ``axes`` (sharing a y scale) a symlog y axis when their data reach past
    ``limit``; the y label says so. Returns whether it did."""
    reach = max((max(abs(ax.dataLim.y0), abs(ax.dataLim.y1)) for ax in axes
                 if ax.has_data()), default=0.0)  # fmt: skip
    if not np.isfinite(reach) or reach <= limit:
        return False
    for ax in axes:
        ax.set_yscale("symlog", linthresh=10, linscale=0.6)
        ax.yaxis.set_major_locator(SymmetricalLogLocator(linthresh=10, base=10, subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(_signed())
        ax.yaxis.set_minor_formatter(NullFormatter())
        if ax.get_ylabel():
            ax.set_ylabel(ax.get_ylabel() + " (symlog)")
    return True


def _zero_line(ax: Axes) -> None:
    ax.axhline(0, color="#444444", linewidth=0.8, zorder=1)


def _draw_series(ax: Axes, results: Results, threat: str, metric: str, styles, x_log=False):
    for s in results.group_series(threat, metric):
        keep = s.strength > 0 if x_log else np.ones_like(s.strength, dtype=bool)
        if not keep.any():
            continue
        st = styles[s.group]
        x = s.strength[keep]
        if s.n_models > 1:
            ax.fill_between(x, s.low[keep], s.high[keep], color=st["color"], alpha=0.13, lw=0)
        ax.plot(x, s.mean[keep], **st, zorder=3)


# -- clean baseline ----------------------------------------------------------------------------


def _draw_clean_group(ax: Axes, results: Results, group: Group, style: dict) -> bool:
    """One (arch, prior) line through its betas, with 95 % error bars; False if nothing."""
    pts = sorted(
        (c["payload_bytes"], 100 * c["top1"], m["beta"], m["name"])
        for m in results.models_of(group)
        if (c := results.clean(m["name"])) is not None
    )
    if not pts:
        return False
    x, y, _, _ = zip(*pts, strict=True)
    ax.plot(x, y, label=group.label, **style)
    for xi, yi, beta, name in pts:
        x_ci, y_ci = I.payload_interval(results, name), I.top1_interval(results, name)
        if x_ci is not None and y_ci is not None:
            (x0, x1), (y0, y1) = x_ci, y_ci
            ax.errorbar(xi, yi, xerr=[[max(xi - x0, 0)], [max(x1 - xi, 0)]],
                        yerr=[[max(yi - y0, 0)], [max(y1 - yi, 0)]], fmt="none",
                        ecolor=style["color"], alpha=0.45, capsize=2, lw=0.9)  # fmt: skip
        if beta is not None:
            ax.annotate(f"\u03b2={beta:g}", (xi, yi), xytext=(4, 3), textcoords="offset points",
                        fontsize=7.5, color="#555555")  # fmt: skip
    return True


def rate_accuracy_figure(results: Results) -> Figure | None:
    """Clean top-1 (%) against payload bytes per image, one line per (arch, prior) over beta,
    with 95 % confidence intervals (payload: bootstrap; top-1: Wilson)."""
    styles = group_styles(results.groups)
    fig = Figure(figsize=(9.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    drawn = [_draw_clean_group(ax, results, g, styles[g]) for g in results.groups]
    if not any(drawn):
        return None
    lo, hi = ax.dataLim.x0, ax.dataLim.x1
    if lo > 0 and hi / lo > 4:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _log_label(v)))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: _log_label(v)))
    ax.set_xlabel("payload bytes per image (clean, rANS output)")
    ax.set_ylabel("top-1 accuracy (%)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right center", frameon=False)
    return fig


# -- corruptions -------------------------------------------------------------------------------


def _corruption_rows(names: Sequence[str], width: int = 5) -> list[tuple[str, list[str]]]:
    rows = []
    for family in (*CORRUPTION_FAMILIES, "other"):
        members = [n for n in names if corruption_family(n) == family]
        for i in range(0, len(members), width):
            rows.append((family, members[i : i + width]))
    return rows


def corruption_grid_figure(results: Results, metric: str) -> Figure | None:
    """Small multiples: ``metric`` against severity for every corruption, a row per family."""
    rows = _corruption_rows(results.corruptions())
    if not rows:
        return None
    styles = group_styles(results.groups)
    ncols = max(len(m) for _, m in rows)
    fig = Figure(figsize=(2.45 * ncols + 0.6, 2.05 * len(rows) + 0.5), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), ncols, sharey="row", squeeze=False))
    legend_ax = None
    for i, (family, members) in enumerate(rows):
        for j in range(ncols):
            ax = axes[i, j]
            if j >= len(members):
                ax.set_axis_off()
                legend_ax = legend_ax or ax
                continue
            name = members[j]
            _zero_line(ax)
            _draw_series(ax, results, f"corruption/{name}", metric, styles)
            ax.set_title(name.replace("_", " "))
            ax.set_xticks([1, 2, 3, 4, 5])
            ax.set_xlim(0.7, 5.3)
            ax.yaxis.set_major_formatter(_signed())
            if j == 0:
                ax.set_ylabel(f"{family}\n{METRIC_LABELS[metric]}")
            if i == len(rows) - 1 or j >= len(rows[i + 1][1]):
                ax.set_xlabel("severity")
        if metric == "rate_change_pct":  # a scale per row: one family's outlier stays its own
            symlog_if_wide(list(axes[i, : len(members)]))
    handles = _legend_handles(results.groups, styles)
    if legend_ax is not None:
        legend_ax.legend(handles=handles, loc="center", frameon=False, title="arch, prior")
    else:
        fig.legend(
            handles=handles, loc="outside upper center", ncols=min(6, len(handles)), frameon=False
        )
    return fig


def corruption_order(results: Results) -> list[str]:
    """Corruptions sorted by their mean rate change over models and severities, largest first."""

    def effect(name: str) -> float:
        t = f"corruption/{name}"
        vals = [results.mean_over_models(t, s, "rate_change_pct") for s in results.strengths(t)]
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else 0.0

    return sorted(results.corruptions(), key=effect, reverse=True)


def corruption_heatmap_figure(results: Results) -> Figure | None:
    """Corruption x severity heat maps of the mean rate change and top-1 change over models."""
    names = corruption_order(results)
    if not names:
        return None
    sev = sorted({s for n in names for s in results.strengths(f"corruption/{n}")})
    grids = {}
    for metric in ("rate_change_pct", "top1_change_pp"):
        g = np.full((len(names), len(sev)), np.nan)
        for i, n in enumerate(names):
            for j, s in enumerate(sev):
                v = results.mean_over_models(f"corruption/{n}", s, metric)
                g[i, j] = np.nan if v is None else v
        grids[metric] = g
    fig = Figure(figsize=(10.5, 0.27 * len(names) + 1.5), layout="constrained")
    axes = fig.subplots(1, 2, gridspec_kw={"wspace": 0.08})
    rate_lim = max(5.0, float(np.nanmax(np.abs(grids["rate_change_pct"]), initial=0)))
    top1_lim = max(2.0, float(np.nanmax(np.abs(grids["top1_change_pp"]), initial=0)))
    panels = [
        (
            axes[0],
            "rate_change_pct",
            RATE_CMAP,
            SymLogNorm(linthresh=2.0, linscale=0.6, vmin=-rate_lim, vmax=rate_lim, base=10),
            "mean rate change (%)",
            "{:+.0f}",
        ),
        (
            axes[1],
            "top1_change_pp",
            TOP1_CMAP,
            Normalize(-top1_lim, top1_lim),
            "mean top-1 change (pp)",
            "{:+.1f}",
        ),
    ]
    for ax, metric, cmap, norm, label, fmt in panels:
        g = grids[metric]
        cm = mpl.colormaps[cmap].with_extremes(bad="#f2f2f2")
        im = ax.imshow(np.ma.masked_invalid(g), cmap=cm, norm=norm, aspect="auto")
        ax.grid(False)
        ax.set_xticks(range(len(sev)), [f"{s:g}" for s in sev])
        ax.set_yticks(range(len(names)), names if ax is axes[0] else [""] * len(names))
        ax.tick_params(length=0)
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
        ax.set_xlabel("severity")
        ax.set_title(label)
        for i in range(g.shape[0]):
            for j in range(g.shape[1]):
                if np.isfinite(g[i, j]):
                    rgba = cm(norm(g[i, j]))
                    dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
                    ax.text(
                        j,
                        i,
                        signed_text(g[i, j], fmt),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if dark else "#222222",
                    )
        cbar = fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02)
        if metric == "rate_change_pct":
            ticks = [
                t for t in (-300, -100, -30, -10, -3, 0, 3, 10, 30, 100, 300) if abs(t) <= rate_lim
            ]
            cbar.set_ticks(ticks)
        cbar.ax.yaxis.set_major_formatter(_signed())
        cbar.ax.yaxis.set_minor_locator(NullLocator())
        cbar.outline.set_visible(False)
    return fig


# -- attacks -----------------------------------------------------------------------------------


def attack_figure(results: Results, attacks: Sequence[str]) -> Figure | None:
    """Rate change (%) and top-1 change (pp) against eps (x255), a column per attack."""
    attacks = [a for a in attacks if any(s > 0 for s in results.strengths(a))]
    if not attacks:
        return None
    styles = group_styles(results.groups)
    n = len(attacks)
    fig = Figure(figsize=(max(3.3 * n, 6.0) + 1.6, 5.6), layout="constrained")
    axes = fig.subplots(2, n, sharey="row", squeeze=False)
    for j, attack in enumerate(attacks):
        eps = [s for s in results.strengths(attack) if s > 0]
        for i, metric in enumerate(("rate_change_pct", "top1_change_pp")):
            ax = axes[i, j]
            _zero_line(ax)
            _draw_series(ax, results, attack, metric, styles, x_log=True)
            ax.set_xscale("log", base=2)
            ax.set_xticks(eps, [f"{e:g}" for e in eps])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlim(min(eps) / 1.4, max(eps) * 1.4)
            ax.yaxis.set_major_formatter(_signed())
            if i == 0:
                ax.set_title(ATTACK_TITLES.get(attack, attack))
            else:
                ax.set_xlabel("\u03b5 (\u00d7 1/255, L\u221e)")
            if j == 0:
                ax.set_ylabel(METRIC_LABELS[metric])
    symlog_if_wide(list(axes[0]))
    fig.legend(
        handles=_legend_handles(results.groups, styles),
        loc="outside right center",
        frameon=False,
        title="arch, prior",
    )
    return fig


# -- distributions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One condition of the distribution figure."""

    label: str
    threat: str
    strength: float
    kind: str  # a key of KIND_COLOURS


def distribution_figure(
    results: Results, models: Sequence[str], conditions: Sequence[Condition]
) -> Figure | None:
    """Violins of per-image payload bytes under each condition, a panel per model."""
    panels = []
    for model in models:
        data = []
        for c in conditions:
            if not results.select(c.threat, strength=c.strength, model=model):
                continue
            x = results.per_image(model, c.threat, c.strength)["payload_bytes"]
            if len(x):
                data.append((c, x))
        if data:
            panels.append((model, data))
    if not panels:
        return None
    fig = Figure(figsize=(5.2 * len(panels) + 0.4, 4.3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    rng = np.random.default_rng(0)  # jitter of the dots only
    for ax, (model, data) in zip(axes, panels, strict=True):
        pos = np.arange(len(data))
        parts = ax.violinplot([x for _, x in data], positions=pos, widths=0.8, showextrema=False)
        for body, (c, _) in zip(parts["bodies"], data, strict=True):
            body.set_facecolor(KIND_COLOURS[c.kind])
            body.set_edgecolor(KIND_COLOURS[c.kind])
            body.set_alpha(0.35)
        for p, (c, x) in zip(pos, data, strict=True):
            jitter = rng.uniform(-0.12, 0.12, len(x))
            ax.scatter(p + jitter, x, s=6, color=KIND_COLOURS[c.kind], alpha=0.6, lw=0, zorder=3)
            q1, med, q3 = np.percentile(x, [25, 50, 75])
            ax.vlines(p, q1, q3, color="#222222", lw=3, zorder=4)
            ax.scatter([p], [med], s=22, color="white", edgecolor="#222222", zorder=5)
        clean = [x for c, x in data if c.kind == "clean"]
        if clean:
            ax.axhline(clean[0].max(), color="#8c8c8c", lw=0.9, ls=(0, (4, 3)), zorder=2)
            ax.annotate(
                "clean max",
                (1, clean[0].max()),
                xycoords=("axes fraction", "data"),
                xytext=(-2, 3),
                textcoords="offset points",
                ha="right",
                fontsize=8,
                color="#666666",
            )
        ax.set_xticks(pos, [f"{c.label}\nn={len(x)}" for c, x in data])
        ax.grid(axis="x", visible=False)
        ax.set_ylabel("payload bytes per image")
        ax.set_title(model)
    return fig


# -- defences ----------------------------------------------------------------------------------


def defense_figure(results: Results, table: Sequence[dict]) -> Figure | None:
    """Grouped bars: rate change and top-1 change per threat family, a bar per defence.

    ``table`` rows: ``{"family", "defense", "rate_change_pct", "top1_change_pp"}``.
    """
    if not table:
        return None
    families = list(dict.fromkeys(r["family"] for r in table))
    defenses = [d for d in results.defenses if any(r["defense"] == d for r in table)]
    cmap = mpl.colormaps["tab10"]
    colours = {d: ("#9a9a9a" if d == "none" else cmap(i % 10)) for i, d in enumerate(defenses)}
    n_bars = len(families) * len(defenses)
    fig = Figure(figsize=(min(12.0, max(7.0, 1.6 + 0.32 * n_bars)), 5.4), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    width = 0.8 / len(defenses)
    x = np.arange(len(families))
    for ax, metric in zip(axes, ("rate_change_pct", "top1_change_pp"), strict=True):
        _zero_line(ax)
        for k, d in enumerate(defenses):
            vals = []
            for f in families:
                match = [r[metric] for r in table if r["family"] == f and r["defense"] == d]
                vals.append(match[0] if match and match[0] is not None else np.nan)
            ax.bar(
                x + (k - (len(defenses) - 1) / 2) * width,
                vals,
                width,
                color=colours[d],
                label=d if d != "none" else "no defence",
            )
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.yaxis.set_major_formatter(_signed())
        ax.grid(axis="x", visible=False)
    symlog_if_wide([axes[0]])
    rotate = len(families) > 6
    axes[1].set_xticks(
        x,
        [family_label(f) for f in families],
        rotation=20 if rotate else 0,
        ha="right" if rotate else "center",
    )
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", frameon=False,
               ncols=min(6, len(defenses)))  # fmt: skip
    return fig


__all__ = [
    "Condition",
    "Image",
    "attack_figure",
    "corruption_grid_figure",
    "corruption_heatmap_figure",
    "corruption_order",
    "defense_figure",
    "distribution_figure",
    "group_styles",
    "rate_accuracy_figure",
    "render",
]
