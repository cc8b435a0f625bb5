"""Training a slimmable head in one run: the sandwich rule with in-place distillation.

On every batch the largest setting ``(M, R-1)``, the smallest ``(1, 0)`` and
``random_settings`` other settings drawn from the run's generator each run forward (Yu &
Huang's sandwich rule, as the slimmable-encoder papers train). The largest setting learns from
the labels; every other setting distils its logits (KL, temperature 1) from the largest
setting's, detached (in-place distillation). Each setting adds ``betas[rate]`` x its rate in
bits per pixel, so one model learns R operating points. The backbone tail starts from the
architecture's uncut teacher (as BottleFit's students do), the encoder members from scratch.
The entropy models' quantiles train on CompressAI's auxiliary loss after each step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from entroguard.data.imageset import ImageSet
from entroguard.models.slimmable import SlimmableSplitClassifier
from entroguard.train.epochs import run_epoch
from entroguard.train.loop import aux_loss, quantile_params

DEFAULT_BETAS = (2.56, 0.16, 0.04, 0.01)
"""Rate weight per rate setting (0 sends the fewest bytes): the zoo's betas, so each rate
setting has a separately trained zoo model to be compared with."""


@dataclass
class SlimmableConfig:
    """Hyper-parameters of a slimmable run (saved in the checkpoint metadata)."""

    epochs: int = 2
    lr: float = 2e-3
    betas: tuple[float, ...] = DEFAULT_BETAS
    random_settings: int = 2
    aux_lr: float = 1e-2
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.random_settings < 0 or not self.betas:
            raise ValueError("epochs >= 1, random_settings >= 0 and at least one beta needed")


def sandwich(
    model: SlimmableSplitClassifier, random_settings: int, generator: torch.Generator
) -> list[tuple[int, int]]:
    """The settings of one step: largest first, then smallest, then random distinct others."""
    largest, smallest = model.largest, model.settings[0]
    others = [s for s in model.settings if s not in (largest, smallest)]
    order = torch.randperm(len(others), generator=generator).tolist()
    return [largest, smallest] + [others[i] for i in order[:random_settings]]


def sandwich_terms(
    model: SlimmableSplitClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: SlimmableConfig,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """The loss of one batch over the sandwich's settings; the log keeps the largest and the
    smallest settings' terms (the random ones change from batch to batch)."""
    pixels = images.shape[-2] * images.shape[-1]
    teacher_probs = None
    terms: dict[str, torch.Tensor] = {}
    total = images.new_zeros(())
    for i, (members, rate) in enumerate(sandwich(model, config.random_settings, generator)):
        model.set_mode(members, rate)
        out = model.forward_train(images, "noise", generator)
        bpp = out.bits().mean() / pixels
        if teacher_probs is None:
            fit = F.cross_entropy(out.logits, labels)
            teacher_probs = F.softmax(out.logits.detach(), dim=1)
            terms |= {"ce_largest": fit, "bpp_largest": bpp}
        else:
            log_probs = F.log_softmax(out.logits, dim=1)
            fit = F.kl_div(log_probs, teacher_probs, reduction="batchmean")
        if i == 1:
            terms |= {"kl_smallest": fit, "bpp_smallest": bpp}
        total = total + fit + config.betas[rate] * bpp
    model.set_mode(*model.largest)
    terms["loss"] = total
    return terms


def train_slimmable(
    model: SlimmableSplitClassifier,
    train_set: ImageSet,
    config: SlimmableConfig,
    *,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` in place; returns each epoch's mean loss terms. Ends in eval mode with
    coder tables built, at the largest setting."""
    if len(config.betas) != model.codec.settings:
        raise ValueError(f"{len(config.betas)} betas for {model.codec.settings} rate settings")
    generator = torch.Generator().manual_seed(config.seed)
    quantiles = quantile_params(model)
    qids = {id(p) for p in quantiles}
    main = [p for p in model.parameters() if id(p) not in qids]
    optimizer = torch.optim.Adam(main, lr=config.lr)
    aux_optimizer = torch.optim.Adam(quantiles, lr=config.aux_lr)
    steps = config.epochs * math.ceil(len(train_set) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps)

    def after_step() -> None:
        schedule.step()
        aux_optimizer.zero_grad(set_to_none=True)
        aux_loss(model).backward()
        aux_optimizer.step()

    model.train()
    logs = []
    for epoch in range(config.epochs):
        logs.append(run_epoch(
            lambda x, y: sandwich_terms(model, x, y, config, generator), optimizer, train_set,
            batch_size=config.batch_size, generator=generator, after_step=after_step,
            progress=progress, desc=f"slimmable epoch {epoch + 1}/{config.epochs}",
        ))  # fmt: skip
    model.eval()
    model.prepare_coding()
    return logs


def config_dict(config: SlimmableConfig) -> dict:
    """The config as saved in a checkpoint's ``train`` metadata."""
    return {"recipe": "slimmable", "config": asdict(config)}
