"""Measure a split model on images through the real bitstream.

Three sizes are kept apart: *estimated* bytes from the likelihoods (-log2 p / 8), *payload*
bytes the rANS coder really produced, and *packet* bytes on the wire (payload + header).
Accuracy is the tail's accuracy on the latents decoded from the packets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from entroguard.models.split import SplitClassifier


@dataclass
class Measurement:
    """Per-image measurements, each an array of shape (N,)."""

    est_bytes: np.ndarray
    payload_bytes: np.ndarray
    packet_bytes: np.ndarray
    correct: np.ndarray
    predicted: np.ndarray

    @property
    def n(self) -> int:
        return len(self.correct)

    def summary(self) -> dict[str, float]:
        """Means per image: top1 (0-1), est_bytes, payload_bytes, packet_bytes."""
        return {
            "n": self.n,
            "top1": float(self.correct.mean()),
            "est_bytes": float(self.est_bytes.mean()),
            "payload_bytes": float(self.payload_bytes.mean()),
            "packet_bytes": float(self.packet_bytes.mean()),
        }

    def payload_stats(self) -> dict:
        """Distribution of payload bytes per image (the rate guard's clean reference).

        ``{"n", "mean", "std", "quantiles": {"0.5", "0.9", "0.99", "0.999"}, "max"}``, bytes.
        """
        return payload_stats(self.payload_bytes)

    @staticmethod
    def concat(parts: list[Measurement]) -> Measurement:
        return Measurement(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in Measurement.__annotations__)
        )


STAT_QUANTILES = ("0.5", "0.9", "0.99", "0.999")


def payload_stats(payload_bytes: np.ndarray) -> dict:
    """Summary of payload sizes (bytes per image, shape (N,), N >= 1).

    Quantiles use numpy's linear interpolation; ``std`` is the population deviation.
    """
    x = np.asarray(payload_bytes, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("payload_stats needs at least one payload size")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError("payload sizes must be finite and >= 0 bytes")
    qs = np.quantile(x, [float(q) for q in STAT_QUANTILES])
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std()),
        "quantiles": {k: float(v) for k, v in zip(STAT_QUANTILES, qs, strict=True)},
        "max": int(round(float(x.max()))),
    }


@dataclass
class Analyzed:
    """The device half of a measurement: the latent and its estimated size.

    Attributes:
        y: latents (B, C, h, w) on the model's device.
        est_bytes: estimated bytes per image from the likelihoods, shape (B,).
    """

    y: Tensor
    est_bytes: np.ndarray


@torch.no_grad()
def analyze_batch(model: SplitClassifier, images: Tensor) -> Analyzed:
    """Run the head on ``images`` (B, 3, H, W) in [0, 1] and estimate each latent's size."""
    y = model.analyze(images)
    est_bits = model.codec.likelihoods(y, "round").bits()
    return Analyzed(y, (est_bits / 8).cpu().numpy().astype(np.float64))


@torch.no_grad()
def code_batch(model: SplitClassifier, analyzed: Analyzed, labels: Tensor) -> Measurement:
    """The coding half: entropy-code the latents into packets, decode them and classify."""
    packets = model.packets(model.encode(analyzed.y))
    encoded = model.packets_to_batch(packets)
    logits = model.classify(model.decompress(encoded))
    predicted = logits.argmax(dim=1).cpu()
    return Measurement(
        est_bytes=analyzed.est_bytes,
        payload_bytes=np.array(encoded.payload_bytes(), dtype=np.int64),
        packet_bytes=np.array([len(p) for p in packets], dtype=np.int64),
        correct=(predicted == labels.cpu()).numpy(),
        predicted=predicted.numpy(),
    )


def measure_batch(model: SplitClassifier, images: Tensor, labels: Tensor) -> Measurement:
    """Code ``images`` (B, 3, H, W) in [0, 1] into packets, decode them, classify (on the
    model's device): :func:`analyze_batch` then :func:`code_batch`."""
    return code_batch(model, analyze_batch(model, images), labels)


def measure(
    model: SplitClassifier,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    total: int | None = None,
    progress: bool = True,
    desc: str = "measure",
) -> Measurement:
    """Measure over ``(images, labels)`` batches; ``total`` images for the progress bar."""
    model.eval()
    parts = []
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for images, labels, *_ in batches:
            parts.append(measure_batch(model, images, labels))
            bar.update(len(labels))
    return Measurement.concat(parts)
