"""The report's "Winning the bytes back" section: every way of defending the bytes that a
campaign measured, side by side per prior, under the paper's attack and the adaptive one.

A configuration is a model kind (the zoo model, or its rate-adversarially fine-tuned copy
``NAME-radv``) and a defence in front of the head (none, ``object_tv``, the byte cap
``rate_cap``). Every figure compares with the ORIGINAL model's clean images without defence, on
the same images: bytes on the wire and accuracy against what the user sent before defending.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import numpy as np

from entroguard.report.data import PRIOR_TITLES, Results
from entroguard.report.page import Cell, note, num_cell, rate_cell, table, top1_cell

RADV_SUFFIX = "-radv"
"""Name suffix of a rate-adversarially fine-tuned model (``train --recipe rate_adversarial``)."""

ATTACK, ADAPTIVE = "rate_pgd", "rate_pgd_through"


@dataclass(frozen=True)
class Configuration:
    """A way of defending: the model kind and the defence in front of its head."""

    label: str
    tuned: bool
    defense: str


CONFIGURATIONS = (
    Configuration("undefended", False, "none"),
    Configuration("object_tv", False, "object_tv"),
    Configuration("byte cap", False, "rate_cap"),
    Configuration("rate-adversarial", True, "none"),
    Configuration("rate-adversarial + object_tv", True, "object_tv"),
    Configuration("rate-adversarial + byte cap", True, "rate_cap"),
)


def change_against_source(results: Results, source: str, model: str, threat: str,
                          strength: float, defense: str) -> tuple[float, float] | None:  # fmt: skip
    """(payload change in %, top-1 change in points) of ``model`` under the condition against
    ``source``'s clean images without defence, on the images both measured; None if either is
    missing."""
    clean = results.per_image(source, "clean", 0.0)
    other = results.per_image(model, threat, strength, defense)
    common, i, j = np.intersect1d(clean["image"], other["image"], return_indices=True)
    if not len(common):
        return None
    payload = other["payload_bytes"][j].mean() / clean["payload_bytes"][i].mean()
    top1 = other["correct"][j].mean() - clean["correct"][i].mean()
    return 100.0 * (float(payload) - 1.0), 100.0 * float(top1)


def configuration_row(results: Results, config: Configuration, sources: list[str],
                      strength: float) -> dict | None:  # fmt: skip
    """Means and worst models of ``config`` over ``sources`` (those measured in every cell):
    its clean cost, the attack at ``strength`` and the adaptive attack (the plain attack when
    nothing adapts to the defence: an undefended or rate-adversarial head has nothing to go
    through; the byte cap is a property of the head)."""
    adaptive = ADAPTIVE if config.defense == "object_tv" else ATTACK
    cells: dict[str, list[tuple[float, float]]] = {"clean": [], "attack": [], "adaptive": []}
    for source in sources:
        model = source + RADV_SUFFIX if config.tuned else source
        found = {key: change_against_source(results, source, model, threat, s, config.defense)
                 for key, threat, s in (("clean", "clean", 0.0), ("attack", ATTACK, strength),
                                        ("adaptive", adaptive, strength))}  # fmt: skip
        if found["attack"] is None:
            continue
        for key, value in found.items():
            if value is not None:
                cells[key].append(value)
    if not cells["attack"]:
        return None
    row = {"config": config, "n_models": len(cells["attack"])}
    for key, values in cells.items():
        arr = np.array(values) if values else np.full((1, 2), np.nan)
        row[key] = {"rate": np.nanmean(arr[:, 0]), "rate_worst": np.nanmax(arr[:, 0]),
                    "top1": np.nanmean(arr[:, 1]), "top1_worst": np.nanmin(arr[:, 1])}  # fmt: skip
    return row


def winning_rows(results: Results, strength: float = 8.0) -> dict[str, list[dict]]:
    """Per prior: one row per configuration measured, over the zoo models that have a
    rate-adversarial copy in the campaign (so every row covers the same models)."""
    names = {m["name"] for m in results.models}
    sources = [n.removesuffix(RADV_SUFFIX) for n in names if n.endswith(RADV_SUFFIX)]
    prior_of = {m["name"]: m["prior"] for m in results.models}
    out: dict[str, list[dict]] = {}
    for prior in sorted({prior_of[s] for s in sources if s in prior_of}):
        group = sorted(s for s in sources if prior_of.get(s) == prior)
        rows = [configuration_row(results, c, group, strength) for c in CONFIGURATIONS]
        out[prior] = [r for r in rows if r is not None]
    return out


def _cell_pair(cell: dict, metric: str) -> list[Cell]:
    make = rate_cell if metric == "rate" else top1_cell
    worst = cell[f"{metric}_worst"]
    return [make(None if np.isnan(cell[metric]) else float(cell[metric])),
            make(None if np.isnan(worst) else float(worst))]  # fmt: skip


def winning_section(results: Results, strength: float = 8.0) -> str:
    """The section's HTML: a note when the campaign measured no rate-adversarial model."""
    by_prior = winning_rows(results, strength)
    if not by_prior:
        return note(
            "No rate-adversarially trained model was measured: add the zoo's <code>*-radv</code> "
            "models (<code>entroguard train --recipe rate_adversarial</code>) next to their "
            "sources, with <code>rate_pgd</code>, <code>rate_pgd_through</code> and the "
            "defences <code>object_tv</code> and <code>rate_cap</code> (see "
            "<code>examples/winning_bytes.yaml</code>)."
        )
    headers = ["configuration", ("models", True),
               ("clean: payload", True), ("clean: top-1", True),
               ("attacked: payload", True), ("worst model", True),
               ("attacked: top-1", True), ("worst model", True),
               ("adaptive: payload", True), ("worst model", True)]  # fmt: skip
    parts = []
    for prior, rows in by_prior.items():
        body = [[Cell(escape(r["config"].label)), num_cell(r["n_models"], 0),
                 rate_cell(_finite(r["clean"]["rate"])), top1_cell(_finite(r["clean"]["top1"])),
                 *_cell_pair(r["attack"], "rate"), *_cell_pair(r["attack"], "top1"),
                 *_cell_pair(r["adaptive"], "rate")] for r in rows]  # fmt: skip
        parts.append(f"<h3>{escape(PRIOR_TITLES.get(prior, prior))}</h3>" + table(
            headers, body,
            f"<code>{ATTACK}</code> at eps {strength:g}/255 (paper settings) against each way of "
            "defending, and <code>rate_pgd_through</code> (the attacker differentiates through "
            "the defence, averaging over its randomness when it has any) where there is a "
            "defence to go through. Every change is against the ORIGINAL model's clean images "
            "without defence, on the same images: mean over the models and the worst one "
            "(highest payload, lowest top-1). <i>Clean</i>: what the configuration costs when "
            "nobody attacks."))  # fmt: skip
    return "".join(parts)


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
