"""The short table ``entroguard campaign`` prints when it ends: per model, the clean payload
and accuracy, and the condition that moved each most (undefended), from ``results.csv``'s
rows (:func:`~entroguard.campaign.export.condition_rows`)."""

from __future__ import annotations

from entroguard.campaign.progress import condition_name
from entroguard.campaign.store import ConditionId
from entroguard.report.table import format_table


def _name(row: dict) -> str:
    cid = ConditionId(row["model"], row["threat"], float(row["strength"]), row["defense"])
    return condition_name(cid).split(" · ")[1]


def summary_rows(rows: list[dict]) -> list[dict]:
    """One dict per model (in ``rows``' order): clean bytes and top-1, and the undefended
    conditions with the largest payload rise and the largest top-1 drop."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model and r["defense"] == "none"]
        clean = next((r for r in mine if r["threat"] == "clean"), None)
        threats = [r for r in mine if r["threat"] != "clean" and r["rate_change_pct"] is not None]
        entry: dict = {"model": model}
        if clean is not None:
            entry["clean payload B"] = round(clean["payload_bytes"], 1)
            entry["clean top-1 %"] = round(100 * clean["top1"], 2)
        if threats:
            rise = max(threats, key=lambda r: r["rate_change_pct"])
            drop = min(threats, key=lambda r: r["top1_change_pp"])
            entry["largest rise"] = f"{rise['rate_change_pct']:+.1f} % ({_name(rise)})"
            entry["largest top-1 drop"] = f"{drop['top1_change_pp']:+.1f} pp ({_name(drop)})"
        out.append(entry)
    return out


def format_campaign_summary(rows: list[dict]) -> str:
    """:func:`summary_rows` as an aligned text table."""
    table = summary_rows(rows)
    if not table:
        return "no conditions measured"
    columns = ["model", "clean payload B", "clean top-1 %", "largest rise", "largest top-1 drop"]
    return format_table(table, [c for c in columns if any(c in t for t in table)])
