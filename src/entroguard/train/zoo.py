"""The default zoo: 3 architectures x 2 priors x 4 betas, trained on Fashion-MNIST.

Recipe per (architecture, prior): the smallest beta is trained from scratch; each larger beta
is warm-started from it and fine-tuned with feature distillation from it as the teacher
(sc2bench's entropic-student recipe with the low-beta model as teacher). Every model is then
measured on the full test set through real encoding and decoding, and the measurement is
saved in its checkpoint metadata.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from entroguard.data import ImageSet
from entroguard.measure import measure
from entroguard.models import SplitClassifier, build_model
from entroguard.train.checkpoint import (
    checkpoint_paths,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from entroguard.train.loop import TrainConfig, train_split

ZOO_ARCHS = ("resnet_s", "regnet_s", "mobilenetv2_s")
ZOO_PRIORS = ("fp", "mshp")
ZOO_BETAS = (0.01, 0.04, 0.16, 2.56)
ZOO_DATASET = "fashion-mnist"
BASE_EPOCHS = 5.0
FINETUNE_EPOCHS = 1.0
PACKAGED_ZOO = Path(__file__).resolve().parent.parent / "zoo_weights"
ZOO_SELECTORS: dict[str, str | None] = {
    "zoo": "entropic_student",
    "zoo:bottlefit": "bottlefit",
    "zoo:slimmable": "slimmable",
    "zoo:rate_adversarial": "rate_adversarial",
    "zoo:all": None,
}
"""Campaign ``models`` keywords: the default zoo (entropic students), BottleFit's, the
slimmable heads (every setting), the rate-adversarially fine-tuned models, or all (slimmable
heads at their largest setting)."""


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo."""

    arch: str
    prior: str
    beta: float

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.prior}-beta{self.beta:g}"


def zoo_entries(
    archs: tuple[str, ...] = ZOO_ARCHS,
    priors: tuple[str, ...] = ZOO_PRIORS,
    betas: tuple[float, ...] = ZOO_BETAS,
) -> list[ZooEntry]:
    """Every (arch, prior, beta) of the zoo, smallest beta first within each pair."""
    return [ZooEntry(a, p, b) for a in archs for p in priors for b in sorted(betas)]


def default_zoo_dir() -> Path:
    """``$ENTROGUARD_ZOO`` if set, else the weights shipped inside the package."""
    return Path(os.environ.get("ENTROGUARD_ZOO", PACKAGED_ZOO))


def list_zoo(zoo_dir: str | Path | None = None) -> list[dict]:
    """One dict per trained model found in ``zoo_dir`` (DESIGN.md's ``zoo --json`` fields)."""
    zoo_dir = Path(zoo_dir) if zoo_dir else default_zoo_dir()
    rows = []
    for meta_path in sorted(zoo_dir.glob("*.json")):
        meta = read_metadata(meta_path)
        spec, metrics = meta["spec"], meta.get("metrics", {})
        rows.append(
            {
                "name": meta_path.stem,
                "arch": spec["arch"],
                "prior": spec["prior"],
                "recipe": meta.get("recipe", "entropic_student"),
                "beta": meta.get("beta"),
                "dataset": meta.get("dataset"),
                "top1": metrics.get("top1"),
                "est_bytes": metrics.get("est_bytes"),
                "payload_bytes": metrics.get("payload_bytes"),
                "packet_bytes": metrics.get("packet_bytes"),
                "n_test": metrics.get("n"),
                "fingerprint": meta["fingerprint"],
                "path": str(checkpoint_paths(meta_path)[0]),
            }
        )
    return sorted(rows, key=lambda r: (ZOO_ARCHS.index(r["arch"]) if r["arch"] in ZOO_ARCHS
                                       else 99, r["arch"], r["prior"], r["beta"] or 0))  # fmt: skip


def annotate_measurements(
    path: str | Path,
    test_set: ImageSet,
    *,
    model: SplitClassifier | None = None,
    progress: bool = True,
) -> dict:
    """Measure a checkpoint on ``test_set`` through real coding; store it in its metadata.

    Writes ``metrics`` (DESIGN.md's means per image) and ``clean_payload`` (the payload
    distribution the server's rate guard compares packets with) into the JSON file; the
    weights are untouched. Returns the metrics.
    """
    model = model or load_checkpoint(path)
    result = measure(model, test_set.batches(500), total=len(test_set), progress=progress,
                     desc=f"measure {Path(path).name}")  # fmt: skip
    _, meta_path = checkpoint_paths(path)
    meta = read_metadata(meta_path)
    meta["metrics"] = result.summary()
    meta["clean_payload"] = result.payload_stats()
    meta["measured_on"] = {"dataset": test_set.name, "split": test_set.split, "n": result.n}
    tmp = Path(f"{meta_path}.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tmp.replace(meta_path)
    return meta["metrics"]


def train_zoo(
    out_dir: str | Path,
    train_set: ImageSet,
    test_set: ImageSet,
    *,
    entries: list[ZooEntry] | None = None,
    base_epochs: float = BASE_EPOCHS,
    finetune_epochs: float = FINETUNE_EPOCHS,
    seed: int = 0,
    skip_existing: bool = True,
    progress: bool = True,
    device: str = "cpu",
) -> list[Path]:
    """Train (and measure) every zoo entry into ``out_dir`` on ``device``; returns the
    checkpoint paths.

    Finished checkpoints are kept, so an interrupted run resumes with ``skip_existing``.
    """
    out_dir = Path(out_dir)
    entries = entries or zoo_entries()
    groups: dict[tuple[str, str], list[ZooEntry]] = {}
    for e in entries:
        groups.setdefault((e.arch, e.prior), []).append(e)
    saved = []
    for (arch, prior), group in tqdm(groups.items(), desc="zoo", disable=not progress):
        group = sorted(group, key=lambda e: e.beta)
        base: SplitClassifier | None = None
        for i, entry in enumerate(group):
            path = out_dir / f"{entry.name}.safetensors"
            if skip_existing and path.exists() and checkpoint_paths(path)[1].exists():
                saved.append(path)
                if i == 0:
                    base = load_checkpoint(path).to(device)
                continue
            torch.manual_seed(seed)
            if base is None:
                model = build_model(arch, prior).to(device)
                config = TrainConfig(beta=entry.beta, epochs=base_epochs, seed=seed)
                teacher = None
            else:
                model = copy.deepcopy(base)
                config = TrainConfig(
                    beta=entry.beta, epochs=finetune_epochs, seed=seed, lr=1e-3, distill_weight=1.0
                )
                teacher = base
            train_split(model, train_set, config, teacher=teacher, progress=progress,
                        desc=entry.name)  # fmt: skip
            saved.append(
                save_checkpoint(
                    model,
                    path,
                    beta=entry.beta,
                    dataset=test_set.name,
                    train=config.to_dict() | {"teacher": group[0].name if teacher else None},
                )
            )
            annotate_measurements(path, test_set, model=model, progress=progress)
            if base is None:
                base = model
    return saved
