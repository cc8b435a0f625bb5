"""The campaign's progress bar: weighted by what each condition costs, named readably.

Counting images makes a bar that races through corruptions and then stalls for hours on the
attacks: a rate-PGD image costs its ``steps x noise_copies`` forward and backward passes on
top of being measured. Here each condition advances the bar by an estimate of its cost, in
units of one image measured once (defended, coded, decoded, classified), so the time left
that tqdm shows is weighted by cost.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from entroguard.campaign.measurer import ConditionResult, Task
from entroguard.campaign.store import ConditionId

ATTACK_PASS_COST = 0.5
"""One attack pass (forward and backward through the model, one image, one noise copy)
relative to measuring the image once."""
CORRUPTION_COST = 1.0
"""Corrupting one image relative to measuring it once."""


def task_cost(task: Task) -> float:
    """Estimated cost of ``task``: its images, times the threat's making plus one measurement
    per defence."""
    threat = task.threat
    making = 0.0
    if threat.kind == "corruption":
        making = CORRUPTION_COST
    elif threat.kind == "attack":
        steps = int(threat.params.get("steps", 20))
        copies = max(1, int(threat.params.get("noise_copies", 16)))
        making = ATTACK_PASS_COST * steps * copies
    return task.n * (making + len(task.defenses))


def condition_name(cid: ConditionId) -> str:
    """``model · threat · defence`` as a reader says it: ``fog s3``, ``rate_pgd eps 8/255``."""
    threat = cid.threat
    if threat.startswith("corruption/"):
        threat = f"{threat.removeprefix('corruption/')} s{cid.strength:g}"
    elif threat != "clean":
        threat = f"{threat} eps {cid.strength:g}/255"
    defense = "undefended" if cid.defense == "none" else cid.defense
    return f"{cid.model} · {threat} · {defense}"


class CampaignProgress:
    """A tqdm bar over ``tasks`` in cost units (shown as a percentage with time left)."""

    def __init__(self, tasks: list[Task], enabled: bool = True) -> None:
        self._per_result = {(t.ref.name, t.threat.name, t.threat.strength):
                            task_cost(t) / max(1, len(t.defenses)) for t in tasks}  # fmt: skip
        total = sum(task_cost(t) for t in tasks)
        self.bar = tqdm(total=total, desc="starting", disable=not enabled, dynamic_ncols=True,
                        bar_format="campaign {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"
                                   " {desc}")  # fmt: skip

    def done(self, result: ConditionResult) -> None:
        """Advance past one measured condition and show its name."""
        cid = result.cid
        self.bar.set_description_str(condition_name(cid), refresh=False)
        self.bar.update(self._per_result.get((cid.model, cid.threat, cid.strength), result.n))

    def close(self) -> None:
        self.bar.close()
