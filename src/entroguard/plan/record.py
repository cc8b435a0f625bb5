"""A plan on disk: ``OUT/plan.json`` (costs, parameters, rows, crossovers), read by the report."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from entroguard.plan.costs import (
    OptionCost,
    PlanParameters,
    crossovers,
    parameters_dict,
    plan_rows,
)

PLAN_JSON = "plan.json"


def plan_record(model: str, costs: list[OptionCost], params: PlanParameters) -> dict:
    """Everything ``entroguard plan`` measured and derived, JSON-ready."""
    return {
        "model": model,
        "costs": [asdict(c) for c in costs],
        "parameters": parameters_dict(params),
        "rows": plan_rows(costs, params),
        "crossovers": crossovers(costs, params),
    }


def write_plan(out: str | Path, record: dict) -> Path:
    """Write ``out/plan.json`` atomically; returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / PLAN_JSON
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return path


def read_plan(out: str | Path) -> dict | None:
    """``out/plan.json``, or None when it is missing or unreadable."""
    try:
        record = json.loads((Path(out) / PLAN_JSON).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "rows" in record else None
