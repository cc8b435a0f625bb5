"""Run a campaign's ``leak`` entries: one measurement per (model, protection), each committed to
SQLite when it finishes, so a killed campaign resumes at the next measurement.

The attacker's shadow set is the second half of the dataset's training split (never the
victim's test images); the victim's images are the campaign's first ``test_images``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tqdm.auto import tqdm

from entroguard.campaign.config import CampaignConfig, ConfigError
from entroguard.campaign.leak_config import LeakEntry, check_protection_fits
from entroguard.campaign.models import ModelRef
from entroguard.campaign.store import ResultStore
from entroguard.data import ImageSet, load_dataset


@dataclass(frozen=True)
class LeakUnit:
    """One leak measurement: ``ref`` under ``protection``, as ``entry`` sets it up."""

    ref: ModelRef
    entry: LeakEntry
    protection: str
    n_test: int
    key: str


def plan_leak(config: CampaignConfig, refs: list[ModelRef], n_total: int,
              done: set[str]) -> list[LeakUnit]:  # fmt: skip
    """Every (entry, model, protection) not yet measured, model-major (a model loads once)."""
    units = []
    for entry in config.leak:
        selected = [r for r in refs if entry.selects(r.name)]
        if not selected:
            raise ConfigError(f"{entry.key}.models: no model of the campaign matches "
                              f"{list(entry.models or ())}")  # fmt: skip
        n_test = min(entry.test_images or config.n_images, n_total)
        for ref in selected:
            try:
                check_protection_fits(entry, ref.name, ref.prior, ref.setting is not None)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            for protection in entry.protections:
                key = entry.unit_key(ref.name, protection, n_test, config.seed)
                if key not in done:
                    units.append(LeakUnit(ref, entry, protection, n_test, key))
    return sorted(units, key=lambda u: u.ref.name)


def run_leak_units(
    units: list[LeakUnit], config: CampaignConfig, victim: ImageSet, store: ResultStore,
    progress: bool = True, device: str = "cpu",
) -> None:  # fmt: skip
    """Measure ``units`` on ``victim`` (the campaign's test images), committing each at once;
    the models run on ``device``, the probes on this machine's CPU cores."""
    from entroguard.privacy.context import LeakContext
    from entroguard.privacy.leak import default_shadow, run_leak

    if not units:
        return
    train = load_dataset(config.dataset, "train")
    key, context = None, None  # one model and entry at a time
    try:
        for unit in tqdm(units, desc="leak", unit="measurement", disable=not progress,
                         dynamic_ncols=True):  # fmt: skip
            start = time.perf_counter()
            if key != (unit.ref.name, unit.entry, unit.n_test):
                if context is not None:
                    context.close()
                    context = None  # free the previous model's features first
                key = (unit.ref.name, unit.entry, unit.n_test)
                shadow = default_shadow(train, unit.entry.shadow_images)
                model = unit.ref.load().to(device)
                context = LeakContext(model, shadow, victim.subset(unit.n_test),
                                      unit.entry.points)  # fmt: skip
            rows = run_leak(
                context.model, unit.ref.name, context.sets["shadow"], context.sets["victim"],
                (unit.protection,), points=unit.entry.points, probes=unit.entry.probes,
                seed=config.seed, progress=progress, context=context,
            )  # fmt: skip
            store.add_leak(unit.key, unit.ref.info(), rows, time.perf_counter() - start)
    finally:
        if context is not None:
            context.close()
