"""Resolve campaign model entries (zoo names or checkpoint paths) to loaded models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from entroguard.errors import CheckpointError
from entroguard.models import SplitClassifier
from entroguard.models.slimmable import apply_setting, setting_name, split_setting_name
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
    setting: tuple[int, int] | None = None

    def load(self) -> SplitClassifier:
        model = load_checkpoint(self.path)
        apply_setting(model, self.setting, self.name)
        return model

    def info(self) -> dict:
        return {"arch": self.arch, "prior": self.prior, "beta": self.beta}


def resolve_models(models: str | list[str], zoo_dir: str | Path | None = None) -> list[ModelRef]:
    """``"zoo"`` (the default zoo: every shipped entropic student), ``"zoo:bottlefit"``,
    ``"zoo:slimmable"`` (every setting of every slimmable model), ``"zoo:all"``, or a list of
    zoo names and checkpoint paths, each optionally at a setting (``NAME@m2,r1``)."""
    zoo = {r["name"]: r for r in list_zoo(zoo_dir)}
    names = _selected_names(models, zoo) if isinstance(models, str) else list(models)
    refs = []
    for name in names:
        entry, setting = split_setting_name(name)
        if entry in zoo:
            r = zoo[entry]
            refs.append(ModelRef(name, Path(r["path"]), r["arch"], r["prior"], r["beta"],
                                 setting))  # fmt: skip
            continue
        weights, meta_path = checkpoint_paths(entry)
        if not meta_path.exists():
            raise CheckpointError(
                f"models: {entry!r} is neither a zoo model ({', '.join(list(zoo)[:3])}, ...) "
                "nor a checkpoint path"
            )
        meta = read_metadata(meta_path)
        spec = meta["spec"]
        stem = weights.name[: -len(".safetensors")]
        refs.append(ModelRef(setting_name(stem, setting) if setting else stem, weights,
                             spec["arch"], spec["prior"], meta.get("beta"), setting))  # fmt: skip
    return refs


def _selected_names(selector: str, zoo: dict[str, dict]) -> list[str]:
    """The zoo names a ``models`` keyword selects; slimmable models at every setting."""
    if selector not in ZOO_SELECTORS:
        return [selector]
    recipe = ZOO_SELECTORS[selector]
    names: list[str] = []
    for name, row in zoo.items():
        if recipe not in (None, row["recipe"]):
            continue
        if recipe == "slimmable":
            meta = read_metadata(row["path"])
            names += [setting_name(name, (s["members"], s["rate"])) for s in meta["settings"]]
        else:
            names.append(name)
    if not names:
        raise CheckpointError(
            f"no {selector} models are shipped: train them with `entroguard train --zoo` "
            "(or --recipe bottlefit or slimmable)"
        )
    return names
