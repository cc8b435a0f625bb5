"""Leak rows (:func:`entroguard.privacy.leak.leak_rows`) reduced to one line per measurement.

A measurement is a model under a protection; its line holds the best probe's top-1 at each
point, the side channels, the references, and what the protection costs the victim next to
the same model unprotected (payload change in %, top-1 change in points).
"""

from __future__ import annotations

from collections.abc import Iterable

from entroguard.privacy.points import POINTS

SIDE_CHANNELS: tuple[str, ...] = ("packet_length", "channel_bits")
POINT_TITLES = {
    "latent": "latent (travels)",
    "g_s": "after g_s",
    "stage1": "after stage 1",
    "stage2": "after stage 2",
    "logits": "logits",
    "packet_length": "packet length",
    "channel_bits": "bits per channel",
}


def summarise(rows: Iterable[dict]) -> list[dict]:
    """One dict per (model, defense), in first-seen order: ``best`` ({point: top-1 of the best
    probe}), ``best_probe`` ({point: probe}), ``chance``, ``model_top1``, ``payload_bytes``,
    ``victim_top1``, ``agreement``, and ``payload_change_pct`` / ``top1_change_pp`` against
    the model's unprotected measurement when there is one (else None)."""
    lines: dict[tuple[str, str], dict] = {}
    for r in rows:
        line = lines.setdefault((r["model"], r["defense"]), {
            "model": r["model"], "defense": r["defense"], "best": {}, "best_probe": {},
            "n_shadow": r["n_shadow"], "n_test": r["n_test"]})  # fmt: skip
        point, probe = r["point"], r["probe"]
        if point == "reference":
            key = {"chance": "chance", "model": "model_top1", "victim": "victim_top1"}[probe]
            line[key] = r["top1"]
            if probe == "victim":
                line["payload_bytes"], line["agreement"] = r["payload_bytes"], r["agreement"]
        elif r["top1"] > line["best"].get(point, -1.0):
            line["best"][point], line["best_probe"][point] = r["top1"], probe
    for line in lines.values():
        plain = lines.get((line["model"], "none"))
        line["payload_change_pct"] = line["top1_change_pp"] = None
        if plain is not None and plain.get("payload_bytes") and "payload_bytes" in line:
            line["payload_change_pct"] = 100 * (line["payload_bytes"] / plain["payload_bytes"] - 1)
            line["top1_change_pp"] = 100 * (line["victim_top1"] - plain["victim_top1"])
    return list(lines.values())


def points_in(rows: Iterable[dict]) -> list[str]:
    """The points and side channels measured in ``rows``, in data-flow order."""
    seen = {r["point"] for r in rows}
    return [p for p in (*POINTS, *SIDE_CHANNELS) if p in seen]
