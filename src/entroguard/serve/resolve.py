"""Find the model a user names (zoo name or checkpoint path) and its clean payload statistics."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path

from entroguard.errors import CheckpointError, DatasetNotFoundError
from entroguard.models.split import SplitClassifier

log = logging.getLogger("entroguard.serve")


@dataclass
class ServedModel:
    """A loaded split model with what the server and the edge need to know about it.

    Attributes:
        name: the zoo name, or the checkpoint's file stem.
        path: the checkpoint's weights file.
        model: the model, eval mode, coder tables built.
        metadata: the checkpoint's JSON metadata.
        classes: class names, index = class id.
    """

    name: str
    path: Path
    model: SplitClassifier
    metadata: dict
    classes: list[str]


def resolve_checkpoint(name: str | Path, zoo_dir: str | Path | None = None) -> tuple[str, Path]:
    """``(name, weights path)`` of a model given as a checkpoint path or a zoo name.

    A path that exists (``.safetensors``, ``.json`` or their common stem) wins; otherwise
    ``name`` is looked up among :func:`entroguard.train.zoo.list_zoo`'s names. Raises
    :class:`CheckpointError` naming the known models when nothing matches.
    """
    from entroguard.train.checkpoint import checkpoint_paths
    from entroguard.train.zoo import default_zoo_dir, list_zoo

    weights, meta = checkpoint_paths(name)
    if weights.is_file() or meta.is_file():
        return weights.stem, weights
    zoo_dir = Path(zoo_dir) if zoo_dir else default_zoo_dir()
    rows = list_zoo(zoo_dir) if zoo_dir.is_dir() else []
    by_name = {row["name"]: row for row in rows}
    if str(name) in by_name:
        return str(name), Path(by_name[str(name)]["path"])
    if not rows:
        raise CheckpointError(
            f"no checkpoint at {name} and no trained zoo in {zoo_dir}: train one with "
            "`entroguard train --zoo` (or set ENTROGUARD_ZOO), or pass a checkpoint path"
        )
    close = difflib.get_close_matches(str(name), list(by_name), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise CheckpointError(
        f"unknown model {name!r}: not a checkpoint path and not in the zoo at {zoo_dir} "
        f"(models: {', '.join(by_name)}).{hint}"
    )


def class_names(metadata: dict, num_classes: int) -> list[str]:
    """Class names for a checkpoint: stored ``classes``, else the dataset's, else the ids."""
    stored = metadata.get("classes")
    if isinstance(stored, list) and len(stored) == num_classes:
        return [str(c) for c in stored]
    if metadata.get("dataset") == "fashion-mnist":
        from entroguard.data.fashion_mnist import CLASSES

        if len(CLASSES) == num_classes:
            return list(CLASSES)
    return [str(i) for i in range(num_classes)]


def load_served_model(
    name: str | Path, zoo_dir: str | Path | None = None, device: str = "cpu"
) -> ServedModel:
    """Load the model ``name`` (zoo name or checkpoint path) for serving or for the edge, on
    ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``auto``; the coder stays on the CPU)."""
    from entroguard.device import resolve_device
    from entroguard.train.checkpoint import load_checkpoint

    model_name, path = resolve_checkpoint(name, zoo_dir)
    model = load_checkpoint(path).to(resolve_device(device))
    metadata = dict(getattr(model, "metadata", {}))
    return ServedModel(
        model_name, path, model, metadata, class_names(metadata, model.spec.num_classes)
    )


def measure_clean_payload(
    model: SplitClassifier, dataset: str, *, limit: int | None = None, batch_size: int = 500
) -> dict:
    """Clean payload statistics of ``model`` on ``dataset``'s test split (bytes per image)."""
    import numpy as np

    from entroguard.data import load_dataset
    from entroguard.measure import payload_stats

    test_set = load_dataset(dataset, "test").subset(limit)
    sizes = []
    for images, *_ in test_set.batches(batch_size):
        sizes.extend(model.compress(images).payload_bytes())
    return payload_stats(np.asarray(sizes))


def clean_stats_for(served: ServedModel, *, dataset: str | None = None) -> dict:
    """The model's stored ``clean_payload``, or measured now on its test set.

    Raises :class:`CheckpointError` with what to do when neither is possible.
    """
    from entroguard.serve.guard import validate_clean_stats

    stored = served.metadata.get("clean_payload")
    if stored is not None:
        try:
            return validate_clean_stats(stored, f"{served.path.name}: clean_payload")
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
    dataset = dataset or served.metadata.get("dataset")
    if not dataset:
        raise CheckpointError(
            f"{served.path.name} carries no clean payload statistics and names no dataset: "
            "re-save it with clean_payload, pass --dataset, or run with --guard-mode off"
        )
    log.warning(
        "%s has no clean payload statistics; measuring them on the %s test set",
        served.name,
        dataset,
    )
    try:
        return measure_clean_payload(served.model, dataset)
    except DatasetNotFoundError as exc:
        raise CheckpointError(
            f"{served.path.name} carries no clean payload statistics and the {dataset} test "
            f"set to measure them is missing ({exc}); re-save the checkpoint with "
            "clean_payload, or run with --guard-mode off"
        ) from None
