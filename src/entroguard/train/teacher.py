"""Uncut teachers: train, save and load the networks BottleFit distils from.

A teacher is ``NAME.safetensors`` + ``NAME.json`` like a split checkpoint, with its own format
name (``entroguard-uncut-checkpoint``) so that neither loader takes the other's files. The
shipped teachers live in ``zoo_weights/teachers/{arch}-uncut.*``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from entroguard.data.imageset import ImageSet
from entroguard.device import module_device
from entroguard.errors import CheckpointError
from entroguard.models.split import tensors_digest
from entroguard.models.uncut import UncutClassifier
from entroguard.train.checkpoint import checkpoint_paths, write_pair
from entroguard.train.epochs import run_epoch

FORMAT = "entroguard-uncut-checkpoint"
SHIPPED = Path(__file__).resolve().parent.parent / "zoo_weights" / "teachers"


@dataclass
class TeacherConfig:
    """Plain cross-entropy training of an uncut network (Adam, cosine decay)."""

    epochs: int = 5
    lr: float = 2e-3
    batch_size: int = 128
    seed: int = 0


def train_teacher(
    model: UncutClassifier,
    train_set: ImageSet,
    config: TeacherConfig,
    *,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` in place with cross-entropy, on its device; returns each epoch's mean
    loss terms."""
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)

    def step_loss(images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = model(images)
        ce = torch.nn.functional.cross_entropy(logits, labels)
        return {"loss": ce, "acc": (logits.argmax(1) == labels).float().mean()}

    model.train()
    history = []
    for epoch in range(config.epochs):
        history.append(run_epoch(step_loss, optimizer, train_set, batch_size=config.batch_size,
                                 generator=generator, progress=progress,
                                 desc=f"{model.arch} uncut epoch {epoch + 1}",
                                 device=module_device(model)))  # fmt: skip
        schedule.step()
    model.eval()
    return history


def save_teacher(model: UncutClassifier, path: str | Path, **metadata) -> Path:
    """Save ``model`` as ``path.safetensors`` + ``path.json``; returns the weights path."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "arch": model.arch, "options": model.options,
            "sha256": tensors_digest(state), **metadata}  # fmt: skip
    return write_pair(path, state, meta)


def shipped_teacher_path(arch: str) -> Path:
    """Where the shipped teacher of ``arch`` lives (it may be missing)."""
    return SHIPPED / f"{arch}-uncut.safetensors"


def load_teacher(path: str | Path | None, arch: str) -> UncutClassifier:
    """The uncut teacher at ``path`` (default: the shipped one of ``arch``), in eval mode.

    Raises ``CheckpointError`` when it is missing, damaged, not a teacher, or of another
    architecture than ``arch``.
    """
    weights, meta_path = checkpoint_paths(path if path else shipped_teacher_path(arch))
    if not (weights.is_file() and meta_path.is_file()):
        raise CheckpointError(
            f"no uncut teacher at {weights}: train one with `entroguard train --recipe uncut "
            f"--arch {arch} --out DIR` and pass it with --teacher"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{weights.name} is not an uncut teacher (format {meta.get('format')!r})"
        )
    if meta["arch"] != arch:
        raise CheckpointError(
            f"{weights.name} is a {meta['arch']} teacher, the student is {arch}: BottleFit "
            "distils a teacher of the student's own architecture"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({exc})") from exc
    if tensors_digest(state) != meta.get("sha256"):
        raise CheckpointError(f"{weights.name} was modified or damaged: copy the teacher again")
    model = UncutClassifier(arch, **meta["options"])
    model.load_state_dict(state)
    model.metadata = meta  # type: ignore[attr-defined]
    return model.eval()


def teacher_metadata(config: TeacherConfig, history: list[dict], test_top1: float) -> dict:
    """What a shipped teacher records: its recipe, per-epoch losses and test accuracy."""
    return {"train": asdict(config) | {"history": history}, "metrics": {"top1": test_top1}}
