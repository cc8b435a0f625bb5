"""Shared fixtures: small split models with seeded random weights, ready to code."""

from __future__ import annotations

import pytest
from eg_testutil import PRIORS, SMALL_ARCHS, seeded_model

from entroguard.models import SplitClassifier


@pytest.fixture(scope="session", params=[(a, p) for a in SMALL_ARCHS for p in PRIORS],
                ids=lambda ap: f"{ap[0]}-{ap[1]}")  # fmt: skip
def small_model(request) -> SplitClassifier:
    return seeded_model(*request.param)
