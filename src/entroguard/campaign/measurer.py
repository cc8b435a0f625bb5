"""Measure one task (a threat on one model, behind each of its defences) through real bytes.

The same :class:`Measurer` runs in the campaign's own process (``workers=1``) and in each
worker process of a parallel campaign, so both paths measure exactly the same way.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from entroguard.campaign.coding_lane import (
    CodingLane,
    overlap_by_default,
    raise_failed,
    results,
    wait_all,
)
from entroguard.campaign.models import ModelRef
from entroguard.campaign.store import ConditionId
from entroguard.data import ImageSet
from entroguard.device import module_device
from entroguard.errors import InputError
from entroguard.measure import Measurement, analyze_batch, code_batch
from entroguard.models import SplitClassifier
from entroguard.threats.threat import Threat

#: ``(images, labels)`` batches of threatened images.
Batches = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Task:
    """One threat on one model, measured behind each of ``defenses``.

    Attributes:
        ref: the model.
        threat: the threat and its strength.
        n: number of images (the first ``n`` of the campaign's set).
        defenses: the defences still to measure (``none`` for no defence).
        batches: the threatened images when they do not depend on the model (computed once
            and shared by every model); None for attacks, which the measurer runs itself.
    """

    ref: ModelRef
    threat: Threat
    n: int
    defenses: tuple[str, ...]
    batches: Batches | None = None


@dataclass
class ConditionResult:
    """One measured condition, ready for :meth:`ResultStore.add`."""

    cid: ConditionId
    info: dict
    params: str
    n: int
    measurement: Measurement
    seconds: float


class ThreatenedBatches:
    """The first ``n`` images of ``data`` under ``threat``, in batches of ``(images, labels)``
    (images on ``model``'s device, labels on the CPU), seeded by the condition so that reruns
    and resumes give identical images. Each batch is made when first iterated and kept for the
    next pass (a task measures the same images behind each of its defences).

    Attributes:
        seconds: the time spent threatening so far, in seconds.
    """

    def __init__(
        self,
        threat: Threat,
        model: SplitClassifier | None,
        model_name: str,
        data: ImageSet,
        n: int,
        batch_size: int,
        seed: int,
    ) -> None:
        self.threat, self.model, self.data = threat, model, data
        self.starts = range(0, n, batch_size)
        self.n, self.batch_size = n, batch_size
        self.seed = threat.seed_for(seed, model_name)
        self.device = torch.device("cpu") if model is None else module_device(model)
        self.made: Batches = []
        self.seconds = 0.0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i, start in enumerate(self.starts):
            if i == len(self.made):
                self.made.append(self._make(start))
            yield self.made[i]

    def _make(self, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        t0 = time.perf_counter()
        idx = slice(start, min(start + self.batch_size, self.n))
        images, labels = self.data.to_float(idx).to(self.device), self.data.labels[idx]
        images = self.threat.apply(self.model, images, labels, seed=self.seed, offset=start)
        self.seconds += time.perf_counter() - t0
        return images, labels


def _head_of(defense, model: SplitClassifier):
    """The head a defence measures through: capped for ``rate_cap`` (its budget from the
    model's clean payload), the model's own otherwise."""
    from entroguard.defenses.rate_cap import RateCap

    return defense.applied(model) if isinstance(defense, RateCap) else nullcontext()


@dataclass
class Measurer:
    """Loads models once and measures tasks.

    Attributes:
        data: the campaign's images.
        batch_size: images per batch.
        seed: the campaign's seed.
        defense_params: hyper-parameters of the campaign's defences, by name.
        device: where models, threats and defences run (``cpu``, ``cuda:0``).
        overlap: code each batch on a background thread while the device works on the next
            (:mod:`entroguard.campaign.coding_lane`); ``None``: on CUDA devices only.
    """

    data: ImageSet
    batch_size: int
    seed: int
    defense_params: dict[str, dict] = field(default_factory=dict)
    device: str = "cpu"
    overlap: bool | None = None
    _models: dict[str, SplitClassifier] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        enabled = overlap_by_default(self.device) if self.overlap is None else self.overlap
        self.lane = CodingLane(enabled)

    @property
    def args(self) -> tuple:
        """The constructor's arguments: a worker process or actor builds its own measurer
        from them (the loaded models stay with each)."""
        return (self.data, self.batch_size, self.seed, self.defense_params, self.device,
                self.overlap)  # fmt: skip

    def model(self, ref: ModelRef) -> SplitClassifier:
        """``ref`` loaded (once per process), after checking its input size."""
        if ref.name not in self._models:
            model = ref.load().to(self.device)
            # The coder tables are large Python lists; without this, every full collection of
            # the cyclic GC rescans them and per-image coding runs 5-20x slower.
            gc.freeze()
            if tuple(model.spec.input_size) != self.data.image_size:
                raise InputError(
                    f"{ref.name} takes {tuple(model.spec.input_size)} images but the dataset has "
                    f"{self.data.image_size}; pick a dataset of the model's input size"
                )
            self._models[ref.name] = model
        return self._models[ref.name]

    def defense(self, threat: Threat, name: str):
        """The defence measured for ``threat`` (None for ``none``): an attack through a
        defence brings the parameters it attacked; any other is the campaign's."""
        from entroguard.defenses import build_defense

        if name == "none":
            return None
        if threat.adapts_to == name and "defense_params" in threat.params:
            return build_defense(name, **threat.params["defense_params"])
        return build_defense(name, **self.defense_params.get(name, {}))

    def shared_batches(self, threat: Threat, n: int) -> Batches:
        """The first ``n`` images under a threat that does not depend on the model (clean, a
        corruption), made now: every model of the campaign measures the same ones."""
        return list(ThreatenedBatches(threat, None, "", self.data, n, self.batch_size, self.seed))

    def params_json(self, threat: Threat, defense: str) -> str:
        """The condition's ``params`` column: the threat's, plus the defence's own."""
        params = dict(threat.params)
        if defense in self.defense_params and "defense_params" not in params:
            params["defense_params"] = self.defense_params[defense]
        return json.dumps(params, sort_keys=True)

    def run(self, task: Task) -> list[ConditionResult]:
        """Threaten (unless the task brings its images) and measure behind each defence.

        The images are threatened batch by batch during the first defence's pass, so that the
        coding lane codes one batch while the device attacks the next; later passes reuse them.
        """
        model = self.model(task.ref)
        if task.batches is not None:
            source: Batches | ThreatenedBatches = task.batches
        else:
            source = ThreatenedBatches(task.threat, model, task.ref.name, self.data, task.n,
                                       self.batch_size, self.seed)  # fmt: skip
        return [self._measure(model, task, name, source) for name in task.defenses]

    def _measure(
        self,
        model: SplitClassifier,
        task: Task,
        name: str,
        source: Batches | ThreatenedBatches,
    ) -> ConditionResult:
        """One condition: ``source``'s images behind the defence ``name``; its seconds are the
        threat's plus this defence's."""
        threat_before = getattr(source, "seconds", 0.0)
        t0 = time.perf_counter()
        d = self.defense(task.threat, name)
        with _head_of(d, model):
            pending: list = []
            try:
                for x, y in source:
                    x = x.to(self.device)
                    analyzed = analyze_batch(model, x if d is None else d(model, x))
                    pending.append(self.lane.submit(code_batch, model, analyzed, y))
                    raise_failed(pending)
            finally:
                wait_all(pending)  # every job done before the head is restored
            parts = results(pending)
        threat_seconds = getattr(source, "seconds", 0.0)
        own = time.perf_counter() - t0 - (threat_seconds - threat_before)
        return ConditionResult(
            ConditionId(task.ref.name, task.threat.name, task.threat.strength, name),
            task.ref.info(),
            self.params_json(task.threat, name),
            task.n,
            Measurement.concat(parts),
            threat_seconds + own,
        )
