"""Resolve campaign model entries (zoo names or checkpoint paths) to loaded models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from entroguard.errors import CheckpointError
from entroguard.models import SplitClassifier
from entroguard.train.checkpoint import checkpoint_paths, load_checkpoint, read_metadata
from entroguard.train.zoo import ZOO_SELECTORS, list_zoo


@dataclass
class ModelRef:
    """A model of a campaign: its result-row name, checkpoint and descriptive fields."""

    name: str
    path: Path
    arch: str
    prior: str
    beta: float | None

    def load(self) -> SplitClassifier:
        return load_checkpoint(self.path)

    def info(self) -> dict:
        return {"arch": self.arch, "prior": self.prior, "beta": self.beta}


def resolve_models(models: str | list[str], zoo_dir: str | Path | None = None) -> list[ModelRef]:
    """``"zoo"`` (the default zoo: every shipped entropic student), ``"zoo:bottlefit"``,
    ``"zoo:all"``, or a list of zoo names and checkpoint paths."""
    zoo = {r["name"]: r for r in list_zoo(zoo_dir)}
    if isinstance(models, str) and models in ZOO_SELECTORS:
        recipe = ZOO_SELECTORS[models]
        names: list[str] = [n for n, r in zoo.items() if recipe in (None, r["recipe"])]
        if not names:
            raise CheckpointError(f"no {models} models are shipped: train them with "
                                  "`entroguard train --zoo` (or --recipe bottlefit)")  # fmt: skip
    else:
        names = list(models)
    refs = []
    for entry in names:
        if entry in zoo:
            r = zoo[entry]
            refs.append(ModelRef(entry, Path(r["path"]), r["arch"], r["prior"], r["beta"]))
            continue
        weights, meta_path = checkpoint_paths(entry)
        if not meta_path.exists():
            raise CheckpointError(
                f"models: {entry!r} is neither a zoo model ({', '.join(list(zoo)[:3])}, ...) "
                "nor a checkpoint path"
            )
        meta = read_metadata(meta_path)
        spec = meta["spec"]
        refs.append(
            ModelRef(
                weights.name[: -len(".safetensors")],
                weights,
                spec["arch"],
                spec["prior"],
                meta.get("beta"),
            )  # fmt: skip
        )
    return refs
