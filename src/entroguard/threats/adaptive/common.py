"""Helpers shared by the adaptive attacks."""

from __future__ import annotations

import difflib


def check_defense_name(name: str) -> str:
    """Return ``name`` if it is a known defence (see ``entroguard.defenses``), else raise."""
    from entroguard.defenses import known_defenses

    known = known_defenses()
    if name not in known:
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown defence {name!r}: choose one of {', '.join(known)}{hint}")
    return name
