"""``leak`` entries of a campaign: label recovery measured on its models, as in ``entroguard leak``.

Example::

    leak:
      - protections: [none, keyed_noise, capr_noise]   # default: [none]
        points: [latent, g_s, stage2, logits]           # default: every point
        probes: [linear, mlp]                           # default: linear, mlp, cnn
        shadow_images: 30000    # the attacker's labelled images (second half of the training set)
        test_images: 1000       # the victim's first N test images (default: the campaign's)
        models: ["*-fp-*"]      # optional: model names or shell-style patterns

One measurement (a model under a protection) is the unit a campaign commits and resumes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from entroguard.privacy.keyed import KEYED_PROTECTIONS
from entroguard.privacy.points import POINTS
from entroguard.privacy.probes import PROBES
from entroguard.privacy.protection_view import PROTECTIONS

LEAK_KEYS = {"protections", "points", "probes", "shadow_images", "test_images", "models"}
DEFAULT_SHADOW_IMAGES = 30_000


@dataclass(frozen=True)
class LeakEntry:
    """One ``leak`` entry: what to measure, on which models, with how much data."""

    protections: tuple[str, ...] = ("none",)
    points: tuple[str, ...] = POINTS
    probes: tuple[str, ...] = PROBES
    shadow_images: int = DEFAULT_SHADOW_IMAGES
    test_images: int | None = None
    models: tuple[str, ...] | None = None
    key: str = "leak[0]"

    def selects(self, model_name: str) -> bool:
        """Whether this entry is measured on ``model_name``."""
        return self.models is None or any(fnmatch.fnmatchcase(model_name, p) for p in self.models)

    def unit_key(self, model: str, protection: str, n_test: int, seed: int) -> str:
        """Identity of one measurement: another set-up is another measurement, never a resume."""
        return (f"{model}|{protection}|shadow={self.shadow_images}|test={n_test}|seed={seed}|"
                f"points={','.join(self.points)}|probes={','.join(self.probes)}")  # fmt: skip


def check_protection_fits(entry: LeakEntry, model: str, prior: str, slimmable: bool) -> None:
    """``ValueError`` naming the entry when a keyed protection cannot run on this model."""
    for protection in entry.protections:
        keyed = KEYED_PROTECTIONS.get(protection)
        if keyed is not None and (prior not in keyed.priors or slimmable):
            raise ValueError(
                f"{entry.key}.protections: {protection} protects {'/'.join(keyed.priors)} "
                f"models (not slimmable), not {model}; give it its own entry with "
                f"models: {['*-' + p + '-*' for p in keyed.priors]}"
            )


def _names(value: Any, key: str, known: tuple[str, ...]) -> tuple[str, ...]:
    from entroguard.campaign.config import ConfigError

    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: expected a non-empty list of names from {', '.join(known)}")
    for v in value:
        if v not in known:
            raise ConfigError(f"{key}: unknown {v!r}; known: {', '.join(known)}")
    return tuple(dict.fromkeys(value))


def _parse_entry(item: Any, key: str) -> LeakEntry:
    from entroguard.campaign.config import ConfigError, _entry_scope, _positive_int

    if not isinstance(item, dict):
        raise ConfigError(f"{key}: expected a mapping (protections, points, probes, ...)")
    unknown = set(item) - LEAK_KEYS
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}: unknown key; known: "
                          f"{', '.join(sorted(LEAK_KEYS))}")  # fmt: skip
    test_images = item.get("test_images")
    return LeakEntry(
        protections=_names(item.get("protections", ["none"]), f"{key}.protections", PROTECTIONS),
        points=_names(item.get("points", list(POINTS)), f"{key}.points", POINTS),
        probes=_names(item.get("probes", list(PROBES)), f"{key}.probes", PROBES),
        shadow_images=_positive_int(item.get("shadow_images", DEFAULT_SHADOW_IMAGES),
                                    f"{key}.shadow_images"),  # fmt: skip
        test_images=None if test_images is None else _positive_int(test_images,
                                                                   f"{key}.test_images"),
        models=_entry_scope(item, key)[1],
        key=key,
    )  # fmt: skip


def parse_leak(raw: Any) -> list[LeakEntry]:
    """The top-level ``leak`` value: one mapping or a list of them (None: no entries)."""
    from entroguard.campaign.config import ConfigError

    if raw is None:
        return []
    items = [raw] if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise ConfigError("leak: expected a mapping or a non-empty list of mappings")
    return [_parse_entry(item, f"leak[{i}]") for i, item in enumerate(items)]
