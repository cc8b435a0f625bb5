"""Fixtures for the server tests (helpers live in ``serve_helpers``)."""

from __future__ import annotations

import pytest
from eg_testutil import seeded_model
from serve_helpers import smooth_images, stats_of

from entroguard.models.split import SplitClassifier


@pytest.fixture(scope="session")
def fp_model() -> SplitClassifier:
    return seeded_model("resnet_s", "fp")


@pytest.fixture(scope="session")
def mshp_model() -> SplitClassifier:
    return seeded_model("resnet_s", "mshp")


@pytest.fixture(scope="session")
def fp_stats(fp_model) -> dict:
    return stats_of(fp_model, smooth_images(64, seed=1))


@pytest.fixture(scope="session")
def mshp_stats(mshp_model) -> dict:
    return stats_of(mshp_model, smooth_images(64, seed=1))
