"""The report's "What the bitstream leaks" section, from a campaign's ``leak`` entries."""

from __future__ import annotations

from html import escape

from entroguard.privacy.summary import POINT_TITLES, points_in, summarise
from entroguard.report.figures import render
from entroguard.report.leak_figures import recovery_figure, tradeoff_figure
from entroguard.report.page import Cell, figure, note, num_cell, rate_cell, table, top1_cell

INTRO = (
    "<p>A passive eavesdropper knows the public head and entropy model, decodes every packet "
    "it captures, and trains probes on labelled shadow data (the second half of the training "
    "set, never the victim's test images). Each number is the probe's top-1 on the victim's "
    "images; under a protection the attacker is retrained against it with its own key. Deeper "
    "points are what a curious server sees.</p>"
)
RECOVERY_CAPTION = (
    "<b>Label recovery per point</b>, unprotected: top-1 of each probe at each point in "
    "data-flow order, and of the side channels (packet length alone; estimated bits per "
    "channel, which anyone who parses the stream can compute). Dotted: chance; dashed: the "
    "model's own top-1."
)
TRADEOFF_CAPTION = (
    "<b>What each protection buys and costs</b>: recovery (best probe, retrained against the "
    "protection) from the latent that travels and from the tail's first features (what a "
    "curious server holds), against the payload change the protection causes (real coded "
    "bytes, symlog axis); labels give the victim's top-1 change in points."
)


def leak_section(rows: list[dict]) -> str:
    """The section's HTML: a note when the campaign had no ``leak`` entry."""
    if not rows:
        return note(
            "No leakage measured in this campaign: add a <code>leak</code> entry to its YAML "
            "(see <code>entroguard.campaign.leak_config</code>) or run <code>entroguard leak "
            "--model NAME</code>."
        )
    first = rows[0]
    setup = (
        f"<p>{first['n_shadow']:,} shadow images, {first['n_test']:,} victim images; probes: "
        f"{escape(', '.join(sorted({r['probe'] for r in rows if r['point'] != 'reference'})))}"
        ".</p>"
    )
    parts = [INTRO, setup, figure(render(recovery_figure, rows), "label recovery per point",
                                  RECOVERY_CAPTION)]  # fmt: skip
    tradeoff = render(tradeoff_figure, rows)
    if tradeoff is not None:
        parts.append(figure(tradeoff, "privacy, bytes and accuracy per protection",
                            TRADEOFF_CAPTION))  # fmt: skip
    parts.append(_summary_table(rows))
    return "".join(parts)


def _summary_table(rows: list[dict]) -> str:
    points = points_in(rows)
    headers = ["model", "protection", *((POINT_TITLES[p], True) for p in points),
               ("chance", True), ("model top-1", True), ("payload B", True),
               ("payload change", True), ("victim top-1 change", True)]  # fmt: skip
    body = []
    for line in summarise(rows):
        body.append([
            Cell(line["model"]), Cell(line["defense"]),
            *(num_cell(line["best"].get(p), 3) for p in points),
            num_cell(line.get("chance"), 3), num_cell(line.get("model_top1"), 3),
            num_cell(line.get("payload_bytes"), 1), rate_cell(line["payload_change_pct"]),
            top1_cell(line["top1_change_pp"]),
        ])  # fmt: skip
    return table(
        headers,
        body,
        "Best probe's top-1 at each point; side channels; what the "
        "protection costs (payload and victim top-1 against the unprotected model).",
    )
