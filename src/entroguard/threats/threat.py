"""One threat condition: a name from DESIGN.md's vocabulary, a strength and parameters.

Names: ``clean``, ``corruption/<imagenet-c name>`` (strength = severity 1-5), ``rate_pgd``,
``clf_pgd``, ``noise`` and the adaptive attacks ``rate_lowfreq``, ``rate_region``,
``rate_pgd_through`` (strength = eps x 255).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

from entroguard.models.split import SplitClassifier

CORRUPTION_PREFIX = "corruption/"


def attack_registry() -> dict[str, type]:
    """Every attack a campaign can name: the white-box attacks and the adaptive ones."""
    from entroguard.threats.adaptive import ADAPTIVE_ATTACKS
    from entroguard.threats.attacks import ATTACKS

    return {**ATTACKS, **ADAPTIVE_ATTACKS}


def build_threat_attack(name: str, eps_255: float, params: dict):
    """The attack ``name`` with budget ``eps_255 / 255`` and hyper-parameters ``params``."""
    registry = attack_registry()
    if name not in registry:
        raise ValueError(f"unknown attack {name!r}; known: {', '.join(registry)}")
    return registry[name](eps=float(eps_255) / 255.0, **params)


@dataclass(frozen=True)
class Threat:
    """A threat and its strength.

    Attributes:
        name: ``clean``, ``corruption/<name>`` or an attack name.
        strength: severity (1-5) for corruptions, eps x 255 for attacks, 0 for clean.
        params: the attack's other hyper-parameters (steps, noise_copies, ...).
    """

    name: str
    strength: float = 0.0
    params: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def kind(self) -> str:
        """``clean``, ``corruption`` or ``attack``."""
        if self.name == "clean":
            return "clean"
        return "corruption" if self.name.startswith(CORRUPTION_PREFIX) else "attack"

    @property
    def model_dependent(self) -> bool:
        """Whether the threatened images depend on the model (white-box attacks)."""
        return self.kind == "attack"

    @property
    def adapts_to(self) -> str | None:
        """The defence an adaptive attack is measured behind (its ``defense`` column), else
        ``None``."""
        if self.kind != "attack":
            return None
        from entroguard.threats.adaptive import ADAPTIVE_ATTACKS

        if self.name not in ADAPTIVE_ATTACKS:
            return None
        return build_threat_attack(self.name, self.strength, self.params).adapts_to

    def seed_for(self, base_seed: int, model_name: str = "") -> int:
        """A seed derived from the condition, so reruns and resumes give identical images."""
        owner = model_name if self.model_dependent else ""
        key = f"{base_seed}|{self.name}|{self.strength:g}|{owner}"
        return zlib.crc32(key.encode())

    def apply(
        self,
        model: SplitClassifier | None,
        images: Tensor,
        labels: Tensor,
        *,
        seed: int,
        offset: int,
    ) -> Tensor:
        """Threatened copy of ``images`` (B, 3, H, W) in [0, 1].

        ``offset`` is the dataset index of the first image, so an image is corrupted the same
        way whatever batch it lands in.
        """
        if self.kind == "clean":
            return images
        if self.kind == "corruption":
            from entroguard.threats.corruptions import corrupt_batch

            name = self.name[len(CORRUPTION_PREFIX) :]
            return corrupt_batch(images, name, int(self.strength), seed=seed, offset=offset)
        if model is None:
            raise ValueError(f"{self.name} is a white-box attack and needs the model")
        attack = build_threat_attack(self.name, self.strength, self.params)
        generator = torch.Generator(device=images.device).manual_seed(seed + offset)
        return attack(model, images, labels, generator)


CLEAN = Threat("clean", 0.0)


def corruption_threat(name: str, severity: int) -> Threat:
    """The threat ``corruption/<name>`` at ``severity`` (1-5)."""
    return Threat(CORRUPTION_PREFIX + name, float(severity))


def parse_threat_name(name: str) -> str:
    """Validate a threat name against the known corruptions and attacks; returns it."""
    if name == "clean":
        return name
    if name.startswith(CORRUPTION_PREFIX):
        from entroguard.threats.corruptions import CORRUPTIONS

        if name[len(CORRUPTION_PREFIX) :] not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
        return name
    attacks = attack_registry()
    if name not in attacks:
        raise ValueError(
            f"unknown threat {name!r}; known: clean, corruption/<name>, {', '.join(attacks)}"
        )
    return name
