"""One threat condition: a name from DESIGN.md's vocabulary, a strength and parameters.

Names: ``clean``, ``corruption/<imagenet-c name>`` (strength = severity 1-5), ``rate_pgd``,
``clf_pgd``, ``noise`` (strength = eps x 255), and later the adaptive attacks.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

from entroguard.models.split import SplitClassifier

CORRUPTION_PREFIX = "corruption/"


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
        from entroguard.threats.attacks import build_attack

        if model is None:
            raise ValueError(f"{self.name} is a white-box attack and needs the model")
        attack = build_attack(self.name, self.strength, **self.params)
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
    from entroguard.threats.attacks import ATTACKS

    if name not in ATTACKS:
        raise ValueError(
            f"unknown threat {name!r}; known: clean, corruption/<name>, {', '.join(ATTACKS)}"
        )
    return name
