"""Run a campaign: every (threat, defence, model) condition, measured through real bytes.

Model-independent threats (corruptions) are computed once and shared by every model; attacks
are computed per model. Each finished condition is committed to SQLite at once, so a killed
campaign resumes where it stopped when run again with the same command.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from entroguard.campaign.config import CampaignConfig
from entroguard.campaign.export import write_csv
from entroguard.campaign.models import ModelRef, resolve_models
from entroguard.campaign.store import ConditionId, ResultStore
from entroguard.data import ImageSet, load_dataset
from entroguard.errors import InputError
from entroguard.measure import Measurement, measure_batch
from entroguard.models import SplitClassifier
from entroguard.threats.threat import Threat


def _threatened(
    threat: Threat,
    model: SplitClassifier | None,
    model_name: str,
    data: ImageSet,
    n: int,
    batch_size: int,
    seed: int,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` images under ``threat``, in batches of ``(images, labels)``."""
    out = []
    seed = threat.seed_for(seed, model_name)
    for start in range(0, n, batch_size):
        idx = slice(start, min(start + batch_size, n))
        images, labels = data.to_float(idx), data.labels[idx]
        out.append((threat.apply(model, images, labels, seed=seed, offset=start), labels))
    return out


def _defense_for(threat: Threat, defense: str):
    """The defence instance measured for ``threat``: an attack through a defence brings its
    own (with the hyper-parameters it attacked), any other defence is built by name."""
    from entroguard.defenses import build_defense

    if defense == "none":
        return None
    if threat.adapts_to == defense and "defense_params" in threat.params:
        return build_defense(defense, **threat.params["defense_params"])
    return build_defense(defense)


def _measure(
    model: SplitClassifier,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    threat: Threat,
    defense: str,
) -> Measurement:
    """Measure the batches through the real bitstream, after ``defense`` (or none)."""
    d = _defense_for(threat, defense)
    parts = []
    for x, y in batches:
        parts.append(measure_batch(model, x if d is None else d(model, x), y))
    return Measurement.concat(parts)


def _defenses_for(threat: Threat, defenses: list[str]) -> list[str]:
    """Adaptive attacks are measured behind the defence they adapt to, and only there."""
    adapts_to = threat.adapts_to
    return [adapts_to] if adapts_to is not None else defenses


def run_campaign(
    config: CampaignConfig,
    out_dir: str | Path,
    *,
    zoo_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Measure every condition of ``config`` not yet in ``out_dir/results.sqlite``.

    Returns the path of ``results.csv``, rewritten from the database at the end.
    """
    out_dir = Path(out_dir)
    refs = resolve_models(config.models, zoo_dir)
    data = load_dataset(config.dataset, "test").subset(config.n_images)
    n_total = len(data)
    with ResultStore(out_dir / "results.sqlite") as store:
        done = store.done_keys()
        plan = [
            (threat, min(n, n_total), defense, ref)
            for threat, n in config.threats
            for defense in _defenses_for(threat, config.defenses)
            for ref in refs
            if ConditionId(ref.name, threat.name, threat.strength, defense).key not in done
        ]
        models: dict[str, SplitClassifier] = {}
        cache: dict[tuple[str, float], list] = {}
        bar = tqdm(total=sum(n for _, n, _, _ in plan), unit="img", desc="campaign",
                   disable=not progress, dynamic_ncols=True)  # fmt: skip
        for threat, n, defense, ref in plan:
            bar.set_postfix_str(f"{ref.name} {threat.name} {threat.strength:g} {defense}")
            model = models.get(ref.name) or models.setdefault(ref.name, _load(ref, data))
            t0 = time.perf_counter()
            if threat.model_dependent:
                batches = _threatened(threat, model, ref.name, data, n, config.batch_size,
                                      config.seed)  # fmt: skip
            else:
                key = (threat.name, threat.strength)
                if key not in cache:
                    cache.clear()  # threats come grouped: keep only the current one
                    cache[key] = _threatened(threat, None, "", data, n, config.batch_size,
                                             config.seed)  # fmt: skip
                batches = cache[key]
            result = _measure(model, batches, threat, defense)
            cid = ConditionId(ref.name, threat.name, threat.strength, defense)
            store.add(cid, ref.info(), json.dumps(threat.params, sort_keys=True),
                      np.arange(n), result, time.perf_counter() - t0)  # fmt: skip
            bar.update(n)
        bar.close()
        return write_csv(store, out_dir / "results.csv")


def _load(ref: ModelRef, data: ImageSet) -> SplitClassifier:
    model = ref.load()
    # The coder tables are large Python lists; without this, every full collection of the
    # cyclic GC rescans them and per-image coding runs 5-20x slower.
    gc.freeze()
    if tuple(model.spec.input_size) != data.image_size:
        raise InputError(
            f"{ref.name} takes {model.spec.input_size} images but the dataset has "
            f"{data.image_size}; pick a dataset of the model's input size"
        )
    return model
