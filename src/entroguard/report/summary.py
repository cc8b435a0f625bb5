"""Numbers the report states in words and tables: worst conditions, top corruptions, defences.

Every rate change is in % of the same model's clean payload bytes (same images, no defence);
every top-1 change is in percentage points. "Mean" is over the models measured in a condition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from entroguard.report.data import (
    CORRUPTION_FAMILIES,
    Results,
    corruption_family,
    corruption_name,
    threat_family,
)
from entroguard.report.figures import Condition
from entroguard.threats.corruptions import NOISE


@dataclass
class Worst:
    """The condition of a threat family with the largest mean rate inflation."""

    family: str
    threat: str
    strength: float
    rate_mean: float
    top1_mean: float | None
    rate_max: float
    rate_max_model: str
    n_models: int


def families(results: Results) -> dict[str, list[str]]:
    """Threat family -> its measured threats (corruption families, then each attack)."""
    out: dict[str, list[str]] = {}
    for name in results.corruptions():
        out.setdefault(f"{corruption_family(name)} corruptions", []).append(f"corruption/{name}")
    for attack in results.attacks():
        out[attack] = [attack]
    return out


def worst_per_family(results: Results) -> list[Worst]:
    """Per family, the (threat, strength) with the largest mean rate change over models."""
    out = []
    for family, threats in families(results).items():
        best = None
        for t in threats:
            for s in results.strengths(t):
                rate = results.mean_over_models(t, s, "rate_change_pct")
                if rate is not None and (best is None or rate > best[0]):
                    best = (rate, t, s)
        if best is None:
            continue
        rate, t, s = best
        rows = [r for r in results.select(t, strength=s) if r.get("rate_change_pct") is not None]
        top = max(rows, key=lambda r: r["rate_change_pct"])
        out.append(
            Worst(
                family,
                t,
                s,
                rate,
                results.mean_over_models(t, s, "top1_change_pp"),
                top["rate_change_pct"],
                top["model"],
                len(rows),
            )
        )
    return out


@dataclass
class CorruptionEffect:
    name: str
    severity: float
    rate: float
    top1: float | None
    rate_all: float  # mean over severities too


def corruption_effects(results: Results) -> list[CorruptionEffect]:
    """Per corruption at its highest measured severity, sorted by rate change (largest first)."""
    out = []
    for name in results.corruptions():
        t = f"corruption/{name}"
        sev = results.strengths(t)
        if not sev:
            continue
        rate = results.mean_over_models(t, sev[-1], "rate_change_pct")
        if rate is None:
            continue
        per_sev = [results.mean_over_models(t, s, "rate_change_pct") for s in sev]
        out.append(
            CorruptionEffect(
                name,
                sev[-1],
                rate,
                results.mean_over_models(t, sev[-1], "top1_change_pp"),
                float(np.mean([v for v in per_sev if v is not None])),
            )
        )
    return sorted(out, key=lambda e: e.rate, reverse=True)


def nearest_strength(results: Results, threat: str, target: float) -> float | None:
    eps = [s for s in results.strengths(threat) if s > 0]
    return min(eps, key=lambda s: (abs(np.log2(s / target)), -s)) if eps else None


def distribution_conditions(results: Results) -> list[Condition]:
    """Clean, rate PGD near eps 8, and the noise / blur corruption that moves the rate most."""
    out = [Condition("clean", "clean", 0.0, "clean")]
    if "rate_pgd" in results.attacks():
        eps = nearest_strength(results, "rate_pgd", 8.0)
        if eps is not None:
            out.append(Condition(f"rate PGD\n\u03b5={eps:g}", "rate_pgd", eps, "attack"))
    effects = corruption_effects(results)
    noise = [e for e in effects if e.name in NOISE]
    blur = [e for e in effects if corruption_family(e.name) == "blur"]
    if noise:
        e = max(noise, key=lambda e: e.rate)
        out.append(
            Condition(_short(e.name, e.severity), f"corruption/{e.name}", e.severity, "noise")
        )
    if blur:
        e = min(blur, key=lambda e: e.rate)
        out.append(
            Condition(_short(e.name, e.severity), f"corruption/{e.name}", e.severity, "blur")
        )
    return out


def _short(name: str, severity: float) -> str:
    return f"{name.replace('_', ' ')}\nseverity {severity:g}"


def distribution_models(results: Results) -> list[str]:
    """One model per prior: the first architecture's smallest beta."""
    out: dict[str, str] = {}
    for m in results.models:
        if results.clean(m["name"]) is not None:
            out.setdefault(m["prior"], m["name"])
    return list(out.values())


# -- defences ----------------------------------------------------------------------------------


def defense_rows(results: Results) -> list[dict]:
    """Per condition measured with any defence (attacks at every eps, corruptions at their
    strongest severity): mean rate and top-1 change per defence, ``none`` included.

    Each mean is over the models measured with any defence in that condition, so the columns
    compare the same models. Rows: ``{"threat", "strength", "n_models", "rate": {defence:
    value}, "top1": {defence: value}}``; a defence not measured there is missing from the dicts.
    """
    defended = [r for r in results.rows if r["defense"] != "none"]
    out = []
    for threat in dict.fromkeys(r["threat"] for r in defended):
        strengths = sorted({r["strength"] for r in defended if r["threat"] == threat})
        if corruption_name(threat) is not None:
            strengths = strengths[-1:]
        for s in strengths:
            rows = results.select(threat, strength=s, defense=None)
            models = {r["model"] for r in rows if r["defense"] != "none"}
            by_defense: dict[str, list[dict]] = {}
            for r in rows:
                if r["model"] in models:
                    by_defense.setdefault(r["defense"], []).append(r)
            out.append(
                {
                    "threat": threat,
                    "strength": s,
                    "n_models": len(models),
                    "rate": {d: _mean(v, "rate_change_pct") for d, v in by_defense.items()},
                    "top1": {d: _mean(v, "top1_change_pp") for d, v in by_defense.items()},
                }
            )
    return out


def defended_strength(results: Results, threat: str) -> float | None:
    """The strongest strength at which ``threat`` was measured behind a defence (None when it
    never was): the strength at which the defences, ``none`` included, are compared."""
    strengths = {r["strength"] for r in results.select(threat, defense=None)
                 if r["defense"] != "none"}  # fmt: skip
    return max(strengths) if strengths else None


def defense_family_rows(results: Results) -> list[dict]:
    """Per threat family and defence: mean changes over models and over the family's threats
    measured behind a defence, each at :func:`defended_strength` for every defence (so the
    bars of one family compare the same conditions). Families never defended are left out."""
    out = []
    order = [
        "clean",
        *(f"{f} corruptions" for f in (*CORRUPTION_FAMILIES, "other")),
        *results.attacks(None),
    ]
    threats = [t for t in results.threats(None) if defended_strength(results, t) is not None]
    for defense in results.defenses:
        by_family: dict[str, list[dict]] = {}
        for threat in threats:
            rows = results.select(threat, strength=defended_strength(results, threat),
                                  defense=defense)  # fmt: skip
            if rows:
                by_family.setdefault(threat_family(threat), []).extend(rows)
        for family, rows in by_family.items():
            out.append(
                {
                    "family": family,
                    "defense": defense,
                    "rate_change_pct": _mean(rows, "rate_change_pct"),
                    "top1_change_pp": _mean(rows, "top1_change_pp"),
                }
            )
    rank = {f: i for i, f in enumerate(order)}
    return sorted(out, key=lambda r: rank.get(r["family"], len(rank)))


def adaptive_rows(results: Results, base: str = "rate_pgd") -> list[dict]:
    """What each adaptive attack wins back: on the models it was measured on, its mean rate
    and top-1 change behind the defence it adapts to, next to ``base`` (the attack it adapts)
    at the same strength without and with that defence.

    Rows: ``{"attack", "defense", "strength", "n_models", "rate": {label: value}, "top1":
    {label: value}}`` with labels ``"plain"`` (``base``, no defence), ``"plain, defended"``
    (``base`` behind the defence) and ``"adaptive"`` (the attack behind the defence); a
    condition not measured is missing from the dicts.
    """
    from entroguard.threats.adaptive import ADAPTIVE_ATTACKS

    out = []
    for attack in [a for a in results.attacks(None) if a in ADAPTIVE_ATTACKS]:
        for defense in results.defenses:
            for s in results.strengths(attack, defense):
                rows = results.select(attack, strength=s, defense=defense)
                models = {r["model"] for r in rows}
                cells = {
                    "plain": results.select(base, strength=s, defense="none"),
                    "plain, defended": results.select(base, strength=s, defense=defense),
                    "adaptive": rows,
                }
                cells = {k: [r for r in v if r["model"] in models] for k, v in cells.items()}
                out.append(
                    {
                        "attack": attack,
                        "defense": defense,
                        "strength": s,
                        "n_models": len(models),
                        "rate": {k: _mean(v, "rate_change_pct") for k, v in cells.items() if v},
                        "top1": {k: _mean(v, "top1_change_pp") for k, v in cells.items() if v},
                    }
                )
    return out


def _mean(rows: list[dict], metric: str) -> float | None:
    vals = [r[metric] for r in rows if r.get(metric) is not None]
    return float(np.mean(vals)) if vals else None
