"""Fixtures shared by the defence and adaptive-attack tests (see ``defense_helpers``)."""

from __future__ import annotations

import pytest
import torch
from defense_helpers import sample_images, trained_model, untrained_models

from entroguard.models import SplitClassifier


@pytest.fixture
def trained() -> SplitClassifier:
    return trained_model()


@pytest.fixture
def untrained() -> dict[str, SplitClassifier]:
    return untrained_models()


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    return sample_images()
