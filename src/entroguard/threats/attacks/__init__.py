"""White-box attacks on split models: rate PGD, classifier PGD and random sign noise.

Every attack is called as ``attack(model, images, labels=None, generator=None)`` on a batch
of images (B, 3, H, W) in [0, 1] and returns the attacked batch, in [0, 1] and within its
budget (see :mod:`entroguard.threats.attacks.base` for the full contract). Campaigns build
them by name with the budget in grey levels::

    >>> attack = build_attack("rate_pgd", 8)  # RatePGD(eps=8/255, ...)
"""

from __future__ import annotations

import difflib

from entroguard.threats.attacks.base import Attack, PGDAttack, frozen_eval
from entroguard.threats.attacks.clf_pgd import ClassifierPGD
from entroguard.threats.attacks.noise import SignNoise
from entroguard.threats.attacks.projection import NORMS, Norm
from entroguard.threats.attacks.rate_pgd import RatePGD, rate_bits

__all__ = [
    "ATTACKS",
    "NORMS",
    "Attack",
    "ClassifierPGD",
    "Norm",
    "PGDAttack",
    "RatePGD",
    "SignNoise",
    "build_attack",
    "frozen_eval",
    "rate_bits",
]

#: Attack classes by the name used in campaign configs and result rows (``threat`` column).
ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (RatePGD, ClassifierPGD, SignNoise)}


def build_attack(name: str, eps_255: float, **kwargs) -> Attack:
    """Build the attack ``name`` with budget ``eps_255 / 255`` and its other ``kwargs``.

    Args:
        name: a key of :data:`ATTACKS` (``"rate_pgd"``, ``"clf_pgd"``, ``"noise"``).
        eps_255: budget in grey levels (the ``strength`` of a result row), e.g. 8.
        kwargs: the attack's other hyper-parameters (steps, step_ratio or alpha, norm, ...).
    """
    if name not in ATTACKS:
        close = difflib.get_close_matches(name, ATTACKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown attack {name!r}: choose one of {', '.join(ATTACKS)}{hint}")
    return ATTACKS[name](eps=float(eps_255) / 255.0, **kwargs)
