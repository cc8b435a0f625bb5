"""Checkpoints: safetensors + JSON, loaded without pickle, with clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from eg_testutil import seeded_images, seeded_model

from entroguard.errors import CheckpointError
from entroguard.train.checkpoint import load_checkpoint, read_metadata, save_checkpoint


def test_round_trip_keeps_fingerprint_and_bytes(tmp_path):
    model = seeded_model("mobilenetv2_s", "mshp")
    path = save_checkpoint(model, tmp_path / "m", beta=0.1, dataset="fashion-mnist")
    assert path.suffix == ".safetensors" and (tmp_path / "m.json").exists()
    loaded = load_checkpoint(path)
    assert loaded.fingerprint == model.fingerprint
    x = seeded_images(2)
    assert loaded.to_packets(x) == model.to_packets(x)
    meta = read_metadata(tmp_path / "m.json")
    assert meta["beta"] == 0.1 and meta["spec"]["arch"] == "mobilenetv2_s"


def test_no_coder_tables_and_no_pickle_in_the_file(tmp_path):
    path = save_checkpoint(seeded_model("resnet_s", "fp"), tmp_path / "m")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
    assert not any(k.endswith("_quantized_cdf") for k in keys)
    assert path.read_bytes()[:1] != b"\x80"  # not a pickle stream


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    save_checkpoint(seeded_model("resnet_s", "fp"), tmp_path / "m")
    with pytest.raises(CheckpointError, match="resnet_s model but a regnet_s"):
        load_checkpoint(tmp_path / "m.safetensors", expect_arch="regnet_s")
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["spec"]["arch"] = "regnet_s"
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not fit a regnet_s/fp model"):
        load_checkpoint(tmp_path / "m.safetensors")


def test_modified_weights_are_detected(tmp_path):
    from safetensors.torch import load_file, save_file

    path = save_checkpoint(seeded_model("resnet_s", "fp"), tmp_path / "m")
    state = load_file(str(path))
    key = next(k for k in state if k.endswith("weight"))
    state[key] = state[key] + 1e-3
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", ["missing_weights", "garbage_weights", "garbage_json"])
def test_broken_files_are_one_clear_error(tmp_path, damage):
    path = save_checkpoint(seeded_model("resnet_s", "fp"), tmp_path / "m")
    if damage == "missing_weights":
        path.unlink()
    elif damage == "garbage_weights":
        path.write_bytes(b"\x00" * 100)
    else:
        (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_dotted_names_keep_their_dots(tmp_path):
    """``beta0.01`` must not lose ``.01`` to a suffix rule (it once overwrote other betas)."""
    a = save_checkpoint(seeded_model("resnet_s", "fp"), tmp_path / "m-beta0.01")
    b = save_checkpoint(seeded_model("resnet_s", "fp", seed=1), tmp_path / "m-beta0.04")
    assert a.name == "m-beta0.01.safetensors" and b.name == "m-beta0.04.safetensors"
    assert load_checkpoint(a).fingerprint != load_checkpoint(b).fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m-beta0.01.json", "m-beta0.01.safetensors", "m-beta0.04.json", "m-beta0.04.safetensors"
    ]  # fmt: skip


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing.safetensors")


def test_save_is_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves no checkpoint under the final name."""
    import entroguard.train.checkpoint as ckpt

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(seeded_model("resnet_s", "fp"), tmp_path / "m")
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "m.json").exists()
    torch.manual_seed(0)
