"""Shared fixtures: small split models with seeded random weights, ready to code."""

from __future__ import annotations

import pytest
from eg_testutil import PRIORS, SMALL_ARCHS, run_tiny_campaign, seeded_model

from entroguard.models import SplitClassifier


@pytest.fixture(scope="session", params=[(a, p) for a in SMALL_ARCHS for p in PRIORS],
                ids=lambda ap: f"{ap[0]}-{ap[1]}")  # fmt: skip
def small_model(request) -> SplitClassifier:
    return seeded_model(*request.param)


@pytest.fixture(scope="session")
def tiny_campaign(tmp_path_factory):
    """A finished campaign folder: two seeded models, clean, corruptions and two attacks
    (:func:`eg_testutil.run_tiny_campaign`), shared by the report tests."""
    return run_tiny_campaign(tmp_path_factory.mktemp("campaign"))
