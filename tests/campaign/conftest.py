"""Fixtures shared by the campaign tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from eg_testutil import seeded_model

from entroguard.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> Path:
    zoo = tmp_path_factory.mktemp("zoo")
    for arch, prior in (("resnet_s", "fp"), ("regnet_s", "mshp")):
        save_checkpoint(seeded_model(arch, prior), zoo / f"{arch}-{prior}-beta0.01", beta=0.01,
                        dataset="fashion-mnist")  # fmt: skip
    return zoo
