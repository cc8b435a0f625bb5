"""BottleFit's two-stage recipe: what each stage trains, its losses, its teachers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from eg_testutil import seeded_images, seeded_model

from entroguard.data import load_dataset
from entroguard.errors import CheckpointError
from entroguard.models.uncut import UncutClassifier, stage_outputs
from entroguard.train.epochs import split_validation
from entroguard.train.recipes.bottlefit import (
    BottleFitConfig,
    fine_tuning_terms,
    head_distillation_terms,
    student_from_teacher,
    train_bottlefit,
)
from entroguard.train.teacher import load_teacher, save_teacher


def _teacher(arch: str = "resnet_s") -> UncutClassifier:
    torch.manual_seed(1)
    return UncutClassifier(arch).eval()


@pytest.fixture(scope="module")
def tiny_sets():
    train = load_dataset("fashion-mnist", "train").subset(320)
    return split_validation(train, 64)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_stage_1_trains_only_the_bottleneck(tiny_sets):
    teacher, student = _teacher(), seeded_model("resnet_s", "q8")
    student_from_teacher(student, teacher)
    tail, teach = _state(student.backbone_tail), _state(teacher)
    head = _state(student.encoder)
    config = BottleFitConfig(stages=("1",), stage1_epochs=1, batch_size=64)
    result = train_bottlefit(student, teacher, *tiny_sets, config, progress=False)
    for before, module in ((tail, student.backbone_tail), (teach, teacher)):
        after = module.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # parameters and BN stats
    assert any(not torch.equal(head[k], v) for k, v in student.encoder.state_dict().items())
    assert set(result.stage1[0]) == {"loss", "mse_split", "mse_stage1", "mse_stage2", "val_top1"}
    assert result.best["stage"] == "1" and not result.stage2


def test_head_distillation_terms_are_sum_mse_at_the_split_and_two_stages():
    teacher, student = _teacher(), seeded_model("resnet_s", "fp")
    x = seeded_images(2)
    terms = head_distillation_terms(student, teacher, x, torch.Generator().manual_seed(0))
    out = student.codec.likelihoods(student.analyze(x), "noise", torch.Generator().manual_seed(0))
    s_feat = student.decoder(out.y_hat)
    t_feat = teacher.features(x)
    expected = [F.mse_loss(s_feat, t_feat, reduction="sum")] + [
        F.mse_loss(s, t, reduction="sum")
        for s, t in zip(
            stage_outputs(student.backbone_tail, s_feat),
            stage_outputs(teacher.tail, t_feat),
            strict=True,
        )  # fmt: skip
    ]
    got = [terms["mse_split"], terms["mse_stage1"], terms["mse_stage2"]]
    assert all(torch.allclose(a, b) for a, b in zip(got, expected, strict=True))
    assert torch.allclose(terms["loss"], sum(expected))
    terms["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize(("kd", "beta"), [(True, 0.0), (False, 0.0), (True, 0.5)])
def test_fine_tuning_terms(kd, beta):
    teacher, student = _teacher(), seeded_model("resnet_s", "mshp")
    x, labels = seeded_images(3), torch.tensor([0, 1, 2])
    config = BottleFitConfig(kd=kd, beta=beta)
    terms = fine_tuning_terms(student, teacher, x, labels, config, torch.Generator().manual_seed(0))
    expected = 0.5 * terms["ce"] + 0.5 * terms["kl"] if kd else terms["ce"]
    assert ("kl" in terms) == kd and ("bpp" in terms) == (beta > 0)
    if beta:
        expected = expected + beta * terms["bpp"]
    assert torch.allclose(terms["loss"], expected)


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_both_stages_keep_the_best_validation_student(tiny_sets, prior):
    teacher, student = _teacher(), seeded_model("resnet_s", prior)
    student_from_teacher(student, teacher)
    config = BottleFitConfig(stage1_epochs=1, stage2_epochs=1, batch_size=64, beta=0.01)
    result = train_bottlefit(student, teacher, *tiny_sets, config, progress=False)
    tops = [e["val_top1"] for e in result.stage1 + result.stage2]
    assert result.best["val_top1"] == max(tops)
    assert {"ce", "kl", "bpp", "loss"} <= set(result.stage2[0])
    assert all(p.requires_grad for p in student.parameters()) and not student.training
    assert result.to_dict(config)["recipe"] == "bottlefit"
    student.from_packets(student.to_packets(seeded_images(2)))  # coder tables are built


def test_a_teacher_of_another_architecture_is_one_clear_error(tmp_path):
    save_teacher(_teacher("regnet_s"), tmp_path / "t")
    with pytest.raises(CheckpointError, match="regnet_s teacher, the student is resnet_s"):
        load_teacher(tmp_path / "t", "resnet_s")
    with pytest.raises(ValueError, match="teacher is regnet_s"):
        train_bottlefit(seeded_model("resnet_s", "q8"), _teacher("regnet_s"), None, None,
                        BottleFitConfig())  # fmt: skip


def test_a_missing_or_modified_teacher_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="train one with `entroguard train --recipe uncut"):
        load_teacher(tmp_path / "nothing", "resnet_s")
    path = save_teacher(_teacher(), tmp_path / "t")
    assert load_teacher(path, "resnet_s").arch == "resnet_s"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="modified or damaged"):
        load_teacher(path, "resnet_s")


def test_unknown_stages_are_refused():
    with pytest.raises(ValueError, match="stages"):
        BottleFitConfig(stages=("3",))
