"""Rate-distortion training of split classifiers.

loss = cross-entropy + beta * rate (bits per input pixel)
       [+ distill_weight * (feature MSE at the split point + KL to the teacher's logits)]
plus the entropy bottlenecks' auxiliary quantile loss on their own optimiser (CompressAI's
recipe). With a teacher this is sc2bench's entropic-student recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from entroguard.data.imageset import ImageSet
from entroguard.device import module_device
from entroguard.models.split import SplitClassifier


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (saved in the checkpoint metadata)."""

    beta: float
    epochs: float = 3.0
    batch_size: int = 128
    lr: float = 2e-3
    aux_lr: float = 1e-2
    weight_decay: float = 0.0
    distill_weight: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TrainHistory:
    """Running means logged every ``log_every`` steps."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    ce: list[float] = field(default_factory=list)
    bpp: list[float] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)


def quantile_params(model: SplitClassifier) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if n.endswith("quantiles")]


def main_params(model: SplitClassifier) -> list[torch.nn.Parameter]:
    """Every parameter but the entropy bottlenecks' quantiles (which :class:`AuxStep` trains)."""
    return [p for n, p in model.named_parameters() if not n.endswith("quantiles")]


def aux_loss(model: SplitClassifier) -> torch.Tensor:
    return sum(m.loss() for m in model.codec.entropy_models() if hasattr(m, "loss"))


class AuxStep:
    """CompressAI's auxiliary step: the entropy bottlenecks' quantiles learn their own loss on
    their own Adam after each main step; nothing for a fixed-rate bottleneck (no densities)."""

    def __init__(self, model: SplitClassifier, lr: float) -> None:
        self.model = model
        quantiles = quantile_params(model)
        self.optimizer = torch.optim.Adam(quantiles, lr=lr) if quantiles else None

    def __call__(self) -> None:
        if self.optimizer is None:
            return
        self.optimizer.zero_grad(set_to_none=True)
        aux_loss(self.model).backward()
        self.optimizer.step()


def train_split(
    model: SplitClassifier,
    train_set: ImageSet,
    config: TrainConfig,
    *,
    teacher: SplitClassifier | None = None,
    progress: bool = True,
    desc: str = "train",
) -> TrainHistory:
    """Train ``model`` in place, on its device; it ends in eval mode with coder tables built.

    Args:
        model: the split model (fresh or warm-started).
        train_set: training images.
        config: beta, epochs (fractions allowed), batch size, learning rates, seed.
        teacher: optional trained split model with the same feature shape at the split point;
            its decoder output and logits are distilled into ``model`` (weight
            ``config.distill_weight``).
    """
    if config.distill_weight > 0 and teacher is None:
        raise ValueError("distill_weight > 0 needs a teacher model")
    generator = torch.Generator().manual_seed(config.seed)
    main = main_params(model)
    optimizer = torch.optim.AdamW(main, lr=config.lr, weight_decay=config.weight_decay)
    aux_step = AuxStep(model, config.aux_lr)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total_steps = max(1, round(config.epochs * steps_per_epoch))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=0.15
    )
    pixels = train_set.image_size[0] * train_set.image_size[1]
    if teacher is not None:
        teacher.eval()
    model.train()
    history = TrainHistory()
    sums = torch.zeros(4)
    step = 0
    bar = tqdm(total=total_steps, desc=desc, unit="step", disable=not progress, leave=False)
    while step < total_steps:
        for images, labels, _ in train_set.batches(
            config.batch_size, shuffle=True, generator=generator, device=module_device(model)
        ):
            out = model.forward_train(images, "noise", generator)
            ce = F.cross_entropy(out.logits, labels)
            bpp = out.bits().mean() / pixels
            loss = ce + config.beta * bpp
            if teacher is not None and config.distill_weight > 0:
                loss = loss + config.distill_weight * _distill_loss(model, teacher, images, out)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(main, 5.0)
            optimizer.step()
            schedule.step()
            aux_step()

            acc = (out.logits.argmax(1) == labels).float().mean()
            sums += torch.tensor([loss.item(), ce.item(), bpp.item(), acc.item()])
            step += 1
            if step % 50 == 0 or step == total_steps:
                n = 50 if step % 50 == 0 else step % 50
                means = (sums / n).tolist()
                for name, v in zip(("loss", "ce", "bpp", "acc"), means, strict=False):
                    getattr(history, name).append(v)
                history.steps.append(step)
                bar.set_postfix(
                    loss=f"{means[0]:.3f}", bpp=f"{means[2]:.3f}", acc=f"{means[3]:.3f}"
                )
                sums.zero_()
            bar.update(1)
            if step >= total_steps:
                break
    bar.close()
    model.eval()
    model.prepare_coding()
    return history


def _distill_loss(
    student: SplitClassifier, teacher: SplitClassifier, images: torch.Tensor, student_out
) -> torch.Tensor:
    with torch.no_grad():
        t_out = teacher.forward_train(images, "round")
    feature = F.mse_loss(student_out.features, t_out.features)
    kd = F.kl_div(
        F.log_softmax(student_out.logits, dim=1),
        F.softmax(t_out.logits, dim=1),
        reduction="batchmean",
    )
    return feature + kd
