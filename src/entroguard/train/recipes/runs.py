"""One training run per recipe, from datasets to a measured checkpoint on disk.

``entroguard train`` calls these: one entropic student (``--arch``), ``--recipe bottlefit``,
``uncut``, ``slimmable`` and ``rate_adversarial``; the whole default zoo is ``train.zoo``'s.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from entroguard.campaign.models import resolve_models
from entroguard.data.imageset import ImageSet
from entroguard.measure import measure
from entroguard.models import build_model
from entroguard.models.uncut import UncutClassifier
from entroguard.train.checkpoint import load_checkpoint, save_checkpoint
from entroguard.train.epochs import split_validation, top1
from entroguard.train.loop import TrainConfig, train_split
from entroguard.train.recipes.bottlefit import (
    BottleFitConfig,
    student_from_teacher,
    train_bottlefit,
)
from entroguard.train.recipes.rate_adversarial import (
    RateAdversarialConfig,
    train_rate_adversarial,
)
from entroguard.train.recipes.slimmable import (
    SlimmableConfig,
    config_dict,
    train_slimmable,
    warm_start,
)
from entroguard.train.teacher import (
    TeacherConfig,
    load_teacher,
    save_teacher,
    teacher_metadata,
    train_teacher,
)

VALIDATION_IMAGES = 5000
"""Training images held out for BottleFit's best-checkpoint choice (the last ones)."""


def bottlefit_name(arch: str, prior: str, channels: int, beta: float) -> str:
    """``resnet_s-q8-c4-bottlefit`` (``-beta0.04`` added for an entropy-coded bottleneck)."""
    rate = f"-beta{beta:g}" if prior != "q8" else ""
    return f"{arch}-{prior}-c{channels}{rate}-bottlefit"


def run_bottlefit(
    arch: str,
    prior: str,
    channels: int,
    config: BottleFitConfig,
    train_set: ImageSet,
    test_set: ImageSet,
    out: Path,
    *,
    teacher_path: Path | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> tuple[Path, dict]:
    """Train a BottleFit student of ``arch`` with a ``channels``-channel ``prior`` bottleneck
    on ``device``, measure it on ``test_set`` through real coding, save it; returns (path,
    metrics)."""
    teacher = load_teacher(teacher_path, arch)
    torch.manual_seed(config.seed)
    student = build_model(arch, prior, latent_channels=channels)
    student_from_teacher(student, teacher)
    student, teacher = student.to(device), teacher.to(device)
    fit_set, val_set = split_validation(train_set, VALIDATION_IMAGES)
    result = train_bottlefit(student, teacher, fit_set, val_set, config, progress=progress)
    name = bottlefit_name(arch, prior, channels, config.beta)
    return save_measured(
        student, out / name, test_set, progress=progress, recipe="bottlefit", beta=config.beta,
        train=result.to_dict(config) | {"teacher": teacher.metadata.get("name", arch)},
    )  # fmt: skip


def save_measured(model, path: Path, test_set: ImageSet, *, progress: bool = True,
                  **metadata) -> tuple[Path, dict]:  # fmt: skip
    """Measure ``model`` on ``test_set`` through real coding and save it at ``path`` with
    ``metadata``, its metrics, its clean payload distribution and what it was measured on;
    returns (weights path, metrics)."""
    measured = measure(model, test_set.batches(500), total=len(test_set), progress=progress)
    path = save_checkpoint(
        model, path, dataset=test_set.name, metrics=measured.summary(),
        clean_payload=measured.payload_stats(),
        measured_on={"dataset": test_set.name, "split": test_set.split, "n": measured.n},
        **metadata,
    )  # fmt: skip
    return path, measured.summary()


def entropic_student_name(arch: str, prior: str, channels: int | None, beta: float) -> str:
    """``resnet_s-mshp-beta0.01`` (``-c8`` after the prior with a channel count given)."""
    return f"{arch}-{prior}" + (f"-c{channels}" if channels else "") + f"-beta{beta:g}"


def run_entropic_student(
    arch: str,
    prior: str,
    config: TrainConfig,
    train_set: ImageSet,
    test_set: ImageSet,
    out: Path,
    *,
    channels: int | None = None,
    teacher_path: str | Path | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> tuple[Path, dict]:
    """Train one split model of ``arch`` and ``prior`` by rate-distortion (plus distillation
    from the split checkpoint ``teacher_path`` when ``config.distill_weight`` > 0), measure it
    and save it as the zoo does; returns (weights path, metrics)."""
    torch.manual_seed(config.seed)
    model = build_model(arch, prior, **({"latent_channels": channels} if channels else {}))
    model = model.to(device)
    teacher = load_checkpoint(teacher_path).to(device) if teacher_path else None
    train_split(model, train_set, config, teacher=teacher, progress=progress)
    name = entropic_student_name(arch, prior, channels, config.beta)
    return save_measured(model, out / name, test_set, progress=progress, beta=config.beta,
                         train=config.to_dict())  # fmt: skip


def run_uncut(
    arch: str,
    config: TeacherConfig,
    train_set: ImageSet,
    test_set: ImageSet,
    out: Path,
    *,
    progress: bool = True,
    device: str = "cpu",
) -> tuple[Path, float]:
    """Train the uncut teacher of ``arch`` on ``device``, test it, save it; returns (path, test
    top-1)."""
    torch.manual_seed(config.seed)
    model = UncutClassifier(arch).to(device)
    history = train_teacher(model, train_set, config, progress=progress)
    accuracy = top1(model, test_set, device=device)
    meta = teacher_metadata(config, history, accuracy)
    path = save_teacher(model, out / f"{arch}-uncut", name=f"{arch}-uncut", dataset=test_set.name,
                        **meta)  # fmt: skip
    return path, accuracy


def slimmable_name(arch: str, prior: str) -> str:
    """``resnet_s-slim-mshp``: the zoo name of a slimmable head."""
    return f"{arch}-slim-{prior}"


SETTING_TEST_IMAGES = 5000
"""Test images each slimmable setting is measured on (the first ones; 16 settings x 10,000
images would take longer than training on two CPU cores)."""


def measure_settings(model, test_set: ImageSet, *, progress: bool = True) -> list[dict]:
    """Every setting's clean figures on ``test_set`` through real coding (payload statistics
    feed the rate guard and the deadline controller)."""
    test_set = test_set.subset(SETTING_TEST_IMAGES)
    rows = []
    for members, rate in model.settings:
        model.set_mode(members, rate)
        measured = measure(model, test_set.batches(500), total=len(test_set), progress=progress,
                           desc=f"measure m{members},r{rate}")  # fmt: skip
        rows.append({"members": members, "rate": rate, **measured.summary(),
                     "clean_payload": measured.payload_stats()})  # fmt: skip
    model.set_mode(*model.largest)
    return rows


def run_slimmable(
    arch: str,
    prior: str,
    config: SlimmableConfig,
    train_set: ImageSet,
    test_set: ImageSet,
    out: Path,
    *,
    warm_from: str | Path | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> tuple[Path, list[dict]]:
    """Train a slimmable ``arch``/``prior`` head warm-started from ``warm_from`` (a checkpoint
    path or zoo name; default: the zoo's ``arch``/``prior`` model at the smallest beta), measure
    every setting, save it; returns (path, per-setting rows). Top-level metrics are the largest
    setting's. Trains on ``device``."""
    warm_from = warm_from or f"{arch}-{prior}-beta{min(config.betas):g}"
    source = resolve_models([str(warm_from)])[0].load()
    torch.manual_seed(config.seed)
    opts = source.spec.options
    model = build_model(arch, prior, members=4, member_hidden=opts["hidden"], **opts)
    warm_start(model, source)
    model = model.to(device)
    logs = train_slimmable(model, train_set, config, progress=progress)
    rows = measure_settings(model, test_set, progress=progress)
    largest = rows[-1]
    metrics = {k: largest[k] for k in ("top1", "est_bytes", "payload_bytes", "packet_bytes", "n")}
    path = save_checkpoint(
        model, out / slimmable_name(arch, prior), recipe="slimmable", beta=config.betas[-1],
        dataset=test_set.name, metrics=metrics, clean_payload=largest["clean_payload"],
        settings=rows, train=config_dict(config) | {"epochs": logs,
                                                    "warm_start": str(warm_from)},
        measured_on={"dataset": test_set.name, "split": test_set.split, "n": largest["n"]},
    )  # fmt: skip
    return path, rows


def rate_adversarial_name(source: str) -> str:
    """``resnet_s-fp-beta0.01-radv``: the zoo name of a source model fine-tuned against the
    rate attack."""
    return f"{source}-radv"


def run_rate_adversarial(
    source: str | Path,
    config: RateAdversarialConfig,
    train_set: ImageSet,
    test_set: ImageSet,
    out: Path,
    *,
    progress: bool = True,
    device: str = "cpu",
) -> tuple[Path, dict]:
    """Fine-tune ``source`` (a zoo name or checkpoint path) against the rate attack on
    ``device`` (its beta unless ``config.beta`` is given), measure it on ``test_set`` through
    real coding, save it next to its source's name; returns (path, metrics)."""
    ref = resolve_models([str(source)])[0]
    if ref.prior not in ("fp", "mshp"):
        raise ValueError(f"{ref.name} has a fixed-rate bottleneck ({ref.prior}): no rate to attack")
    model = ref.load().to(device)
    if config.beta is None:
        config = dataclasses.replace(config, beta=ref.beta)
    torch.manual_seed(config.seed)
    history = train_rate_adversarial(model, train_set, config, progress=progress,
                                     desc=rate_adversarial_name(ref.name))  # fmt: skip
    return save_measured(
        model, out / rate_adversarial_name(ref.name), test_set, progress=progress,
        recipe="rate_adversarial", beta=config.beta,
        train=config.to_dict() | {"source": ref.name, "history": history.to_dict()},
    )  # fmt: skip


def rate_adversarial_sources(patterns: list[str], out: Path) -> list[str]:
    """The entropic-student zoo names matching ``patterns`` (shell patterns such as
    ``*-beta0.01``; checkpoint paths pass through), less those whose fine-tuned model is
    already in ``out`` (so an interrupted run resumes)."""
    from fnmatch import fnmatch

    from entroguard.train.zoo import list_zoo

    zoo = [r["name"] for r in list_zoo() if r["recipe"] == "entropic_student"]
    names: list[str] = []
    for pattern in (p.strip() for p in patterns if p.strip()):
        matched = [n for n in zoo if fnmatch(n, pattern)]
        if not matched and not Path(pattern).with_suffix(".json").exists():
            raise ValueError(f"--from {pattern!r} matches no zoo model and no checkpoint "
                             f"(zoo names look like {zoo[0]})")  # fmt: skip
        names += matched or [pattern]
    done = {p.name.removesuffix(".json") for p in Path(out).glob("*-radv.json")}
    stem = {n: n if n in zoo else Path(n).name.removesuffix(".safetensors") for n in names}
    return [n for n in dict.fromkeys(names) if rate_adversarial_name(stem[n]) not in done]
