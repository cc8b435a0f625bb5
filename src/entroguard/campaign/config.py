"""Campaign configuration: YAML (safe loader, no code) -> a validated ``CampaignConfig``.

Example::

    dataset: fashion-mnist        # or cifar10, folder:PATH
    n_images: 256                 # the first N test images
    batch_size: 128
    seed: 0
    models: zoo                   # or a list of zoo names / checkpoint paths
    defenses: [none]
    threats:
      - clean
      - corruption: all           # or a list of ImageNet-C names
        severities: [1, 2, 3, 4, 5]
      - attack: rate_pgd
        eps: [2, 4, 8, 16, 32]    # in grey levels (eps x 255)
        n_images: 64              # optional: fewer images for the costly attacks
        params: {steps: 20, noise_copies: 16}
      - attack: rate_pgd_through  # adaptive: measured behind the defence it adapts to
        eps: [8]
        params: {defense: object_tv}

Every error names the offending key, e.g. ``threats[2].eps: expected a list of numbers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from entroguard.threats.threat import CORRUPTION_PREFIX, Threat, attack_registry


class ConfigError(ValueError):
    """A campaign configuration error; the message starts with the offending key."""


@dataclass(frozen=True)
class ThreatGroup:
    """Threats measured on the same number of images."""

    threats: tuple[Threat, ...]
    n_images: int | None = None


@dataclass
class CampaignConfig:
    """A validated campaign grid."""

    models: list[str] | str = "zoo"
    threat_groups: list[ThreatGroup] = field(default_factory=list)
    defenses: list[str] = field(default_factory=lambda: ["none"])
    dataset: str = "fashion-mnist"
    n_images: int = 256
    batch_size: int = 128
    seed: int = 0

    @property
    def threats(self) -> list[tuple[Threat, int]]:
        """Every threat with its number of images, clean first."""
        out = []
        for group in self.threat_groups:
            n = min(group.n_images or self.n_images, self.n_images)
            out += [(t, n) for t in group.threats]
        return sorted(out, key=lambda tn: tn[0].kind != "clean")


TOP_KEYS = {"models", "threats", "defenses", "dataset", "n_images", "batch_size", "seed"}


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


def _parse_threat(item: Any, key: str) -> ThreatGroup:
    from entroguard.threats.corruptions import CORRUPTIONS

    ATTACKS = attack_registry()

    if item == "clean":
        return ThreatGroup((Threat("clean"),))
    if not isinstance(item, dict):
        raise ConfigError(f"{key}: expected 'clean' or a mapping, got {item!r}")
    n_images = item.get("n_images")
    if n_images is not None:
        n_images = _positive_int(n_images, f"{key}.n_images")
    if "corruption" in item:
        unknown = set(item) - {"corruption", "severities", "n_images"}
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
        return ThreatGroup(threats, n_images)
    if "attack" in item:
        unknown = set(item) - {"attack", "eps", "params", "n_images"}
        if unknown:
            raise ConfigError(f"{key}.{sorted(unknown)[0]}: unknown key for an attack entry")
        name = item["attack"]
        if name not in ATTACKS:
            raise ConfigError(f"{key}.attack: unknown attack {name!r}; known: {', '.join(ATTACKS)}")
        eps = _number_list(item.get("eps", [2, 4, 8, 16, 32]), f"{key}.eps")
        params = item.get("params", {}) or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{key}.params: expected a mapping")
        try:
            ATTACKS[name](eps=eps[0] / 255, **params)
        except TypeError as exc:
            raise ConfigError(f"{key}.params: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"{key}.params: {exc}") from exc
        return ThreatGroup(tuple(Threat(name, e, dict(params)) for e in eps), n_images)
    raise ConfigError(f"{key}: expected a 'corruption' or an 'attack' key, or 'clean'")


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
    if models != "zoo" and not (
        isinstance(models, list) and models and all(isinstance(m, str) for m in models)
    ):
        raise ConfigError("models: expected 'zoo' or a list of model names / checkpoint paths")
    cfg.models = models
    threats = raw.get("threats")
    if not isinstance(threats, list) or not threats:
        raise ConfigError("threats: expected a non-empty list")
    cfg.threat_groups = [_parse_threat(t, f"threats[{i}]") for i, t in enumerate(threats)]
    if not any(t.name == "clean" for g in cfg.threat_groups for t in g.threats):
        cfg.threat_groups.insert(0, ThreatGroup((Threat("clean"),)))
    defenses = raw.get("defenses", ["none"]) or ["none"]
    if not isinstance(defenses, list) or not all(isinstance(d, str) for d in defenses):
        raise ConfigError("defenses: expected a list of defence names")
    if defenses != ["none"]:
        from entroguard.defenses import known_defenses

        for d in defenses:
            if d != "none" and d not in known_defenses():
                raise ConfigError(f"defenses: unknown defence {d!r}; known: {known_defenses()}")
    cfg.defenses = defenses if "none" in defenses else ["none", *defenses]
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
