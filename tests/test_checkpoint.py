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


def _file_state(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_coder_tables_are_stored_packed_and_used_as_stored(tmp_path, prior):
    model = seeded_model("resnet_s", prior)
    path = save_checkpoint(model, tmp_path / "m")
    assert path.read_bytes()[:1] != b"\x80"  # not a pickle stream
    state = _file_state(path)
    cdfs = [k for k in state if k.endswith("_quantized_cdf")]
    assert cdfs and all(state[k].dim() == 1 for k in cdfs)  # rows without their padding
    assert read_metadata(path)["format_version"] == 2
    loaded = load_checkpoint(path)
    for key, table in model.coder_tables().items():
        assert torch.equal(loaded.coder_tables()[key], table), key


def test_stored_tables_win_over_a_rebuild(tmp_path):
    """A machine that would rebuild other tables from the densities codes with the stored ones."""
    from safetensors.torch import save_file

    model = seeded_model("resnet_s", "fp")
    path = save_checkpoint(model, tmp_path / "m")
    state = _file_state(path)
    key = "codec.entropy_bottleneck._quantized_cdf"
    rebuilt = load_checkpoint(path).coder_tables()[key]
    state[key][1] += 1  # a table this machine would not build (still a valid CDF)
    save_file(state, str(path))
    meta = json.loads((tmp_path / "m.json").read_text())
    from entroguard.models.split import CODER_TABLE_SUFFIXES, tensors_digest

    tables = {k: v for k, v in state.items() if k.endswith(CODER_TABLE_SUFFIXES)}
    meta["tables_sha256"] = tensors_digest(tables)
    (tmp_path / "m.json").write_text(json.dumps(meta))
    loaded = load_checkpoint(path).coder_tables()[key]
    assert not torch.equal(loaded, rebuilt) and loaded[0, 1] == rebuilt[0, 1] + 1


def test_damaged_tables_are_one_clear_error(tmp_path):
    from safetensors.torch import save_file

    path = save_checkpoint(seeded_model("resnet_s", "mshp"), tmp_path / "m")
    state = _file_state(path)
    state["codec.gaussian_conditional._offset"][0] -= 1
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="coder tables do not match their digest"):
        load_checkpoint(path)


def test_format_1_checkpoints_without_tables_still_load(tmp_path):
    from safetensors.torch import save_file

    model = seeded_model("regnet_s", "mshp")
    path = save_checkpoint(model, tmp_path / "m")
    state = {k: v for k, v in _file_state(path).items() if k in model.learned_state()}
    save_file(state, str(path))
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["format_version"] = 1
    del meta["tables_sha256"]
    (tmp_path / "m.json").write_text(json.dumps(meta))
    x = seeded_images(2)
    assert load_checkpoint(path).to_packets(x) == model.to_packets(x)


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
