"""Campaign configuration: YAML (safe loader, no code) -> a validated ``CampaignConfig``.

Example::

    dataset: fashion-mnist        # or cifar10, folder:PATH
    n_images: 256                 # the first N test images
    batch_size: 128
    seed: 0
    models: zoo                   # or a list of zoo names / checkpoint paths
    defenses:                     # measured after every threat unless an entry says otherwise
      - none
      - object_tv: {tv_weight: 0.1, steps: 100}   # a name, or a name with its parameters
      - jpeg
    threats:
      - clean
      - corruption: all           # or a list of ImageNet-C names
        severities: [1, 2, 3, 4, 5]
        defenses: [none]          # optional: this entry's defences (a subset of the above)
      - attack: rate_pgd
        eps: [2, 4, 8, 16, 32]    # in grey levels (eps x 255)
        n_images: 64              # optional: fewer images for the costly attacks
        params: {steps: 20, noise_copies: 16}
      - attack: rate_pgd_through  # adaptive: measured behind the defence it adapts to
        eps: [8]
        params: {defense: object_tv}
        models: ["*-beta0.01"]    # optional: model names or shell-style patterns
    leak:                         # optional: label recovery (see campaign.leak_config)
      - protections: [none, keyed_noise]
        probes: [linear, mlp]
        shadow_images: 3000

Every error names the offending key, e.g. ``threats[2].eps: expected a list of numbers``.
An adaptive attack through a defence attacks it with the campaign's parameters for that
defence unless its own ``params.defense_params`` say otherwise.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from entroguard.campaign.leak_config import LeakEntry, parse_leak
from entroguard.threats.threat import CORRUPTION_PREFIX, Threat, attack_registry
from entroguard.train.zoo import ZOO_SELECTORS


class ConfigError(ValueError):
    """A campaign configuration error; the message starts with the offending key."""


@dataclass(frozen=True)
class ThreatGroup:
    """One ``threats`` entry: threats measured on the same images, models and defences.

    Attributes:
        threats: the entry's conditions (one per strength).
        n_images: fewer images than the campaign's ``n_images`` (None: all of them).
        defenses: the entry's defences (None: the campaign's list).
        models: model names or shell-style patterns (None: every model of the campaign).
        key: where the entry is in the config (``threats[3]``), for error messages.
    """

    threats: tuple[Threat, ...]
    n_images: int | None = None
    defenses: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    key: str = "threats"

    def selects(self, model_name: str) -> bool:
        """Whether this entry is measured on ``model_name``."""
        return self.models is None or any(fnmatch.fnmatchcase(model_name, p) for p in self.models)


@dataclass
class CampaignConfig:
    """A validated campaign grid."""

    models: list[str] | str = "zoo"
    threat_groups: list[ThreatGroup] = field(default_factory=list)
    defenses: list[str] = field(default_factory=lambda: ["none"])
    defense_params: dict[str, dict] = field(default_factory=dict)
    dataset: str = "fashion-mnist"
    n_images: int = 256
    batch_size: int = 128
    seed: int = 0
    leak: list[LeakEntry] = field(default_factory=list)

    def conditions(self) -> list[PlannedThreat]:
        """Every threat with its images, defences and entry, clean first."""
        out = []
        for group in self.threat_groups:
            n = min(group.n_images or self.n_images, self.n_images)
            for t in group.threats:
                if t.adapts_to is not None:
                    defenses = (t.adapts_to,)
                elif group.defenses is not None:
                    defenses = group.defenses
                else:
                    defenses = tuple(self.defenses)
                out.append(PlannedThreat(t, n, defenses, group))
        return sorted(out, key=lambda p: p.threat.kind != "clean")


@dataclass(frozen=True)
class PlannedThreat:
    """A threat as the campaign measures it: on ``n`` images, behind each of ``defenses``
    (an adaptive attack only behind the defence it adapts to), on the models its ``group``
    selects."""

    threat: Threat
    n: int
    defenses: tuple[str, ...]
    group: ThreatGroup


TOP_KEYS = {"models", "threats", "defenses", "dataset", "n_images", "batch_size", "seed", "leak"}


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
    return value


def _number_list(value: Any, key: str) -> list[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: expected a list of numbers, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"{key}: expected non-negative numbers, got {v!r}")
    return [float(v) for v in value]


ENTRY_KEYS = {"n_images", "defenses", "models"}


def _eps_list(value: Any, key: str) -> list[float]:
    """Attack budgets in grey levels (eps x 255): numbers (``8``) or strings ``"8/255"``.

    A value between 0 and 1 is refused: it reads like a [0, 1] budget (0.03 would attack with
    0.03 grey levels, nothing at all).
    """
    items = value if isinstance(value, list) else [value]
    parsed = []
    for v in items:
        if isinstance(v, str) and v.replace(" ", "").endswith("/255"):
            number = v.replace(" ", "")[: -len("/255")]
            try:
                v = float(number)
            except ValueError:
                raise ConfigError(f"{key}: {v!r} is not a budget like '8/255'") from None
        parsed.append(v)
    eps = _number_list(parsed, key)
    for e in eps:
        if 0 < e < 1:
            raise ConfigError(
                f"{key}: {e:g} is below one grey level; eps in YAML is in grey levels "
                f"(eps x 255, e.g. 8, or '8/255'): for a [0, 1] budget of {e:g} write "
                f"{e * 255:.3g}"
            )
        if e > 255:
            raise ConfigError(f"{key}: {e:g} grey levels is more than the whole 0-255 range")
    return eps


def _name_list(value: Any, key: str, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: expected a non-empty list of {what}, got {value!r}")
    return tuple(value)


def _entry_scope(item: dict, key: str) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """An entry's optional ``defenses`` and ``models`` lists (checked against the campaign's
    defences and models later, when both are known)."""
    defenses = item.get("defenses")
    if defenses is not None:
        defenses = _name_list(defenses, f"{key}.defenses", "defence names")
    models = item.get("models")
    if models is not None:
        models = _name_list(models, f"{key}.models", "model names or patterns")
    return defenses, models


def _parse_defenses(raw: Any) -> tuple[list[str], dict[str, dict]]:
    """The top-level ``defenses`` list: names, or one-key mappings ``{name: {params}}``."""
    from entroguard.defenses import build_defense, known_defenses

    if raw is None:
        return ["none"], {}
    if not isinstance(raw, list):
        raise ConfigError("defenses: expected a list of defence names")
    names: list[str] = []
    params: dict[str, dict] = {}
    for i, entry in enumerate(raw):
        key = f"defenses[{i}]"
        if isinstance(entry, dict) and len(entry) == 1:
            ((name, p),) = entry.items()
            p = p or {}
            if not isinstance(p, dict):
                raise ConfigError(f"{key}.{name}: expected a mapping of parameters, got {p!r}")
        elif isinstance(entry, str):
            name, p = entry, {}
        else:
            raise ConfigError(f"{key}: expected a defence name or {{name: {{params}}}}")
        if name != "none" and name not in known_defenses():
            raise ConfigError(f"{key}: unknown defence {name!r}; known: {known_defenses()}")
        if name in names:
            raise ConfigError(f"{key}: defence {name!r} is listed twice")
        if name != "none":
            try:
                build_defense(name, **p)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{key}.{name}: {exc}") from exc
            if p:
                params[name] = dict(p)
        names.append(name)
    return (names if "none" in names else ["none", *names]), params


def _with_deployed_defense(group: ThreatGroup, cfg: CampaignConfig) -> ThreatGroup:
    """An attack through a defence attacks it as the campaign deploys it: the campaign's
    parameters for that defence, unless the entry gives its own ``defense_params``."""
    threats = []
    for t in group.threats:
        attack = attack_registry().get(t.name)
        adapts_to = t.adapts_to
        takes_params = attack is not None and "defense_params" in getattr(attack, "hparams", ())
        if takes_params and adapts_to in cfg.defense_params and "defense_params" not in t.params:
            t = Threat(
                t.name, t.strength, {**t.params, "defense_params": cfg.defense_params[adapts_to]}
            )
        threats.append(t)
    return ThreatGroup(tuple(threats), group.n_images, group.defenses, group.models, group.key)


def _check_scope(group: ThreatGroup, cfg: CampaignConfig) -> None:
    for d in group.defenses or ():
        if d not in cfg.defenses:
            raise ConfigError(
                f"{group.key}.defenses: {d!r} is not one of the campaign's defences "
                f"({', '.join(cfg.defenses)}); add it to the top-level defenses list"
            )
    if group.defenses is not None and any(t.adapts_to for t in group.threats):
        raise ConfigError(
            f"{group.key}.defenses: an adaptive attack is measured behind the defence it adapts "
            "to; set params.defense instead"
        )


def _parse_threat(item: Any, key: str) -> ThreatGroup:
    from entroguard.threats.corruptions import CORRUPTIONS

    ATTACKS = attack_registry()

    if item == "clean":
        return ThreatGroup((Threat("clean"),), key=key)
    if not isinstance(item, dict):
        raise ConfigError(f"{key}: expected 'clean' or a mapping, got {item!r}")
    n_images = item.get("n_images")
    if n_images is not None:
        n_images = _positive_int(n_images, f"{key}.n_images")
    scope = _entry_scope(item, key)
    if "corruption" in item:
        unknown = set(item) - {"corruption", "severities", *ENTRY_KEYS}
        if unknown:
            raise ConfigError(f"{key}.{sorted(unknown)[0]}: unknown key for a corruption entry")
        names = item["corruption"]
        names = list(CORRUPTIONS) if names == "all" else names
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list):
            raise ConfigError(f"{key}.corruption: expected 'all' or a list of names")
        for n in names:
            if n not in CORRUPTIONS:
                raise ConfigError(
                    f"{key}.corruption: unknown corruption {n!r}; known: {', '.join(CORRUPTIONS)}"
                )
        severities = _number_list(item.get("severities", [1, 2, 3, 4, 5]), f"{key}.severities")
        for s in severities:
            if s not in (1, 2, 3, 4, 5):
                raise ConfigError(f"{key}.severities: severities are 1-5, got {s:g}")
        threats = tuple(Threat(CORRUPTION_PREFIX + n, s) for n in names for s in severities)
        return ThreatGroup(threats, n_images, *scope, key)
    if "attack" in item:
        unknown = set(item) - {"attack", "eps", "params", *ENTRY_KEYS}
        if unknown:
            raise ConfigError(f"{key}.{sorted(unknown)[0]}: unknown key for an attack entry")
        name = item["attack"]
        if name not in ATTACKS:
            raise ConfigError(f"{key}.attack: unknown attack {name!r}; known: {', '.join(ATTACKS)}")
        eps = _eps_list(item.get("eps", [2, 4, 8, 16, 32]), f"{key}.eps")
        params = item.get("params", {}) or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{key}.params: expected a mapping")
        try:
            ATTACKS[name](eps=eps[0] / 255, **params)
        except TypeError as exc:
            raise ConfigError(f"{key}.params: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"{key}.params: {exc}") from exc
        return ThreatGroup(tuple(Threat(name, e, dict(params)) for e in eps), n_images, *scope, key)
    raise ConfigError(f"{key}: expected a 'corruption' or an 'attack' key, or 'clean'")


def _parse_threats(threats: Any, leak_only: bool) -> list[ThreatGroup]:
    """The ``threats`` list, clean first; a campaign of ``leak`` entries alone may omit it (its
    models are then measured clean, the reference of their payload and top-1)."""
    if threats is None and leak_only:
        threats = ["clean"]
    if not isinstance(threats, list) or not threats:
        raise ConfigError("threats: expected a non-empty list (or leave it out and give leak)")
    groups = [_parse_threat(t, f"threats[{i}]") for i, t in enumerate(threats)]
    if not any(t.name == "clean" for g in groups for t in g.threats):
        groups.insert(0, ThreatGroup((Threat("clean"),)))
    return groups


def parse_config(raw: Any, source: str = "config") -> CampaignConfig:
    """Validate a parsed YAML document."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise ConfigError(
            f"{sorted(unknown)[0]}: unknown key; known: {', '.join(sorted(TOP_KEYS))}"
        )
    cfg = CampaignConfig()
    models = raw.get("models", "zoo")
    keyword = isinstance(models, str) and models in ZOO_SELECTORS
    if not keyword and not (
        isinstance(models, list) and models and all(isinstance(m, str) for m in models)
    ):
        raise ConfigError(
            f"models: expected one of {', '.join(ZOO_SELECTORS)} or a list of model names / "
            "checkpoint paths"
        )
    cfg.models = models
    cfg.leak = parse_leak(raw.get("leak"))
    cfg.threat_groups = _parse_threats(raw.get("threats"), leak_only=bool(cfg.leak))
    cfg.defenses, cfg.defense_params = _parse_defenses(raw.get("defenses"))
    for group in cfg.threat_groups:
        _check_scope(group, cfg)
    cfg.threat_groups = [_with_deployed_defense(g, cfg) for g in cfg.threat_groups]
    if "dataset" in raw:
        if not isinstance(raw["dataset"], str):
            raise ConfigError("dataset: expected a name")
        cfg.dataset = raw["dataset"]
    for k in ("n_images", "batch_size"):
        if k in raw:
            setattr(cfg, k, _positive_int(raw[k], k))
    if "seed" in raw:
        if isinstance(raw["seed"], bool) or not isinstance(raw["seed"], int):
            raise ConfigError(f"seed: expected an integer, got {raw['seed']!r}")
        cfg.seed = raw["seed"]
    return cfg


def load_config(path: str | Path) -> CampaignConfig:
    """Read and validate a campaign YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: campaign config not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return parse_config(raw, str(path))
