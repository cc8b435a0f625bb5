"""Defences: pre-processors applied on the device before the head codes the image."""

from __future__ import annotations

DEFENSES: dict[str, type] = {}


def known_defenses() -> list[str]:
    """Names accepted in a campaign's ``defenses`` list (besides ``none``)."""
    return sorted(DEFENSES)
