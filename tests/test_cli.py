"""The ``entroguard`` command: help, import of sc2bench checkpoints, clear errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from entroguard.cli import app
from entroguard.models import build_model
from entroguard.models.sc2bench_import import sc2bench_state_dict
from entroguard.train.checkpoint import load_checkpoint

runner = CliRunner()


def test_help_lists_the_public_subcommands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("demo", "train", "zoo", "campaign", "report", "serve", "edge", "import"):
        assert cmd in result.output


def test_short_help_and_version():
    from entroguard import __version__

    assert runner.invoke(app, ["-h"]).output == runner.invoke(app, ["--help"]).output
    assert "Usage: entroguard leak" in runner.invoke(app, ["leak", "-h"]).output
    for flag in ("--version", "-V"):
        result = runner.invoke(app, [flag])
        assert result.exit_code == 0 and result.output == f"entroguard {__version__}\n"


@pytest.fixture(scope="module")
def sc2bench_file(tmp_path_factory):
    """A ResNet-50 FP checkpoint in sc2bench's key layout, and the model it came from."""
    torch.manual_seed(0)
    model = build_model("resnet50", "fp", 1000).eval()
    model.prepare_coding()
    path = tmp_path_factory.mktemp("sc2") / "sc2.safetensors"
    save_file({k: v.contiguous() for k, v in sc2bench_state_dict(model).items()}, str(path))
    return path, model


def test_import_sc2bench_checkpoint_round_trip(tmp_path, sc2bench_file):
    source, model = sc2bench_file
    result = runner.invoke(
        app,
        ["import", str(source), "--arch", "resnet50", "--prior", "fp",
         "--out", str(tmp_path / "ours"), "--beta", "0.08"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    loaded = load_checkpoint(tmp_path / "ours.safetensors")
    assert loaded.fingerprint == model.fingerprint


def test_import_of_the_wrong_architecture_is_one_clear_error(tmp_path, sc2bench_file):
    result = runner.invoke(
        app,
        ["import", str(sc2bench_file[0]), "--arch", "regnety6.4gf", "--prior", "fp",
         "--out", str(tmp_path / "ours")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output


def test_campaign_with_a_bad_config_names_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("threats:\n  - corruption: [fogg]\n")
    result = runner.invoke(app, ["campaign", str(cfg), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "threats[0].corruption" in result.output


def test_report_without_results_says_what_to_run(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "entroguard campaign" in result.output


def test_importing_entroguard_prints_no_warning_and_the_cli_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, entroguard.cli; assert 'torch' not in sys.modules, 'torch imported'; "
            "import entroguard.models, entroguard.codec, entroguard.serve.app")  # fmt: skip
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize("command", ["train", "zoo", "campaign", "report", "demo", "import",
                                     "analyze", "plan", "leak", "serve", "edge"])  # fmt: skip
def test_help_shows_no_python_types_and_enumerations_as_choices(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    for python_type in ("<bool>", "<list[", "<dict[", "Optional", "NoneType"):
        assert python_type not in result.output, python_type
    choices = {"train": "<fp|mshp|q8>", "serve": "<flag|refuse|off>", "import": "<fp|mshp>"}
    if command in choices:
        assert choices[command] in result.output


def test_train_one_model_distils_from_a_teacher_and_saves_it_measured(tmp_path):
    """``entroguard train --arch --prior --beta --teacher``: a short run saves a checkpoint
    that loads, records its training settings, and carries the clean payload statistics that
    ``rate_cap`` needs."""
    from entroguard.train.checkpoint import read_metadata
    from entroguard.train.zoo import default_zoo_dir

    teacher = default_zoo_dir() / "resnet_s-fp-beta0.01.safetensors"
    result = CliRunner().invoke(app, ["train", "--arch", "resnet_s", "--prior", "fp", "--beta",
                                      "0.16", "--epochs", "0.01", "--teacher", str(teacher),
                                      "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    path = tmp_path / "resnet_s-fp-beta0.16.safetensors"
    meta = read_metadata(path)
    assert meta["beta"] == 0.16 and meta["train"]["distill_weight"] > 0
    assert meta["clean_payload"]["n"] == 10000 and meta["metrics"]["n"] == 10000
    assert load_checkpoint(path).spec.prior == "fp"
