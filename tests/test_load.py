"""``entroguard.load``: zoo names and checkpoint paths, with a "did you mean"."""

from __future__ import annotations

import pytest
import torch
from eg_testutil import seeded_images, seeded_model

import entroguard
from entroguard.errors import CheckpointError
from entroguard.train.checkpoint import save_checkpoint


def test_a_zoo_name_loads_a_ready_model():
    model = entroguard.load("resnet_s-mshp-beta0.01")
    x = seeded_images(2)
    assert model.from_packets(model.to_packets(x)).shape == (2, 10)


def test_a_checkpoint_path_loads(tmp_path):
    model = seeded_model("regnet_s", "q8")
    path = save_checkpoint(model, tmp_path / "m")
    x = seeded_images(2)
    assert torch.equal(entroguard.load(path).from_packets(model.to_packets(x)),
                       model.from_packets(model.to_packets(x)))  # fmt: skip


def test_a_typo_is_one_error_with_the_closest_names():
    with pytest.raises(CheckpointError, match="did you mean .*resnet_s-mshp-beta0.01"):
        entroguard.load("resnet_s-mshp-beta0.1")
