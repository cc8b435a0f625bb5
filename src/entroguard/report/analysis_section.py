"""The report's "Where the bits go" section, from ``OUT/analysis`` (``entroguard analyze``).

:func:`load_analysis` reads ``OUT/analysis/analysis.json`` and its two figures (embedded as
PNG ``data:`` URIs, like every other figure of the report); :func:`analysis_section` turns them
into HTML: the rate-versus-TV rank correlation, the payload of low-pass and high-pass DCT bands,
and how each corruption and attack moves image energy between DCT bands next to the payload
change. Without an analysis the section is a one-line note saying how to make one.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from html import escape
from pathlib import Path

from entroguard.report.figures import Image
from entroguard.report.page import Cell, figure, note, num_cell, rate_cell, signed, table

#: The analysis folder inside a campaign's output folder.
ANALYSIS_DIR = "analysis"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAPS_CAPTION = (
    "<b>Rate maps against total-variation maps</b> for the first test images, and the payload "
    "of each DCT band kept alone (low: the lowest fraction of frequencies; high: the rest plus "
    "the image mean)."
)
BANDS_CAPTION = (
    "<b>Where each threat puts its energy.</b> Each row is a threat, each column a DCT band "
    "(DC, then equal shares of the frequencies from the lowest radius to the highest); a cell "
    "is the mean change of the band's energy in % of the clean image's AC energy (red: added, "
    "blue: removed). Rows are sorted by the change of the real payload (bars). If high "
    "frequencies drove the rate, the red in the right-hand columns would follow the bars; a "
    "row with a long bar and a pale right-hand side is a threat that raises the rate some "
    "other way (the image mean, or a few well-placed changes)."
)
THREAT_HEADERS = [
    "threat",
    ("payload change", True),
    ("\u0394E DC", True),
    ("\u0394E lower half", True),
    ("\u0394E upper half", True),
    ("upper-half gain", True),
    ("perturbation in upper half (%)", True),
]
CORRELATION_NAMES = {
    "dc_change_pct": "DC",
    "low_change_pct": "lower half",
    "high_change_pct": "upper half",
    "high_gain_pct": "upper-half gain",
}


@dataclass(frozen=True)
class Analysis:
    """What ``write_analysis`` wrote: its JSON summary and its figures (None if missing)."""

    summary: dict
    maps: Image | None
    bands: Image | None
    defended: Image | None = None


def png_image(path: Path) -> Image | None:
    """The PNG at ``path`` as an embeddable :class:`Image` (size from its header), or None if
    it is missing or not a PNG."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return Image("data:image/png;base64," + base64.b64encode(data).decode(), width, height)


def load_analysis(out_dir: str | Path) -> Analysis | None:
    """``out_dir/analysis/analysis.json`` and the PNGs beside it; None when there is no
    readable analysis (the section then says how to make one)."""
    from entroguard.analysis.run import ANALYSIS_JSON, ANALYSIS_PNG, BANDS_PNG, DEFENDED_PNG

    folder = Path(out_dir) / ANALYSIS_DIR
    try:
        summary = json.loads((folder / ANALYSIS_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or "spearman_mean" not in summary:
        return None
    return Analysis(summary, png_image(folder / ANALYSIS_PNG), png_image(folder / BANDS_PNG),
                    png_image(folder / DEFENDED_PNG))  # fmt: skip


def analysis_section(analysis: Analysis | None) -> str:
    """The section's HTML: a note when ``analysis`` is None."""
    if analysis is None:
        return note(
            "No frequency analysis in this folder: run <code>entroguard analyze --model NAME "
            "--out OUT/analysis</code> (OUT: this report's folder) and write the report again."
        )
    s = analysis.summary
    model = escape(str(s.get("model", "?")))
    intro = (
        f"<p>On <code>{model}</code>, {s['n']} {escape(str(s.get('dataset', '')))} test images: "
        "the Spearman rank correlation between each image's <i>rate map</i> (the coder's bits "
        "per latent position, on the image plane) and its <i>total-variation map</i> is "
        f"<b>{s['spearman_mean']:.2f} \u00b1 {s['spearman_std']:.2f}</b> (mean \u00b1 std "
        "over images). Near 1: the coder spends its bits where the image varies; near 0: "
        "the rate is unrelated to local detail.</p>"
    )
    maps = figure(analysis.maps, "images, rate maps and total-variation maps", MAPS_CAPTION)
    out = intro + _filtered_table(s) + maps
    bands = s.get("threat_bands")
    if not bands:
        return out + note(
            "How threats move energy between DCT bands was not measured (the analysis ran "
            "with <code>--no-threats</code>)."
        )
    alt = "threats by DCT band: energy change, with the payload change"
    out += _threat_table(bands) + figure(analysis.bands, alt, BANDS_CAPTION)
    return out + _defended_maps(analysis)


def _defended_maps(analysis: Analysis) -> str:
    """Figure 5 with the defence: clean, attacked and defended rate maps, captioned from the
    measured payloads."""
    d = analysis.summary.get("defended_maps")
    if not d or analysis.defended is None:
        return ""
    p = d["payload_bytes"]
    attacked, defended = (100 * (p[k] / p["clean"] - 1) for k in ("attacked", "defended"))
    caption = (
        f"<b>Rate maps of the same {d['n']} images clean, under rate_pgd \u03b5 "
        f"{d['eps_255']:g}/255 and after the deployed object_tv</b> (one colour scale for every "
        f"map; each map's real payload below it). Mean payload {p['clean']:.1f} B clean, "
        f"{p['attacked']:.1f} B attacked ({signed(attacked, 1, '%')}), {p['defended']:.1f} B "
        f"defended ({signed(defended, 1, '%')} against clean)."
    )
    alt = "rate maps of the same images clean, attacked and defended"
    return "<h3>What the attack and the defence do to the rate map</h3>" + figure(
        analysis.defended, alt, caption
    )


def _filtered_table(s: dict) -> str:
    rows = [
        [
            Cell(b["keep"]),
            num_cell(100 * b["fraction"], 0),
            num_cell(b["payload_bytes"]),
            rate_cell(b["rate_change_pct"]),
        ]
        for b in s.get("bands", [])
    ]
    if not rows:
        return ""
    return "<h3>Payload of DCT bands</h3>" + table(
        ["band kept", ("lowest frequencies (%)", True), ("payload bytes", True),
         ("payload change", True)],
        rows,
        f"Mean payload per image when only one band is kept; change against the unfiltered "
        f"images ({s['clean_payload_bytes']:.1f} bytes).",
    )  # fmt: skip


def _energy_cell(value: float) -> Cell:
    return Cell(signed(value, 1, "%"), num=True)


def _threat_table(bands: dict) -> str:
    rows = sorted(bands["threats"], key=lambda r: r["rate_change_pct"], reverse=True)
    body = [
        [
            Cell(r["label"]),
            rate_cell(r["rate_change_pct"]),
            _energy_cell(r["dc_change_pct"]),
            _energy_cell(r["low_change_pct"]),
            _energy_cell(r["high_change_pct"]),
            _energy_cell(r["high_gain_pct"]),
            num_cell(r["perturbation_high_pct"]),
        ]
        for r in rows
    ]
    rho = bands.get("spearman_vs_rate", {})
    corr = ", ".join(
        f"{name} {rho[k]:.2f}" for k, name in CORRELATION_NAMES.items() if rho.get(k) is not None
    )
    sentence = (
        f"<p>Rank correlation over the {len(rows)} threats between each energy column and the "
        f"payload change: {corr}.</p>"
        if corr
        else ""
    )
    return (
        "<h3>How threats move energy between DCT bands</h3>"
        + table(
            THREAT_HEADERS,
            body,
            f"{bands['n']} images, seed {bands['seed']}; s: corruption severity, eps: attack "
            "budget (\u00d7 1/255). \u0394E: mean change of the "
            "band energy in % of the clean image's AC energy (the lower half excludes the DC). "
            "<i>Upper-half gain</i>: change of the upper-half energy in % of the clean images' "
            "upper-half energy. <i>Perturbation in upper half</i>: share of the energy of "
            "(threatened \u2212 clean) in the upper half of the frequencies (white noise: "
            "about 50 %).",
        )  # fmt: skip
        + sentence
    )
