"""How each corruption and attack moves image energy between DCT bands, next to the rate.

For one model, every threat is applied (seeded, as a campaign applies it) to the same images;
for each, the mean energy change per band (:func:`entroguard.analysis.bands.energy_change`),
the band shares of the perturbation's energy, and the change of the real payload (the rANS
coder's bytes) against the clean images are recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from entroguard.analysis.bands import (
    N_BANDS,
    band_edges,
    band_energy,
    band_labels,
    band_sizes,
    energy_change,
    high_bands,
    low_ac_bands,
    perturbation_share,
)
from entroguard.analysis.frequency import spearman_per_image
from entroguard.models.split import SplitClassifier
from entroguard.threats import Threat, corruption_threat
from entroguard.threats.corruptions import CORRUPTIONS

#: Corruption severity and attack budget (x 1/255) of :func:`default_threats`.
SEVERITY = 3
EPS_255 = 8.0
ATTACKS = ("noise", "rate_pgd", "clf_pgd", "rate_lowfreq")
#: Threat-row keys whose rank correlation with the payload change is reported.
CORRELATED = ("dc_change_pct", "low_change_pct", "high_change_pct", "high_gain_pct")


def default_threats() -> list[Threat]:
    """The 19 corruptions at severity 3, then noise, rate PGD, classifier PGD and the
    low-frequency rate attack at eps 8/255 (their default hyper-parameters)."""
    return [corruption_threat(c, SEVERITY) for c in CORRUPTIONS] + [
        Threat(a, EPS_255) for a in ATTACKS
    ]


def threat_label(threat: Threat) -> str:
    """A short name: ``gaussian_noise s3`` for a corruption, ``rate_pgd eps8`` for an attack."""
    if threat.kind == "corruption":
        return f"{threat.name.split('/', 1)[1]} s{threat.strength:g}"
    if threat.kind == "attack":
        return f"{threat.name} eps{threat.strength:g}"
    return threat.name


def _payload_sum(model: SplitClassifier, images: Tensor) -> float:
    return float(np.sum(model.compress(images).payload_bytes()))


def threat_bands(
    model: SplitClassifier,
    images: Tensor,
    labels: Tensor,
    threats: Sequence[Threat],
    *,
    seed: int = 0,
    model_name: str = "",
    n_bands: int = N_BANDS,
    batch_size: int = 256,
    progress: bool = False,
) -> dict:
    """Band energy changes and payload changes of ``threats`` on ``images``.

    Args:
        model: the split model (attacks are white-box against it; its coder gives payloads).
        images: (B, 3, H, W) in [0, 1]; labels: (B,) class indices (for ``clf_pgd``).
        threats: what to apply; each gets the seed ``threat.seed_for(seed, model_name)`` and
            the dataset offset of its batch, as in a campaign, so results are reproducible.
        n_bands: AC bands (see :mod:`entroguard.analysis.bands`).
        batch_size: images per threat application and coder call.
        progress: show a progress bar over threats.

    Returns:
        ``{"n", "seed", "n_bands", "labels", "edges", "band_sizes", "clean_payload_bytes",
        "clean_energy_per_pixel", "threats": [...], "spearman_vs_rate"}``. Each threat row:
        ``threat``, ``strength``, ``params``, ``label``, ``payload_bytes`` (mean per image),
        ``rate_change_pct`` (of the mean payload, vs clean), ``energy_change_pct`` (per band,
        mean over images of the change in % of the clean image's AC energy), ``dc_change_pct``,
        ``low_change_pct`` and ``high_change_pct`` (sums over the DC, the lower-half AC and the
        upper-half bands), ``perturbation_share_pct`` (per band, mean over images; an image the
        threat leaves unchanged counts as 0 everywhere) and ``perturbation_high_pct`` (its sum
        over the upper half), ``high_gain_pct`` (change of the
        upper-half energy summed over images, in % of the clean images' upper-half energy: how
        much the threat amplifies what little energy the high bands hold). ``spearman_vs_rate``:
        rank correlation over threats of each of :data:`CORRELATED` with ``rate_change_pct``
        (None for fewer than 3 threats).
    """
    n = int(images.shape[0])
    if n == 0:
        raise ValueError("threat_bands needs at least one image")
    starts = range(0, n, batch_size)
    clean_payload = sum(_payload_sum(model, images[s : s + batch_size]) for s in starts) / n
    pixels = images[0].numel()
    high, low = high_bands(n_bands), low_ac_bands(n_bands)
    energy = band_energy(images, n_bands)
    clean_energy = energy.mean(dim=0) / pixels
    high_before = float(energy[:, high].sum())
    rows = []
    for threat in tqdm(threats, desc="threat bands", unit="threat", disable=not progress):
        change = torch.zeros(n_bands + 1, dtype=torch.float64)
        share = torch.zeros(n_bands + 1, dtype=torch.float64)
        payload, high_after = 0.0, 0.0
        seed_t = threat.seed_for(seed, model_name)
        for s in starts:
            x, y = images[s : s + batch_size], labels[s : s + batch_size]
            adv = threat.apply(model, x, y, seed=seed_t, offset=s).detach()
            change += energy_change(x, adv, n_bands).sum(dim=0)
            share += perturbation_share(x, adv, n_bands).sum(dim=0)
            high_after += float(band_energy(adv, n_bands)[:, high].sum())
            payload += _payload_sum(model, adv)
        change, share, payload = change / n, share / n, payload / n
        rows.append(
            {
                "threat": threat.name,
                "strength": threat.strength,
                "params": dict(threat.params),
                "label": threat_label(threat),
                "payload_bytes": payload,
                "rate_change_pct": 100.0 * (payload / clean_payload - 1.0),
                "energy_change_pct": change.tolist(),
                "dc_change_pct": float(change[0]),
                "low_change_pct": float(change[low].sum()),
                "high_change_pct": float(change[high].sum()),
                "high_gain_pct": 100.0 * (high_after / max(high_before, 1e-12) - 1.0),
                "perturbation_share_pct": share.tolist(),
                "perturbation_high_pct": float(share[high].sum()),
            }
        )
    return {
        "n": n,
        "seed": seed,
        "n_bands": n_bands,
        "labels": band_labels(n_bands),
        "edges": band_edges(n_bands),
        "band_sizes": band_sizes(*images.shape[-2:], n_bands),
        "clean_payload_bytes": clean_payload,
        "clean_energy_per_pixel": clean_energy.tolist(),
        "threats": rows,
        "spearman_vs_rate": {k: _rank_correlation(rows, k) for k in CORRELATED},
    }


def _rank_correlation(rows: list[dict], key: str) -> float | None:
    """Spearman over threats of ``row[key]`` and the payload change; None below 3 threats."""
    if len(rows) < 3:
        return None
    a = torch.tensor([[r[key] for r in rows]], dtype=torch.float64)
    b = torch.tensor([[r["rate_change_pct"] for r in rows]], dtype=torch.float64)
    return float(spearman_per_image(a, b)[0])


def band_table_lines(bands: dict) -> list[str]:
    """A plain-text table of :func:`threat_bands`'s rows, sorted by payload change: payload
    change, then the energy change of the DC, lower-half and upper-half bands (% of the
    clean AC energy), the upper-half gain (% of the clean upper-half energy) and the
    perturbation's share in the upper half."""
    lines = [
        f"  {'threat':<24} {'payload':>8} {'dE DC':>8} {'dE low':>8} {'dE high':>8} "
        f"{'high gain':>9} {'pert. high':>10}"
    ]
    for r in sorted(bands["threats"], key=lambda r: r["rate_change_pct"], reverse=True):
        lines.append(
            f"  {r['label']:<24} {r['rate_change_pct']:+7.1f}% {r['dc_change_pct']:+7.1f}% "
            f"{r['low_change_pct']:+7.1f}% {r['high_change_pct']:+7.1f}% "
            f"{r['high_gain_pct']:+8.1f}% {r['perturbation_high_pct']:9.1f}%"
        )
    return lines
