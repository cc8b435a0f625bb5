"""``--device``: a device this machine has, or one clear error that says what to use."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from entroguard.cli import app
from entroguard.device import module_device, resolve_device
from entroguard.errors import InputError


def test_cpu_and_auto_resolve_here():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "mps", "tpu:0"])
def test_unknown_or_unsupported_devices_are_one_clear_error(name):
    with pytest.raises(InputError, match="cpu, cuda, cuda:N, or auto"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_says_to_use_the_cpu(name):
    with pytest.raises(InputError, match="no CUDA device; use --device cpu"):
        resolve_device(name)


def test_module_device_is_where_the_weights_are():
    assert module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")


@pytest.mark.parametrize("command", ["train", "campaign", "demo", "analyze", "leak", "serve",
                                     "edge"])  # fmt: skip
def test_every_computing_command_takes_a_device(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "--device" in result.output


@pytest.mark.parametrize("command", [
    ["train", "--arch", "resnet_s", "--epochs", "0.01"],
    ["serve", "--model", "resnet_s-fp-beta0.01", "--port", "0"],
    ["leak", "--model", "resnet_s-fp-beta0.01"],
])  # fmt: skip
def test_no_command_crashes_on_a_device_this_machine_lacks(command, tmp_path):
    missing = "cuda:7" if torch.cuda.device_count() < 8 else "mps"
    result = CliRunner().invoke(app, [*command, "--device", missing], catch_exceptions=False)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert f"device '{missing}'" in result.output


def test_images_reach_the_model_on_its_device():
    from eg_testutil import seeded_images, seeded_model

    from entroguard.measure import measure_batch

    model = seeded_model("resnet_s", "mshp")
    images = seeded_images(2)
    assert model.analyze(images).device == module_device(model)
    m = measure_batch(model, images, torch.tensor([0, 1]))
    assert m.n == 2 and (m.payload_bytes > 0).all()


def test_a_bad_device_stops_a_command_before_it_computes(tmp_path):
    result = CliRunner().invoke(app, ["analyze", "--model", "resnet_s-fp-beta0.01", "--out",
                                      str(tmp_path / "a"), "--device", "gpu"])  # fmt: skip
    assert result.exit_code != 0
    assert "unknown device 'gpu'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "a").exists()
