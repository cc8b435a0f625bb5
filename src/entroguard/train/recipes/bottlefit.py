"""BottleFit's two-stage bottleneck training (Matsubara et al., 2022), on entroguard's models.

The student is a split model whose tail starts as a copy of the uncut teacher's tail; its
bottleneck (encoder ``g_a``, codec, decoder ``g_s``) replaces the teacher's stem.

* **Stage 1, head distillation**: the teacher and the student's tail are frozen (parameters
  and batch-norm statistics); only the bottleneck trains. Loss = sum of three sum-reduced MSE
  terms, weight 1 each, no cross-entropy: the decoder's output against the teacher's features
  at the split point, and the student's next two tail stages against the teacher's. Adam,
  lr 1e-3, x0.1 halfway.
* **Stage 2, fine-tuning**: the whole student (optionally with the encoder frozen) with
  knowledge distillation, 0.5 cross-entropy + 0.5 KL to the teacher at temperature 1 (or plain
  cross-entropy), plus ``beta`` x rate in bits per pixel for an entropy-coded bottleneck. SGD,
  lr 1e-3, momentum 0.9, weight decay 5e-4, x0.1 halfway.

The student with the best validation top-1 over both stages is kept. Entropy models also
train their quantiles with CompressAI's auxiliary loss after each step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from entroguard.data.imageset import ImageSet
from entroguard.device import module_device
from entroguard.models.split import SplitClassifier
from entroguard.models.uncut import UncutClassifier, stage_outputs
from entroguard.train.epochs import run_epoch, top1
from entroguard.train.loop import AuxStep

STAGES = ("1", "2")


@dataclass
class BottleFitConfig:
    """Hyper-parameters of both stages (saved in the checkpoint metadata)."""

    stages: tuple[str, ...] = STAGES
    stage1_epochs: int = 10
    stage1_lr: float = 1e-3
    stage2_epochs: int = 10
    stage2_lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    kd: bool = True
    temperature: float = 1.0
    freeze_encoder: bool = False
    beta: float = 0.0
    aux_lr: float = 1e-2
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.stages) - set(STAGES)
        if not self.stages or unknown:
            raise ValueError(f"stages must be a non-empty subset of {STAGES}, got {self.stages}")


@dataclass
class BottleFitResult:
    """Per-epoch logs of each stage, and where the kept student came from."""

    stage1: list[dict[str, float]] = field(default_factory=list)
    stage2: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float | str | int] = field(default_factory=dict)

    def to_dict(self, config: BottleFitConfig) -> dict:
        return {"recipe": "bottlefit", "config": asdict(config), "stage1": self.stage1,
                "stage2": self.stage2, "best": self.best}  # fmt: skip


def student_from_teacher(student: SplitClassifier, teacher: UncutClassifier) -> None:
    """Start ``student``'s tail from ``teacher``'s (BottleFit's initialisation)."""
    if type(student.backbone_tail) is not type(teacher.tail):
        raise ValueError("the teacher's tail is not the student's: use a teacher of its arch")
    student.backbone_tail.load_state_dict(teacher.tail.state_dict())


def _freeze(module: nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


def _unfreeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(True)


def _sum_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(a, b, reduction="sum")


def head_distillation_terms(
    student: SplitClassifier, teacher: UncutClassifier, images: torch.Tensor, generator
) -> dict[str, torch.Tensor]:
    """Stage 1's loss terms: MSE (sum) at the split point and after each of two tail stages."""
    with torch.no_grad():
        t_feat = teacher.features(images)
        t_stages = stage_outputs(teacher.tail, t_feat)
    out = student.codec.likelihoods(student.analyze(images), "noise", generator)
    s_feat = student.decoder(out.y_hat)
    s_stages = stage_outputs(student.backbone_tail, s_feat)
    terms = {"mse_split": _sum_mse(s_feat, t_feat)}
    for i, (s, t) in enumerate(zip(s_stages, t_stages, strict=True)):
        terms[f"mse_stage{i + 1}"] = _sum_mse(s, t)
    terms["loss"] = sum(terms.values())
    return terms


def fine_tuning_terms(
    student: SplitClassifier,
    teacher: UncutClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: BottleFitConfig,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Stage 2's loss terms: KD (0.5 CE + 0.5 KL at temperature T) or CE, plus beta x bpp."""
    out = student.forward_train(images, "noise", generator)
    ce = F.cross_entropy(out.logits, labels)
    terms = {"ce": ce}
    if config.kd:
        with torch.no_grad():
            t_logits = teacher(images)
        t = config.temperature
        kl = F.kl_div(F.log_softmax(out.logits / t, 1), F.softmax(t_logits / t, 1),
                      reduction="batchmean") * t * t  # fmt: skip
        terms["kl"] = kl
        terms["loss"] = 0.5 * ce + 0.5 * kl
    else:
        terms["loss"] = ce
    if config.beta > 0:
        bpp = out.bits().mean() / (images.shape[-2] * images.shape[-1])
        terms["bpp"] = bpp
        terms["loss"] = terms["loss"] + config.beta * bpp
    return terms


class _Trainer:
    """Both stages on one student, keeping the best validation student."""

    def __init__(self, student, teacher, train_set, val_set, config, progress):
        self.student, self.teacher, self.config = student, teacher, config
        self.train_set, self.val_set, self.progress = train_set, val_set, progress
        self.generator = torch.Generator().manual_seed(config.seed)
        self.result = BottleFitResult()
        self.best_state: dict | None = None
        self._aux_step = AuxStep(student, config.aux_lr)

    def _trainable(self) -> list[nn.Parameter]:
        return [p for n, p in self.student.named_parameters()
                if p.requires_grad and not n.endswith("quantiles")]  # fmt: skip

    def _epochs(self, stage: str, optimizer, epochs: int, step_loss, log) -> None:
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, max(1, math.ceil(epochs / 2)), 0.1)
        for epoch in range(epochs):
            terms = run_epoch(step_loss, optimizer, self.train_set,
                              batch_size=self.config.batch_size, generator=self.generator,
                              after_step=self._aux_step, progress=self.progress,
                              desc=f"bottlefit stage {stage} epoch {epoch + 1}",
                              device=module_device(self.student))  # fmt: skip
            schedule.step()
            terms["val_top1"] = self._validate(stage, epoch + 1)
            log.append(terms)

    def _validate(self, stage: str, epoch: int) -> float:
        self.student.eval()
        acc = top1(self.student, self.val_set, device=module_device(self.student))
        if not self.result.best or acc > self.result.best["val_top1"]:
            self.result.best = {"stage": stage, "epoch": epoch, "val_top1": acc}
            self.best_state = copy.deepcopy(self.student.state_dict())
        return acc

    def stage1(self) -> None:
        s = self.student
        _freeze(self.teacher)
        _freeze(s.backbone_tail)
        optimizer = torch.optim.Adam(self._trainable(), lr=self.config.stage1_lr)

        def step_loss(images, labels):
            for part in (s.encoder, s.codec, s.decoder):  # the tail stays in eval mode
                part.train()
            return head_distillation_terms(s, self.teacher, images, self.generator)

        self._epochs("1", optimizer, self.config.stage1_epochs, step_loss, self.result.stage1)

    def stage2(self) -> None:
        s, c = self.student, self.config
        _freeze(self.teacher)
        _unfreeze(s)
        if c.freeze_encoder:
            _freeze(s.encoder)
        optimizer = torch.optim.SGD(self._trainable(), lr=c.stage2_lr, momentum=c.momentum,
                                    weight_decay=c.weight_decay)  # fmt: skip

        def step_loss(images, labels):
            s.train()
            if c.freeze_encoder:
                s.encoder.eval()
            return fine_tuning_terms(s, self.teacher, images, labels, c, self.generator)

        self._epochs("2", optimizer, c.stage2_epochs, step_loss, self.result.stage2)


def train_bottlefit(
    student: SplitClassifier,
    teacher: UncutClassifier,
    train_set: ImageSet,
    val_set: ImageSet,
    config: BottleFitConfig,
    *,
    progress: bool = True,
) -> BottleFitResult:
    """Run the configured stages on ``student`` in place; it ends as the best validation
    student, in eval mode, every parameter trainable again, coder tables built."""
    if teacher.arch != student.spec.arch:
        raise ValueError(
            f"the teacher is {teacher.arch}, the student {student.spec.arch}: BottleFit distils "
            "a teacher of the student's own architecture"
        )
    trainer = _Trainer(student, teacher, train_set, val_set, config, progress)
    if "1" in config.stages:
        trainer.stage1()
    if "2" in config.stages:
        trainer.stage2()
    if trainer.best_state is not None:
        student.load_state_dict(trainer.best_state)
    _unfreeze(student)
    student.eval()
    student.prepare_coding()
    return trainer.result
