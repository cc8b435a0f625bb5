"""``write_analysis``: the whole analysis of one model, written to a folder.

Used by ``entroguard analyze`` and by the demo; the report's "Where the bits go" section
reads what it writes::

    from entroguard.analysis.run import write_analysis
    write_analysis("resnet_s-mshp-beta0.01", Path("out/analysis"), n_images=64)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from entroguard.analysis.defended_maps import defended_rate_maps, payload_summary
from entroguard.analysis.figure import (
    save_analysis_figure,
    save_bands_figure,
    save_defended_maps_figure,
)
from entroguard.analysis.study import analyze_model
from entroguard.analysis.threat_bands import default_threats, threat_bands
from entroguard.device import resolve_device
from entroguard.threats import Threat

ANALYSIS_JSON = "analysis.json"
ANALYSIS_PNG = "analysis.png"
BANDS_PNG = "bands.png"
DEFENDED_PNG = "rate_maps.png"
#: Images whose clean, attacked and defended rate maps the analysis draws.
DEFENDED_IMAGES = 4


def write_analysis(
    model: str,
    out: Path,
    *,
    n_images: int = 256,
    dataset: str = "fashion-mnist",
    seed: int = 0,
    progress: bool = True,
    threats: Sequence[Threat] | None = None,
    batch_size: int = 256,
    device: str = "cpu",
) -> Path:
    """Analyse ``model`` on the first ``n_images`` test images of ``dataset``; return the path
    of ``out/analysis.json``.

    Writes ``out/analysis.json`` (:func:`~entroguard.analysis.study.analyze_model`'s summary,
    with ``model``, ``dataset`` and a ``threat_bands`` section:
    :func:`~entroguard.analysis.threat_bands.threat_bands`, and a ``defended_maps`` section:
    :func:`~entroguard.analysis.defended_maps.payload_summary`), ``out/analysis.png`` (rate and
    TV maps, band rates), ``out/bands.png`` (threats x DCT bands) and ``out/rate_maps.png`` (the
    first :data:`DEFENDED_IMAGES` images clean, under ``rate_pgd`` eps 8/255 and defended by the
    deployed ``object_tv``). The figures are written before the JSON, and the JSON atomically,
    so a reader that finds the JSON finds them too.

    Args:
        model: zoo model name or checkpoint path.
        out: output folder (created).
        n_images: first N test images.
        dataset: ``fashion-mnist``, ``cifar10`` or ``folder:PATH``.
        seed: base seed of the threats (each threat derives its own, as in a campaign).
        progress: show a progress bar over threats.
        threats: what to apply (default: :func:`~entroguard.analysis.threat_bands.
            default_threats`); an empty list skips the threat bands (no ``threat_bands``
            section, no ``bands.png``, no defended rate maps).
        batch_size: images per model call.
        device: where the model, threats and defence run (``cpu``, ``cuda``, ``cuda:N``,
            ``auto``).

    Raises:
        EntroguardError: unknown model or dataset, or images the model cannot take.
        ValueError: ``n_images`` < 1.
    """
    from entroguard.campaign.models import resolve_models
    from entroguard.data import load_dataset

    if n_images < 1:
        raise ValueError(f"n_images must be positive, got {n_images}")
    (ref,) = resolve_models([model])
    device = resolve_device(device)
    loaded = ref.load().to(device)
    data = load_dataset(dataset, "test").subset(n_images)
    images = data.to_float(slice(0, n_images)).to(device)
    labels = data.labels[:n_images]
    loaded.check_images(images)
    result = analyze_model(loaded, images, batch_size)
    threats = default_threats() if threats is None else list(threats)
    bands = defended = None
    if threats:
        bands = threat_bands(loaded, images, labels, threats, seed=seed, model_name=ref.name,
                             batch_size=batch_size, progress=progress)  # fmt: skip
        defended = defended_rate_maps(loaded, images[:DEFENDED_IMAGES], seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_analysis_figure(result, out / ANALYSIS_PNG, ref.name)
    _save_or_remove(bands, save_bands_figure, out / BANDS_PNG, ref.name)
    _save_or_remove(defended, save_defended_maps_figure, out / DEFENDED_PNG, ref.name)
    summary = {k: v for k, v in result.items() if k != "maps"}
    summary |= {"model": ref.name, "dataset": dataset}
    if bands is not None:
        summary["threat_bands"] = bands
        summary["defended_maps"] = payload_summary(defended)
    path = out / ANALYSIS_JSON
    tmp = path.with_name(f".{ANALYSIS_JSON}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _save_or_remove(data: dict | None, save: Callable, path: Path, title: str) -> None:
    """Draw ``data`` into ``path``; without data, remove the file (never leave a stale figure
    beside the JSON)."""
    if data is None:
        path.unlink(missing_ok=True)
    else:
        save(data, path, title)
