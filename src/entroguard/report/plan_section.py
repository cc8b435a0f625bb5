"""The report's "Where splitting pays off" section, from ``entroguard plan --out OUT/plan``."""

from __future__ import annotations

from html import escape
from pathlib import Path

from entroguard.plan.figure import plan_figure
from entroguard.plan.record import read_plan
from entroguard.report.figures import render
from entroguard.report.page import figure, note

PLAN_DIR = "plan"
CAPTION = (
    "<b>Latency and device energy per image over the uplink bandwidth</b> for classifying on "
    "the device (local), uploading the image as PNG or JPEG q90 (offload), or running the head "
    "and sending its packet (split). Device and server times were measured on the machine that "
    "ran the plan (one torch thread for the device); power figures are the named assumptions "
    "above. Grey lines: bandwidths where the fastest option changes."
)


def load_plan(out_dir: str | Path) -> dict | None:
    """``out_dir/plan/plan.json``, or None."""
    return read_plan(Path(out_dir) / PLAN_DIR)


def plan_section(record: dict | None) -> str:
    """The section's HTML: a note when there is no plan."""
    if record is None:
        return note(
            "No plan in this folder: run <code>entroguard plan --model NAME --out OUT/plan"
            "</code> (OUT: this report's folder) and write the report again."
        )
    p = record["parameters"]
    intro = (
        f"<p>On <code>{escape(record['model'])}</code>: round trip {p['rtt_ms']:g} ms, device "
        f"{p['device_compute_w']:g} W computing and {p['radio_w']:g} W sending "
        "(assumptions).</p>"
    )
    costs = "".join(
        f"<li><b>{escape(c['option'])}</b>: device {c['device_ms']:.2f} ms, upload "
        f"{c['upload_bytes']:.0f} B, server {c['server_ms']:.2f} ms</li>"
        for c in record["costs"]
    )
    crossings = (
        "".join(
            f"<li>fastest changes from {escape(c['from'])} to {escape(c['to'])} at "
            f"{c['bandwidth_mbps']:.3g} Mbit/s</li>"
            for c in record.get("crossovers", [])
        )
        or "<li>one option is fastest over the whole range</li>"
    )
    image = render(plan_figure, record)
    return (
        intro
        + f"<ul class=findings>{costs}</ul>"
        + figure(image, "latency and device energy over bandwidth", CAPTION)
        + f"<ul class=findings>{crossings}</ul>"
    )
