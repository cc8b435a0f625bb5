"""The report's view of a campaign: condition rows grouped by model, threat and defence.

Everything here is plain data (no plotting): which models, threats and defences were measured,
and the series the figures and tables draw (rate change in %, top-1 change in percentage points,
both against the same model's clean condition without defence, on the same images).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from entroguard.campaign.export import condition_rows
from entroguard.campaign.store import ConditionId, ResultStore
from entroguard.threats.corruptions import BLUR, CORRUPTIONS, DIGITAL, NOISE, WEATHER
from entroguard.threats.threat import CORRUPTION_PREFIX

#: Corruption families in the paper's order, each with its members in ImageNet-C order.
CORRUPTION_FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": NOISE,
    "blur": BLUR,
    "weather": WEATHER,
    "digital": DIGITAL,
}
#: Attacks in display order; attacks not listed here follow in order of appearance.
ATTACK_ORDER = ("rate_pgd", "clf_pgd", "noise", "rate_lowfreq", "rate_region")
ATTACK_TITLES = {
    "rate_pgd": "entropy attack (rate PGD)",
    "clf_pgd": "classifier attack (CE PGD)",
    "noise": "random sign noise",
    "rate_lowfreq": "adaptive low-frequency attack",
    "rate_region": "adaptive region attack",
}
ARCH_ORDER = ("resnet_s", "regnet_s", "mobilenetv2_s", "resnet50", "resnet101", "regnety_6.4gf")
PRIOR_ORDER = ("fp", "mshp", "q8")
PRIOR_TITLES = {"fp": "FP", "mshp": "MSHP", "q8": "Q8 (fixed rate)"}


def corruption_name(threat: str) -> str | None:
    """``"gaussian_noise"`` for ``"corruption/gaussian_noise"``, else None."""
    return threat[len(CORRUPTION_PREFIX) :] if threat.startswith(CORRUPTION_PREFIX) else None


def corruption_family(name: str) -> str:
    """``noise``, ``blur``, ``weather``, ``digital`` or ``other``."""
    for family, members in CORRUPTION_FAMILIES.items():
        if name in members:
            return family
    return "other"


def threat_family(threat: str) -> str:
    """``clean``, ``<family> corruptions`` or the attack's name."""
    name = corruption_name(threat)
    if name is not None:
        return f"{corruption_family(name)} corruptions"
    return threat


def family_label(family: str) -> str:
    """A threat family for display: attacks get the word "attack" (``noise`` is both)."""
    if family == "clean" or family.endswith(" corruptions"):
        return family
    return f"{family} attack"


def _order(values: Iterable[str], preferred: tuple[str, ...]) -> list[str]:
    seen = list(dict.fromkeys(values))
    rank = {v: i for i, v in enumerate(preferred)}
    return sorted(seen, key=lambda v: (rank.get(v, len(rank)), seen.index(v)))


@dataclass(frozen=True)
class Group:
    """Models sharing an architecture and an entropy model (they differ in beta)."""

    arch: str
    prior: str

    @property
    def label(self) -> str:
        return f"{self.arch} {PRIOR_TITLES.get(self.prior, self.prior)}"


@dataclass
class Series:
    """One group's values against strength: mean, min and max over its models (betas)."""

    group: Group
    strength: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_models: int


@dataclass
class Results:
    """A campaign's conditions, with helpers to slice them."""

    rows: list[dict]
    per_image_of: Callable[[str], dict[str, np.ndarray]] = field(repr=False)
    models: list[dict] = field(init=False)
    groups: list[Group] = field(init=False)

    def __post_init__(self) -> None:
        info: dict[str, dict] = {}
        for r in self.rows:
            info.setdefault(
                r["model"],
                {"name": r["model"], "arch": r["arch"], "prior": r["prior"], "beta": r["beta"]},
            )
        archs = _order((m["arch"] for m in info.values()), ARCH_ORDER)
        priors = _order((m["prior"] for m in info.values()), PRIOR_ORDER)
        self.models = sorted(
            info.values(),
            key=lambda m: (
                archs.index(m["arch"]),
                priors.index(m["prior"]),
                m["beta"] if m["beta"] is not None else float("inf"),
                m["name"],
            ),
        )
        self.groups = list(dict.fromkeys(Group(m["arch"], m["prior"]) for m in self.models))

    @classmethod
    def from_store(cls, store: ResultStore) -> Results:
        return cls(condition_rows(store), store.per_image)

    # -- what was measured -------------------------------------------------------------------

    @property
    def defenses(self) -> list[str]:
        return _order((r["defense"] for r in self.rows), ("none",))

    def threats(self, defense: str | None = "none") -> list[str]:
        """Threat names measured (with ``defense``; None: with any), in order of appearance."""
        return list(dict.fromkeys(r["threat"] for r in self.select(defense=defense)))

    def corruptions(self, defense: str | None = "none") -> list[str]:
        """Corruption names (without the prefix) measured with ``defense``, ImageNet-C order."""
        names = [n for t in self.threats(defense) if (n := corruption_name(t)) is not None]
        return _order(names, CORRUPTIONS)

    def attacks(self, defense: str | None = "none") -> list[str]:
        """Attack names measured with ``defense`` (None: with any), in display order."""
        names = [t for t in self.threats(defense) if t != "clean" and corruption_name(t) is None]
        return _order(names, ATTACK_ORDER)

    def models_of(self, group: Group) -> list[dict]:
        return [m for m in self.models if (m["arch"], m["prior"]) == (group.arch, group.prior)]

    def select(
        self,
        threat: str | None = None,
        *,
        strength: float | None = None,
        defense: str | None = "none",
        model: str | None = None,
    ) -> list[dict]:
        """Rows matching every given field (``defense`` defaults to ``none``)."""
        return [
            r
            for r in self.rows
            if (threat is None or r["threat"] == threat)
            and (strength is None or r["strength"] == strength)
            and (defense is None or r["defense"] == defense)
            and (model is None or r["model"] == model)
        ]

    def strengths(self, threat: str, defense: str | None = "none") -> list[float]:
        return sorted({r["strength"] for r in self.select(threat, defense=defense)})

    def clean(self, model: str) -> dict | None:
        rows = self.select("clean", model=model)
        return rows[0] if rows else None

    def n_images(self, threat: str) -> list[int]:
        """The distinct numbers of images ``threat`` was measured on."""
        return sorted({r["n"] for r in self.select(threat, defense=None)})

    # -- aggregates --------------------------------------------------------------------------

    def value(self, row: dict, metric: str) -> float | None:
        v = row.get(metric)
        return None if v is None else float(v)

    def mean_over_models(
        self, threat: str, strength: float, metric: str, defense: str = "none"
    ) -> float | None:
        """Mean of ``metric`` over every model measured in this condition."""
        vals = [
            v
            for r in self.select(threat, strength=strength, defense=defense)
            if (v := self.value(r, metric)) is not None
        ]
        return float(np.mean(vals)) if vals else None

    def group_series(self, threat: str, metric: str, defense: str = "none") -> list[Series]:
        """Per group: ``metric`` against strength, mean / min / max over the group's betas."""
        out = []
        for group in self.groups:
            names = {m["name"] for m in self.models_of(group)}
            by_strength: dict[float, list[float]] = {}
            for r in self.select(threat, defense=defense):
                v = self.value(r, metric)
                if r["model"] in names and v is not None:
                    by_strength.setdefault(r["strength"], []).append(v)
            if not by_strength:
                continue
            s = np.array(sorted(by_strength))
            vals = [np.array(by_strength[k]) for k in s]
            out.append(
                Series(
                    group,
                    s,
                    np.array([v.mean() for v in vals]),
                    np.array([v.min() for v in vals]),
                    np.array([v.max() for v in vals]),
                    len(names),
                )
            )
        return out

    def per_image(self, model: str, threat: str, strength: float, defense: str = "none"):
        """Per-image arrays of one condition (see :meth:`ResultStore.per_image`)."""
        return self.per_image_of(ConditionId(model, threat, strength, defense).key)

    def paired(
        self, model: str, threat: str, strength: float, defense: str = "none"
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per-image arrays of ``model``'s clean images (no defence) and of the same images
        under the condition, restricted to the images measured in both, in image order."""
        clean = self.per_image(model, "clean", 0.0)
        other = self.per_image(model, threat, strength, defense)
        common = np.intersect1d(clean["image"], other["image"])
        return _restrict(clean, common), _restrict(other, common)


def _restrict(arrays: dict[str, np.ndarray], images: np.ndarray) -> dict[str, np.ndarray]:
    """``arrays`` (per-image, with an ``image`` index) on ``images`` only."""
    keep = np.isin(arrays["image"], images)
    return {k: v[keep] for k, v in arrays.items()}
