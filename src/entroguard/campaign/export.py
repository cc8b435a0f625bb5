"""``results.csv`` (one row per condition, DESIGN.md's columns) and ``leak.csv``, from SQLite."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from entroguard.campaign.store import LEAK_COLUMNS, ResultStore

COLUMNS = [
    "model", "arch", "prior", "beta", "threat", "strength", "defense", "n", "top1",
    "est_bytes", "payload_bytes", "packet_bytes", "rate_change_pct", "top1_change_pp",
    "params", "seconds",
]  # fmt: skip


def condition_rows(store: ResultStore) -> list[dict]:
    """Condition rows with ``rate_change_pct`` and ``top1_change_pp`` filled in.

    The reference is the same model's clean condition without defence, restricted to the
    same images, so a condition measured on fewer images is compared like with like.
    """
    rows = store.conditions()
    clean_keys = {
        r["model"]: r["key"] for r in rows if r["threat"] == "clean" and r["defense"] == "none"
    }
    clean = {m: store.per_image(k) for m, k in clean_keys.items()}
    out = []
    for r in rows:
        row = {c: r.get(c) for c in COLUMNS}
        ref = clean.get(r["model"])
        if ref is not None:
            images = store.per_image(r["key"])["image"]
            pos = np.searchsorted(ref["image"], images)
            ok = (pos < len(ref["image"])) & (
                ref["image"][np.minimum(pos, len(ref["image"]) - 1)] == images
            )
            if ok.all() and len(images):
                ref_payload = ref["payload_bytes"][pos].mean()
                ref_top1 = ref["correct"][pos].mean()
                row["rate_change_pct"] = 100.0 * (r["payload_bytes"] / ref_payload - 1.0)
                row["top1_change_pp"] = 100.0 * (r["top1"] - ref_top1)
        out.append(row)
    return out


def write_csv(store: ResultStore, path: str | Path) -> Path:
    """Write ``results.csv`` atomically (temporary file, then rename)."""
    return _write_rows(path, COLUMNS, condition_rows(store))


def write_leak_csv(store: ResultStore, path: str | Path) -> Path | None:
    """Write ``leak.csv`` (one row per point and probe of each leak measurement) atomically;
    nothing when the campaign measured no leakage."""
    rows = store.leak_rows()
    return _write_rows(path, LEAK_COLUMNS, rows) if rows else None


def _write_rows(path: str | Path, columns, rows: list[dict]) -> Path:
    path = Path(path)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(v) for k, v in row.items()})
    tmp.replace(path)
    return path


def _fmt(value: object) -> object:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value
