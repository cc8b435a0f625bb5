"""Checkpoints: ``NAME.safetensors`` (learned tensors) + ``NAME.json`` (spec and metadata).

Nothing is unpickled. The coder's integer CDF tables are stored beside the learned tensors and
used as they are on load (format 2): tables rebuilt from floating-point densities can differ in
the last bits between machines, and the head and the tail must code with the same tables.
Format-1 checkpoints (no tables) still load; their tables are rebuilt on this machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from entroguard import __version__
from entroguard.errors import CheckpointError
from entroguard.models.registry import build_from_spec
from entroguard.models.split import CODER_TABLE_SUFFIXES, SplitClassifier, SplitSpec, tensors_digest

FORMAT = "entroguard-split-checkpoint"
FORMAT_VERSION = 2


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(weights, metadata)`` paths for a checkpoint given by either file or its stem."""
    path = Path(path)
    stem = str(path)
    for suffix in (".safetensors", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return Path(stem + ".safetensors"), Path(stem + ".json")


def save_checkpoint(model: SplitClassifier, path: str | Path, **metadata: Any) -> Path:
    """Save ``model`` (after ``prepare_coding``) with JSON-serialisable ``metadata``.

    Returns the weights path. Writes to temporary files first, so a crash never leaves a
    half-written checkpoint under the final name.
    """
    tables = pack_tables(model.coder_tables())
    state = {k: v.detach().cpu().contiguous() for k, v in (model.learned_state() | tables).items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "entroguard_version": __version__,
        "spec": model.spec.to_dict(),
        "fingerprint": model.fingerprint,
        "tables_sha256": tensors_digest(tables),
        **metadata,
    }
    return write_pair(path, state, meta)


def write_pair(path: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``state`` to ``path.safetensors`` and ``meta`` to ``path.json`` through temporary
    files, so a crash never leaves a half-written pair under the final names; returns the
    weights path."""
    weights, meta_path = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp_w, tmp_m = Path(f"{weights}.tmp"), Path(f"{meta_path}.tmp")
    save_file(state, str(tmp_w))
    tmp_m.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tmp_w.replace(weights)
    tmp_m.replace(meta_path)
    return weights


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, checked for format."""
    _, meta_path = checkpoint_paths(path)
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint metadata {meta_path} not found")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON ({exc}); re-save the model") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not an entroguard checkpoint")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{meta_path} is from a newer entroguard; upgrade entroguard")
    return meta


def load_checkpoint(
    path: str | Path,
    *,
    expect_arch: str | None = None,
    expect_prior: str | None = None,
    map_location: str = "cpu",
) -> SplitClassifier:
    """Load a checkpoint into a fresh model, ready to code (tables built, fingerprint checked).

    Raises ``CheckpointError`` when the files are missing or corrupt, when the weights do not
    fit the architecture the metadata names, or when they belong to another model than the one
    expected.
    """
    weights, _ = checkpoint_paths(path)
    meta = read_metadata(path)
    spec = SplitSpec.from_dict(meta["spec"])
    for what, expected, got in (("architecture", expect_arch, spec.arch),
                                ("prior", expect_prior, spec.prior)):  # fmt: skip
        if expected is not None and expected != got:
            raise CheckpointError(
                f"{weights.name} holds a {got} model but a {expected} {what} was asked for; "
                "pick the checkpoint of that model (entroguard zoo lists them)"
            )
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights {weights} not found")
    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({exc})") from exc
    model = build_from_spec(spec)
    tables = {k: state.pop(k) for k in list(state) if k.endswith(CODER_TABLE_SUFFIXES)}
    load_learned_state(model, state, source=weights.name)
    model.to(map_location).eval()
    _prepare_with_tables(model, tables, meta, weights.name)
    if meta.get("fingerprint") and meta["fingerprint"] != model.fingerprint:
        raise CheckpointError(
            f"{weights.name}: rebuilt model fingerprint {model.fingerprint[:8]} differs from the "
            f"saved {meta['fingerprint'][:8]}; the file was modified or written by another version"
        )
    model.metadata = meta  # type: ignore[attr-defined]
    return model


def pack_tables(tables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Store each CDF table (N, L) as its rows' used entries, concatenated (1-D).

    A CompressAI table is as wide as its longest row (``L = max(cdf_length)``) and zero past
    each row's length; a Gaussian table has 64 rows up to 3,000 wide, mostly padding.
    """
    packed = dict(tables)
    for key, cdf in tables.items():
        if key.endswith("_quantized_cdf") and cdf.dim() == 2:
            lengths = tables[key.removesuffix("_quantized_cdf") + "_cdf_length"].tolist()
            packed[key] = torch.cat([row[:n] for row, n in zip(cdf, lengths, strict=True)])
    return packed


def unpack_tables(tables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`pack_tables`; raises ``CheckpointError`` for inconsistent sizes."""
    unpacked = dict(tables)
    for key, flat in tables.items():
        if not key.endswith("_quantized_cdf") or flat.dim() != 1:
            continue
        lengths = tables.get(key.removesuffix("_quantized_cdf") + "_cdf_length")
        if lengths is None or int(lengths.sum()) != flat.numel() or (lengths < 0).any():
            raise CheckpointError(f"stored coder table {key} does not match its row lengths")
        rows = flat.split(lengths.tolist())
        cdf = flat.new_zeros(len(rows), int(lengths.max()) if len(rows) else 0)
        for i, row in enumerate(rows):
            cdf[i, : row.numel()] = row
        unpacked[key] = cdf
    return unpacked


def _prepare_with_tables(
    model: SplitClassifier, tables: dict[str, torch.Tensor], meta: dict, source: str
) -> None:
    """Code with the stored tables (checked against their digest), or rebuild them (format 1)."""
    if not tables:
        model.prepare_coding()
        return
    if meta.get("tables_sha256") != tensors_digest(tables):
        raise CheckpointError(
            f"{source}: the stored coder tables do not match their digest; the file was modified "
            "or damaged: copy the checkpoint again"
        )
    try:
        model.prepare_coding(unpack_tables(tables))
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc


def state_mismatch(
    expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]
) -> tuple[str, list[str]] | None:
    """What keeps ``state`` from loading where ``expected`` is: ``None`` when it fits, else a
    summary ("2 missing (e.g. k); 1 of another shape (...)") and the keys of another shape."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if not (missing or unexpected or wrong):
        return None
    detail = []
    if missing:
        detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        detail.append(
            f"{len(wrong)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs "
            f"{tuple(expected[k].shape)})"
        )
    return "; ".join(detail), wrong


def load_learned_state(model: SplitClassifier, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model``, with one clear error naming what does not fit."""
    mismatch = state_mismatch(model.learned_state(), state)
    if mismatch is not None:
        raise CheckpointError(
            f"{source} does not fit a {model.spec.arch}/{model.spec.prior} model: "
            + mismatch[0]
            + ". It is a checkpoint of another architecture; load it with the matching --arch"
        )
    model.load_state_dict(state, strict=False)
