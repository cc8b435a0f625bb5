"""95 % confidence intervals of a campaign's conditions, from its per-image measurements, for
the report's tables (:func:`entroguard.report.page.with_interval`) and figures.

Top-1 of one condition: Wilson. Mean payload bytes: bootstrap over images. Changes against
clean (payload in %, top-1 in points): a paired bootstrap, the same images resampled clean and
threatened together.
"""

from __future__ import annotations

from entroguard.report.data import Results
from entroguard.report.stats import bootstrap_interval, change_interval, mean_interval
from entroguard.report.stats import wilson_interval as wilson

Interval = tuple[float, float]


def top1_interval(results: Results, model: str, threat: str = "clean", strength: float = 0.0,
                  defense: str = "none") -> Interval | None:  # fmt: skip
    """Wilson interval of the condition's top-1, in %."""
    correct = results.per_image(model, threat, strength, defense)["correct"]
    if not len(correct):
        return None
    low, high = wilson(float(correct.sum()), len(correct))
    return 100 * low, 100 * high


def payload_interval(results: Results, model: str, threat: str = "clean", strength: float = 0.0,
                     defense: str = "none") -> Interval | None:  # fmt: skip
    """Bootstrap interval of the condition's mean payload bytes per image."""
    payload = results.per_image(model, threat, strength, defense)["payload_bytes"]
    if not len(payload):
        return None
    return mean_interval(payload)


def rate_change_interval(results: Results, model: str, threat: str, strength: float,
                         defense: str = "none") -> Interval | None:  # fmt: skip
    """Paired bootstrap interval of the payload change against clean (%)."""
    clean, other = results.paired(model, threat, strength, defense)
    if not len(clean["image"]):
        return None
    return change_interval(clean["payload_bytes"], other["payload_bytes"])


def top1_change_interval(results: Results, model: str, threat: str, strength: float,
                         defense: str = "none") -> Interval | None:  # fmt: skip
    """Paired bootstrap interval of the top-1 change against clean (points)."""
    clean, other = results.paired(model, threat, strength, defense)
    if not len(clean["image"]):
        return None
    a, b = clean["correct"], other["correct"]
    return bootstrap_interval(lambda i: 100 * (b[i].mean(axis=-1) - a[i].mean(axis=-1)), len(a))
