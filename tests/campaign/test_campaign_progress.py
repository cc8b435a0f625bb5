"""The campaign's cost-weighted progress, readable condition names and terminal summary."""

from __future__ import annotations

from typer.testing import CliRunner

from entroguard.campaign.measurer import Task
from entroguard.campaign.progress import condition_name, task_cost
from entroguard.campaign.store import ConditionId
from entroguard.cli import app
from entroguard.threats.threat import Threat


class _Ref:
    name = "m"


def test_an_attack_weighs_its_passes_and_a_corruption_more_than_clean():
    clean = task_cost(Task(_Ref(), Threat("clean"), 10, ("none",)))
    fog = task_cost(Task(_Ref(), Threat("corruption/fog", 3), 10, ("none",)))
    attack = Threat("rate_pgd", 8, {"steps": 20, "noise_copies": 16})
    pgd = task_cost(Task(_Ref(), attack, 10, ("none", "object_tv")))
    assert clean == 10 and fog == 20
    assert pgd == 10 * (0.5 * 20 * 16 + 2)


def test_condition_names_read_as_people_say_them():
    assert (
        condition_name(ConditionId("m", "corruption/fog", 3, "none")) == "m · fog s3 · undefended"
    )
    assert condition_name(ConditionId("m", "rate_pgd", 8, "object_tv")) == (
        "m · rate_pgd eps 8/255 · object_tv")  # fmt: skip
    assert condition_name(ConditionId("m", "clean", 0, "none")) == "m · clean · undefended"


def test_the_campaign_ends_with_a_summary_table(tiny_zoo, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("n_images: 6\nbatch_size: 6\nthreats:\n  - clean\n"
                      "  - corruption: [gaussian_noise]\n    severities: [5]\n")  # fmt: skip
    result = CliRunner().invoke(app, ["campaign", str(config), "--out", str(tmp_path / "out"),
                                      "--zoo-dir", str(tiny_zoo), "--no-report"])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert "clean payload B" in lines[header] and "largest rise" in lines[header]
    body = lines[header + 2 : header + 4]
    models = sorted(p.stem for p in tiny_zoo.glob("*.safetensors"))
    assert sorted(line.split()[0] for line in body) == models
    assert all("gaussian_noise s5" in line for line in body)
