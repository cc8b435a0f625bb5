"""Finding a model by zoo name or path, and its clean payload statistics."""

from __future__ import annotations

import pytest
from serve_helpers import save_model

from entroguard.errors import CheckpointError
from entroguard.serve.resolve import (
    class_names,
    clean_stats_for,
    load_served_model,
    resolve_checkpoint,
)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, fp_model, fp_stats):
    folder = tmp_path_factory.mktemp("zoo")
    save_model(fp_model, folder / "resnet_s-fp-beta0.01", fp_stats)
    save_model(fp_model, folder / "bare", None)
    return folder


def test_resolve_by_path_and_by_zoo_name(zoo):
    name, path = resolve_checkpoint(zoo / "bare.safetensors")
    assert name == "bare" and path == zoo / "bare.safetensors"
    assert resolve_checkpoint(zoo / "bare")[1] == zoo / "bare.safetensors"
    name, path = resolve_checkpoint("resnet_s-fp-beta0.01", zoo)
    assert name == "resnet_s-fp-beta0.01" and path.name == "resnet_s-fp-beta0.01.safetensors"


def test_unknown_name_lists_the_zoo(zoo, tmp_path):
    with pytest.raises(CheckpointError, match="Did you mean 'resnet_s-fp-beta0.01'"):
        resolve_checkpoint("resnet_s-fp-beta0.1", zoo)
    with pytest.raises(CheckpointError, match="no trained zoo"):
        resolve_checkpoint("anything", tmp_path / "empty")


def test_stats_stored_or_clear_error(zoo, fp_stats, fp_model):
    served = load_served_model("resnet_s-fp-beta0.01", zoo)
    assert served.model.fingerprint == fp_model.fingerprint
    assert served.classes[0] == "T-shirt/top"
    assert clean_stats_for(served) == fp_stats
    bare = load_served_model(zoo / "bare")
    bare.metadata.pop("dataset")
    with pytest.raises(CheckpointError, match="no clean payload statistics"):
        clean_stats_for(bare)
    bare.metadata["clean_payload"] = {"n": 3}
    with pytest.raises(CheckpointError, match="lacks"):
        clean_stats_for(bare)


def test_class_names():
    assert class_names({"classes": ["a", "b"]}, 2) == ["a", "b"]
    assert class_names({"dataset": "cifar10"}, 3) == ["0", "1", "2"]
