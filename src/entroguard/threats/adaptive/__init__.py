"""Adaptive rate attacks: attacks designed against a defence (see ``entroguard.defenses``).

Every attack is called as ``attack(model, images, labels=None, generator=None)`` like the
attacks of :mod:`entroguard.threats.attacks`, and records the defence it adapts to in
``adapts_to`` (the ``defense`` column of results: the campaign measures its images after that
defence)::

    >>> attack = ADAPTIVE_ATTACKS["rate_lowfreq"](eps=8 / 255, fraction=0.1)
    >>> x_adv = attack(model, images)
    >>> attack.adapts_to
    'object_tv'
"""

from __future__ import annotations

from entroguard.threats.adaptive.lowfreq import RateLowFreq
from entroguard.threats.adaptive.region import RateRegion, high_rate_region
from entroguard.threats.adaptive.through import RatePGDThrough
from entroguard.threats.attacks.base import Attack

__all__ = [
    "ADAPTIVE_ATTACKS",
    "RateLowFreq",
    "RatePGDThrough",
    "RateRegion",
    "high_rate_region",
]

#: Adaptive attack classes by the name used in campaign configs and result rows.
ADAPTIVE_ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls for cls in (RateLowFreq, RateRegion, RatePGDThrough)
}
