"""The rate guard: packets far above clean sizes, sustained shifts per client, byte budgets.

Three separate defences:

* :class:`RateGuard` scores each packet against the clean payload-size statistics of its model
  (measured on the clean test set and stored in the checkpoint as ``clean_payload``, see
  :func:`clean_payload_stats`). A packet whose payload exceeds ``threshold_bytes`` =
  clean quantile ``q`` x ``multiple`` (default: the 0.999 quantile x 1.10) is flagged
  (answered, and counted) or refused (HTTP 422, reason ``"rate_anomaly"``), per ``mode``.
  Rate attacks inflate the payload (up to +95% in the paper); the guard sees exactly that.
* :class:`~entroguard.serve.sequential.ClientCusums` (on unless ``cusum=False``) sums each
  client's packet scores in a one-sided CUSUM and raises a *client alarm* when the client's
  packets have been larger than clean ones for a while (a sustained shift that no single
  packet shows); an alarm is flagged or refused per ``mode`` like a packet over the threshold.
* :class:`ClientBudgets` keeps a token bucket of bytes per client (HTTP 429 with
  ``Retry-After`` when a request does not fit), so one client cannot flood the server whatever
  its packets look like.

Both take an injectable clock (seconds, monotonic) for tests.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from entroguard.serve.lru import LruTable
from entroguard.serve.sequential import (
    DEFAULT_CUSUM_CLIP,
    DEFAULT_CUSUM_COOLDOWN_S,
    DEFAULT_CUSUM_H,
    DEFAULT_CUSUM_K,
    check_cusum_params,
)

GuardMode = Literal["flag", "refuse", "off"]
GUARD_MODES: tuple[str, ...] = ("flag", "refuse", "off")
DEFAULT_GUARD_QUANTILE = 0.999
DEFAULT_GUARD_MULTIPLE = 1.10
DEFAULT_BUDGET_BYTES_PER_S = 1 << 20
"""Default per-client refill rate of the byte budget: 1 MiB/s."""
DEFAULT_BURST_BYTES = 4 << 20
"""Default per-client bucket size: 4 MiB."""

MIN_SCALE_BYTES = 1.0
"""Smallest payload scale of a z-score, bytes (payloads are whole bytes)."""

Clock = Callable[[], float]


def clean_payload_stats(payload_bytes: np.ndarray) -> dict:
    """Summary of clean payload sizes, as stored in a checkpoint's ``clean_payload``.

    Args:
        payload_bytes: coder payload per image in bytes, shape (N,), N >= 1, on clean images.

    Returns:
        ``{"n": int, "mean": float, "std": float, "quantiles": {"0.5": v, "0.9": v,
        "0.99": v, "0.999": v}, "max": int}``, all in bytes per image; quantiles use numpy's
        default linear interpolation, ``std`` is the population standard deviation. The one
        implementation is :func:`entroguard.measure.payload_stats` (what training stores).
    """
    from entroguard.measure import payload_stats

    return payload_stats(payload_bytes)


def validate_clean_stats(stats: object, source: str = "clean_payload") -> dict:
    """Check the shape of a ``clean_payload`` dict; returns it. Raises ValueError, naming what."""
    if not isinstance(stats, Mapping):
        raise ValueError(f"{source} must be a JSON object, got {type(stats).__name__}")
    missing = [k for k in ("n", "mean", "std", "quantiles", "max") if k not in stats]
    if missing:
        raise ValueError(f"{source} lacks {', '.join(missing)}; re-measure the model")
    quantiles = stats["quantiles"]
    if not isinstance(quantiles, Mapping) or not quantiles:
        raise ValueError(f"{source}.quantiles must be a non-empty object of quantile -> bytes")
    for k, v in quantiles.items():
        try:
            q = float(k)
        except ValueError:
            raise ValueError(f"{source}.quantiles key {k!r} is not a number") from None
        if not 0 < q < 1 or not _finite_nonneg(v):
            raise ValueError(f"{source}.quantiles[{k!r}] = {v!r} is not a valid quantile")
    for key in ("mean", "std", "max"):
        if not _finite_nonneg(stats[key]):
            raise ValueError(f"{source}.{key} = {stats[key]!r} is not a finite size in bytes")
    if not isinstance(stats["n"], int) or stats["n"] < 1:
        raise ValueError(f"{source}.n = {stats['n']!r} is not a positive count")
    return dict(stats)


def _finite_nonneg(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


@dataclass(frozen=True)
class GuardConfig:
    """How the server guards its rate.

    Attributes:
        mode: ``"flag"`` (answer and mark), ``"refuse"`` (HTTP 422) or ``"off"``.
        quantile: which stored clean quantile the threshold starts from (0.5, 0.9, 0.99 or
            0.999), or 1.0 for the clean maximum.
        multiple: factor applied to that quantile (> 0); threshold = quantile x multiple, bytes.
        budget_bytes_per_s: per-client refill rate of the byte budget; 0 disables budgets.
        burst_bytes: per-client bucket size in bytes (largest burst).
        max_clients: most clients kept, for the byte budgets and for the sequential test
            each (least recently used are dropped).
        cusum: run the per-client sequential test (:mod:`~entroguard.serve.sequential`);
            ignored when ``mode`` is ``"off"``.
        cusum_k: its reference value, clean std units per packet (> 0).
        cusum_h: its alarm threshold, clean std units (> 0).
        cusum_clip: each packet's score is clipped to +-this, clean std units (> cusum_k).
        cusum_cooldown_s: a client silent this long starts again from 0, seconds (> 0).
    """

    mode: GuardMode = "flag"
    quantile: float = DEFAULT_GUARD_QUANTILE
    multiple: float = DEFAULT_GUARD_MULTIPLE
    budget_bytes_per_s: float = DEFAULT_BUDGET_BYTES_PER_S
    burst_bytes: float = DEFAULT_BURST_BYTES
    max_clients: int = 10_000
    cusum: bool = True
    cusum_k: float = DEFAULT_CUSUM_K
    cusum_h: float = DEFAULT_CUSUM_H
    cusum_clip: float = DEFAULT_CUSUM_CLIP
    cusum_cooldown_s: float = DEFAULT_CUSUM_COOLDOWN_S

    def __post_init__(self) -> None:
        if self.mode not in GUARD_MODES:
            raise ValueError(f"guard mode {self.mode!r} unknown: choose {', '.join(GUARD_MODES)}")
        if not (math.isfinite(self.multiple) and self.multiple > 0):
            raise ValueError(f"guard multiple must be > 0, got {self.multiple}")
        if self.budget_bytes_per_s < 0 or not math.isfinite(self.budget_bytes_per_s):
            raise ValueError(f"client budget must be >= 0 bytes/s, got {self.budget_bytes_per_s}")
        if self.budget_bytes_per_s > 0 and not (self.burst_bytes > 0):
            raise ValueError(f"client burst must be > 0 bytes, got {self.burst_bytes}")
        if self.max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {self.max_clients}")
        check_cusum_params(self.cusum_k, self.cusum_h, self.cusum_clip, self.cusum_cooldown_s)

    @property
    def sequential(self) -> bool:
        """Whether the per-client sequential test runs (on, and the guard is not off)."""
        return self.cusum and self.mode != "off"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GuardDecision:
    """The guard's verdict on one packet.

    Attributes:
        decision: ``"pass"``, ``"flag"`` or ``"refuse"`` (``"pass"`` when the guard is off).
        payload_bytes: the packet's coder payload, bytes.
        threshold_bytes: the threshold it was compared with, bytes.
        score: payload / threshold (> 1 means over the threshold).
        z: (payload - clean mean) / max(clean std, 1 byte), the sequential test's score (0
            when the guard has no statistics). Payloads are whole bytes, hence the floor.
        client_alarm: the client's sequential test is in alarm after this packet (its
            statistic is over ``h``); False when the test is off.
        cusum: the client's CUSUM statistic after this packet, clean std units; None when the
            test is off.
        alarm_raised: this packet took the client's statistic over ``h`` (for metrics and
            logs; not in :meth:`to_dict`).
    """

    decision: str
    payload_bytes: int
    threshold_bytes: float
    score: float
    z: float
    client_alarm: bool = False
    cusum: float | None = None
    alarm_raised: bool = False

    def to_dict(self) -> dict:
        return {
            "decision": self.decision,
            "score": _json_number(self.score, 4),
            "threshold_bytes": _json_number(self.threshold_bytes, 2),
            "client_alarm": self.client_alarm,
            "cusum": None if self.cusum is None else _json_number(self.cusum, 3),
        }


def _json_number(value: float, digits: int) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


class RateGuard:
    """Scores packets against a model's clean payload statistics.

    Args:
        stats: the model's ``clean_payload`` dict (see :func:`clean_payload_stats`); may be
            None only with ``mode="off"``.
        config: mode, quantile and multiple.
    """

    def __init__(self, stats: Mapping | None, config: GuardConfig | None = None) -> None:
        self.config = config or GuardConfig()
        if stats is None:
            if self.config.mode != "off":
                raise ValueError(
                    "the rate guard needs the model's clean payload statistics; "
                    "measure them or turn the guard off"
                )
            self.stats = None
            self.threshold_bytes = math.inf
            return
        self.stats = validate_clean_stats(stats)
        self.threshold_bytes = threshold_from_stats(
            self.stats, self.config.quantile, self.config.multiple
        )

    def score(self, payload_bytes: int) -> GuardDecision:
        """The verdict on one packet of ``payload_bytes`` bytes of coder payload."""
        score = payload_bytes / self.threshold_bytes if self.threshold_bytes > 0 else math.inf
        over = payload_bytes > self.threshold_bytes
        if self.config.mode == "off" or not over:
            decision = "pass"
        else:
            decision = self.config.mode
        z = 0.0
        if self.stats:
            scale = max(float(self.stats["std"]), MIN_SCALE_BYTES)
            z = (payload_bytes - float(self.stats["mean"])) / scale
        return GuardDecision(decision, int(payload_bytes), self.threshold_bytes, score, z)

    def describe(self) -> dict:
        """The guard's settings and threshold, for ``/v1/models``."""
        threshold = self.threshold_bytes if math.isfinite(self.threshold_bytes) else None
        return {**self.config.to_dict(), "threshold_bytes": threshold}


def threshold_from_stats(stats: Mapping, quantile: float, multiple: float) -> float:
    """``stats``' ``quantile`` (a stored key, or 1.0 for the max) times ``multiple``, bytes."""
    if quantile == 1.0:
        base = float(stats["max"])
    else:
        table = {float(k): float(v) for k, v in stats["quantiles"].items()}
        if quantile not in table:
            known = ", ".join(f"{q:g}" for q in sorted(table)) + ", 1 (the max)"
            raise ValueError(
                f"no clean quantile {quantile:g} stored with the model: choose one of {known}"
            )
        base = table[quantile]
    return base * multiple


class TokenBucket:
    """A bucket of ``burst`` tokens (bytes) refilled at ``rate`` tokens per second.

    Args:
        rate: refill rate, bytes per second (> 0).
        burst: capacity, bytes (> 0); the bucket starts full.
        clock: monotonic time in seconds.
    """

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        if not rate > 0 or not burst > 0:
            raise ValueError(f"token bucket needs rate > 0 and burst > 0, got {rate}, {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._stamp = now

    @property
    def tokens(self) -> float:
        """Tokens (bytes) available now."""
        self._refill()
        return self._tokens

    def charge(self, amount: float) -> None:
        """Take ``amount`` tokens even if the bucket goes below zero (a debt repaid by the
        refill before :meth:`wait_for` ``(0)`` says the next request may pass)."""
        self._refill()
        self._tokens -= amount

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` tokens will be available (0.0: now); takes nothing."""
        self._refill()
        return max(0.0, amount - self._tokens) / self.rate

    def consume(self, amount: float) -> float:
        """Take ``amount`` bytes if available: returns 0.0; else takes nothing and returns the
        seconds to wait until they will be (``inf`` if ``amount`` exceeds the burst)."""
        self._refill()
        if amount <= self._tokens:
            self._tokens -= amount
            return 0.0
        if amount > self.burst:
            return math.inf
        return (amount - self._tokens) / self.rate


class ClientBudgets:
    """One :class:`TokenBucket` per client id, least-recently-used buckets dropped past a bound.

    Thread-safe. With ``rate == 0`` budgets are off and every request passes.
    """

    def __init__(
        self, rate: float, burst: float, *, max_clients: int = 10_000, clock: Clock = time.monotonic
    ) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = int(max_clients)
        self._clock = clock
        self._buckets: LruTable[TokenBucket] = LruTable(
            self.max_clients, lambda: TokenBucket(self.rate, self.burst, self._clock)
        )
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def consume(self, client: str, amount: float) -> float:
        """Charge ``amount`` bytes to ``client``: 0.0 if it fits, else seconds to wait."""
        if not self.enabled:
            return 0.0
        with self._lock:
            return self._bucket(client).consume(amount)

    def _bucket(self, client: str) -> TokenBucket:
        """``client``'s bucket, made full if new (the least recently used dropped past
        ``max_clients``); call with the lock held."""
        return self._buckets.get_or_create(client)[0]

    def charge(self, client: str, amount: float) -> None:
        """:meth:`TokenBucket.charge` ``client``'s bucket (nothing when budgets are off)."""
        if self.enabled:
            with self._lock:
                self._bucket(client).charge(amount)

    def wait_for(self, client: str, amount: float = 1.0) -> float:
        """Seconds until ``client`` has ``amount`` tokens (0.0: now, or budgets off); takes
        nothing (a client never seen has a full bucket)."""
        if not self.enabled:
            return 0.0
        with self._lock:
            bucket = self._buckets.get(client)
            return 0.0 if bucket is None else bucket.wait_for(amount)

    def clients(self) -> list[str]:
        """The clients with a bucket, least recently charged first."""
        with self._lock:
            return list(self._buckets)

    def __len__(self) -> int:
        return len(self._buckets)
