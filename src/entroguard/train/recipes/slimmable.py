"""Training a slimmable head in one run: the sandwich rule with in-place distillation.

On every batch the largest setting ``(M, R-1)``, the smallest ``(1, 0)`` and
``random_settings`` other settings drawn from the run's generator each run forward (Yu &
Huang's sandwich rule, as the slimmable-encoder papers train). The largest setting learns from
the labels; every other setting distils its logits (KL, temperature 1) from the largest
setting's, detached (in-place distillation). Each setting adds ``betas[rate]`` x its rate in
bits per pixel, so one model learns R operating points, and ``feature_weight`` x the MSE between
its features at the split point and a teacher's (0 by default).

The head starts warm (:func:`warm_start`): every encoder member, every rate setting's entropy
model, ``g_s`` and the tail are copies of a trained split model of the same architecture and
prior (the zoo's at the smallest beta), and training pulls the members and the rate settings
apart. Started from scratch instead (members from nothing, the tail from the uncut teacher)
two epochs reached 0.72-0.79 top-1 against the separate models' 0.90 (docs/slimmable.md).
BatchNorm statistics are shared by all settings (no private statistics per setting).
The entropy models' quantiles train on CompressAI's auxiliary loss after each step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from entroguard.data.imageset import ImageSet
from entroguard.device import module_device
from entroguard.models.slimmable import SlimmableSplitClassifier
from entroguard.models.split import SplitClassifier
from entroguard.train.epochs import run_epoch
from entroguard.train.loop import AuxStep, main_params

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
    feature_weight: float = 0.0
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
    teacher: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """The loss of one batch over the sandwich's settings; the log keeps the largest and the
    smallest settings' terms (the random ones change from batch to batch). With ``teacher``,
    every setting's features at the split point are pulled towards the teacher's."""
    pixels = images.shape[-2] * images.shape[-1]
    target = None
    if teacher is not None and config.feature_weight > 0:
        with torch.no_grad():
            target = teacher.features(images)
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
        if target is not None:
            mse = F.mse_loss(out.features, target)
            total = total + config.feature_weight * mse
            terms[f"mse_{'largest' if i == 0 else 'smallest' if i == 1 else 'random'}"] = mse
    model.set_mode(*model.largest)
    terms["loss"] = total
    return terms


def warm_start(model: SlimmableSplitClassifier, source: SplitClassifier) -> None:
    """Copy ``source`` (a trained split model of the same architecture, prior and widths) into
    every encoder member, every rate setting's entropy model, ``g_s`` and the tail."""
    state = source.learned_state()
    part = {name: {k.removeprefix(name + "."): v for k, v in state.items()
                   if k.startswith(name + ".")} for name in ("encoder", "codec")}  # fmt: skip
    try:
        for member in model.encoder.members:
            member.load_state_dict(part["encoder"])
        for codec in model.codec.inner:
            codec.load_state_dict(part["codec"], strict=False)
        model.decoder.load_state_dict(source.decoder.state_dict())
        model.backbone_tail.load_state_dict(source.backbone_tail.state_dict())
    except RuntimeError as exc:
        raise ValueError(f"cannot warm-start from a model of another shape: {exc}") from None


def train_slimmable(
    model: SlimmableSplitClassifier,
    train_set: ImageSet,
    config: SlimmableConfig,
    *,
    teacher: torch.nn.Module | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` in place; returns each epoch's mean loss terms. Ends in eval mode with
    coder tables built, at the largest setting. ``teacher``: a model with ``features(images)``
    at the split point whose features every setting distils (with ``feature_weight`` > 0)."""
    if len(config.betas) != model.codec.settings:
        raise ValueError(f"{len(config.betas)} betas for {model.codec.settings} rate settings")
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(main_params(model), lr=config.lr)
    aux_step = AuxStep(model, config.aux_lr)
    steps = config.epochs * math.ceil(len(train_set) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps)

    def after_step() -> None:
        schedule.step()
        aux_step()

    model.train()
    if teacher is not None:
        teacher.eval()
    logs = []
    for epoch in range(config.epochs):
        logs.append(run_epoch(
            lambda x, y: sandwich_terms(model, x, y, config, generator, teacher), optimizer,
            train_set,
            batch_size=config.batch_size, generator=generator, after_step=after_step,
            progress=progress, desc=f"slimmable epoch {epoch + 1}/{config.epochs}",
            device=module_device(model),
        ))  # fmt: skip
    model.eval()
    model.prepare_coding()
    return logs


def config_dict(config: SlimmableConfig) -> dict:
    """The config as saved in a checkpoint's ``train`` metadata."""
    return {"recipe": "slimmable", "config": asdict(config)}
