"""The rate guard's sequential test: a one-sided CUSUM over each client's packet scores.

The per-packet threshold (:class:`~entroguard.serve.guard.RateGuard`) only sees packets far
above the clean tail; a rate attack that adds +14 % to every packet stays inside the clean
distribution packet by packet. Summed over a client's packets, the shift shows. Each packet's
score is its payload's z-score against the model's clean payload statistics (the checkpoint's
``clean_payload``)::

    z = (payload_bytes - clean mean) / clean std            # clean std units

clipped to ``[-clip, clip]``, and each client keeps the one-sided CUSUM statistic::

    S <- min(cap, max(0, S + clip(z) - k))                   # S starts at 0, cap = 2 h

The client is *in alarm* while ``S > h``. With Gaussian scores of unit variance, this is Page's
CUSUM for a mean shift of ``2 k`` standard deviations (the log-likelihood ratio of "mean
``2k``" against "mean 0" is ``2k (z - k)``), so ``k`` is half the smallest shift the test is
tuned to, and ``h`` sets the false-alarm rate against the delay. Scores are z-scores because
the checkpoint stores the clean mean and std, and because they make ``k`` and ``h`` comparable
across models. The clip bounds what one packet can do: a single outlier adds at most
``clip - k`` (single packets far above the clean tail are the per-packet threshold's job), and
a deliberately tiny packet pays back at most ``clip + k``. The cap bounds how long a client that
returns to clean packets stays in alarm (about ``h / k`` packets).

State is per client (keyed as the byte budgets are), least-recently-used clients dropped past
``max_clients`` and reset after ``cooldown_s`` seconds without a packet. Thread-safe; the clock
(monotonic seconds) is injectable for tests.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from entroguard.serve.lru import LruTable

Clock = Callable[[], float]

DEFAULT_CUSUM_K = 1.5
"""Default reference value k, clean std units per packet. Calibrated by benchmarks/guard.py
on resnet_s-fp/mshp-beta0.01: above the clean mean of every single Fashion-MNIST class (at
most +1.18 std), so one-class clients do not drift into an alarm, and the grid point (k 1.25
to 2) with the shortest worst-model p90 delay to catch rate PGD eps 8/255."""
DEFAULT_CUSUM_H = 17.0
"""Default alarm threshold h, clean std units: 1.25 x the largest statistic (13.1) reached by
any of 55 million clean packets per model in 10,000-packet client streams (test set in random
orders, train set, one-class and i.i.d. streams), rounded up (benchmarks/guard.py)."""
DEFAULT_CUSUM_CLIP = 4.0
"""Default clip of each packet's score, clean std units."""
DEFAULT_CUSUM_COOLDOWN_S = 60.0
"""Default idle time after which a client's statistic is reset, seconds."""
CAP_MULTIPLE = 2.0
"""The statistic is capped at ``CAP_MULTIPLE * h``."""


def check_cusum_params(k: float, h: float, clip: float, cooldown_s: float) -> None:
    """Raise ValueError, naming the option, unless the CUSUM parameters make sense.

    Args:
        k: reference value, clean std units per packet (> 0).
        h: alarm threshold, clean std units (> 0).
        clip: score clip, clean std units (> k, else the statistic can never grow).
        cooldown_s: idle seconds before a client's statistic is reset (> 0).
    """
    for name, value in (("k", k), ("h", h), ("clip", clip), ("cooldown", cooldown_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"guard CUSUM {name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"guard CUSUM {name} must be finite, got {value}")
    if not k > 0:
        raise ValueError(
            f"guard CUSUM k must be > 0 clean std per packet, got {k:g} (with k <= 0 clean "
            "traffic drifts upward and every client ends in alarm)"
        )
    if not h > 0:
        raise ValueError(f"guard CUSUM h must be > 0 clean std, got {h:g}")
    if not clip > k:
        raise ValueError(
            f"guard CUSUM clip ({clip:g}) must be larger than k ({k:g}): a packet adds at most "
            "clip - k to the statistic, so it could never rise"
        )
    if not cooldown_s > 0:
        raise ValueError(f"guard CUSUM cooldown must be > 0 seconds, got {cooldown_s:g}")


@dataclass(frozen=True)
class CusumStep:
    """The sequential test after one packet.

    Attributes:
        statistic: the client's CUSUM statistic S after this packet, clean std units.
        alarm: ``S > h``: the client's packets have been larger than clean ones for a while.
        raised: this packet took S over h (the alarm starts here).
    """

    statistic: float
    alarm: bool
    raised: bool


class Cusum:
    """One stream's one-sided CUSUM (not thread-safe; see :class:`ClientCusums`).

    Args:
        k: reference value, clean std units per packet.
        h: alarm threshold, clean std units.
        clip: scores are clipped to ``[-clip, clip]``.
    """

    __slots__ = ("clip", "h", "k", "cap", "statistic", "last_seen")

    def __init__(self, k: float, h: float, clip: float = DEFAULT_CUSUM_CLIP) -> None:
        check_cusum_params(k, h, clip, 1.0)
        self.k = float(k)
        self.h = float(h)
        self.clip = float(clip)
        self.cap = CAP_MULTIPLE * self.h
        self.statistic = 0.0
        self.last_seen = -math.inf

    @property
    def alarm(self) -> bool:
        return self.statistic > self.h

    def update(self, z: float) -> CusumStep:
        """Add one packet's score ``z`` (clean std units; NaN counts as 0)."""
        before = self.alarm
        z = 0.0 if math.isnan(z) else min(max(z, -self.clip), self.clip)
        self.statistic = min(self.cap, max(0.0, self.statistic + z - self.k))
        alarm = self.alarm
        return CusumStep(self.statistic, alarm, alarm and not before)

    def reset(self) -> None:
        self.statistic = 0.0


class ClientCusums:
    """A :class:`Cusum` per client id; least-recently-used clients dropped past a bound.

    Thread-safe: the packets of one request update their client's statistic in order, under
    one lock. A client silent for ``cooldown_s`` seconds starts again from 0.

    Args:
        k, h, clip: see :class:`Cusum` (clean std units).
        cooldown_s: idle seconds after which a client's statistic is reset.
        max_clients: most clients tracked (>= 1).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        k: float = DEFAULT_CUSUM_K,
        h: float = DEFAULT_CUSUM_H,
        clip: float = DEFAULT_CUSUM_CLIP,
        *,
        cooldown_s: float = DEFAULT_CUSUM_COOLDOWN_S,
        max_clients: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        check_cusum_params(k, h, clip, cooldown_s)
        if int(max_clients) < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self.k = float(k)
        self.h = float(h)
        self.clip = float(clip)
        self.cooldown_s = float(cooldown_s)
        self.max_clients = int(max_clients)
        self._clock = clock
        self._streams: LruTable[Cusum] = LruTable(
            self.max_clients, lambda: Cusum(self.k, self.h, self.clip)
        )
        self._lock = threading.Lock()

    def update(self, client: str, scores: Sequence[float]) -> list[CusumStep]:
        """Add ``scores`` (one per packet, in order, clean std units) to ``client``'s test."""
        with self._lock:
            now = self._clock()
            stream, new = self._streams.get_or_create(client)
            if not new and now - stream.last_seen >= self.cooldown_s:
                stream.reset()
            stream.last_seen = now
            return [stream.update(float(z)) for z in scores]

    def statistic(self, client: str) -> float:
        """``client``'s statistic now (0 for an unknown client), clean std units."""
        with self._lock:
            stream = self._streams.get(client)
            if stream is None or self._clock() - stream.last_seen >= self.cooldown_s:
                return 0.0
            return stream.statistic

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, client: object) -> bool:
        return client in self._streams
