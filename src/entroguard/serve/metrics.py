"""A tiny Prometheus registry: counters, gauges and histograms in the text exposition format.

Only what the server needs (format 0.0.4, ``text/plain; version=0.0.4``): labelled counters,
gauges and cumulative histograms with ``_bucket{le=...}``, ``_sum`` and ``_count``. Thread-safe.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Content type of the exposition."""

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Default histogram buckets for durations, seconds."""
BYTES_BUCKETS: tuple[float, ...] = tuple(float(1 << k) for k in range(6, 23))
"""Default histogram buckets for sizes, bytes (64 B .. 4 MiB)."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str], lock) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = lock

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(
                f"{self.name} takes labels {self.labelnames}, got {tuple(sorted(labels))}"
            )
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    """A monotonically increasing value per label set."""

    kind = "counter"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        lines = self.header()
        for key, v in sorted(self._values.items()):
            lines.append(f"{self.name}{_labels(self.labelnames, key)} {_number(v)}")
        return lines


class Gauge(Counter):
    """A value that can be set to anything, per label set."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)


class Histogram(_Metric):
    """Observations counted in cumulative buckets, with their sum and count, per label set."""

    kind = "histogram"

    def __init__(self, name, help_text, labelnames, lock, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text, labelnames, lock)
        bounds = sorted(float(b) for b in buckets)
        if not bounds or any(math.isnan(b) for b in bounds):
            raise ValueError("a histogram needs at least one numeric bucket bound")
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.buckets = tuple(bounds)
        self._counts: dict[tuple[str, ...], list[int]] = {}
        self._sums: dict[tuple[str, ...], float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * len(self.buckets))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
                    break
            self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, **labels: str) -> int:
        with self._lock:
            return sum(self._counts.get(self._key(labels), []))

    def render(self) -> list[str]:
        lines = self.header()
        for key in sorted(self._counts):
            cumulative = 0
            for bound, c in zip(self.buckets, self._counts[key], strict=True):
                cumulative += c
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {cumulative}")
            labels = _labels(self.labelnames, key)
            lines.append(f"{self.name}_sum{labels} {_number(self._sums[key])}")
            lines.append(f"{self.name}_count{labels} {cumulative}")
        return lines


class Registry:
    """Holds metrics and renders them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> _Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help_text, labelnames, self._lock))  # type: ignore[return-value]

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help_text, labelnames, self._lock))  # type: ignore[return-value]

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS_S,
    ) -> Histogram:
        metric = Histogram(name, help_text, labelnames, self._lock, buckets)
        return self._add(metric)  # type: ignore[return-value]

    def render(self) -> str:
        """The whole exposition, ending with a newline."""
        with self._lock:
            lines: list[str] = []
            for metric in self._metrics.values():
                lines.extend(metric.render())
        return "\n".join(lines) + "\n"


class ServerMetrics:
    """The metrics the entroguard server exports (names prefixed ``entroguard_``)."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.requests = r.counter(
            "entroguard_http_requests_total", "HTTP requests by route and status.",
            ("route", "status"),
        )  # fmt: skip
        self.request_seconds = r.histogram(
            "entroguard_http_request_duration_seconds", "Request handling time, seconds.",
            ("route",),
        )  # fmt: skip
        self.received_bytes = r.counter(
            "entroguard_received_bytes_total", "Request body bytes read on /v1/infer."
        )
        self.packets = r.counter(
            "entroguard_packets_total", "Packets classified (answered with a prediction)."
        )
        self.rejections = r.counter(
            "entroguard_rejections_total", "Requests answered with an error, by reason.",
            ("reason",),
        )  # fmt: skip
        self.guard_decisions = r.counter(
            "entroguard_guard_decisions_total", "Rate-guard verdicts on packets.", ("decision",)
        )
        self.client_alarms = r.counter(
            "entroguard_guard_client_alarms_total",
            "Sequential-test alarms raised: a client's CUSUM statistic crossing h.",
        )
        self.client_alarm_packets = r.counter(
            "entroguard_guard_client_alarm_packets_total",
            "Packets from clients whose sequential test was in alarm, by action.", ("action",),
        )  # fmt: skip
        self.payload_bytes = r.histogram(
            "entroguard_packet_payload_bytes", "Coder payload per packet, bytes.",
            buckets=BYTES_BUCKETS,
        )  # fmt: skip
        self.decode_seconds = r.histogram(
            "entroguard_decode_duration_seconds", "Checking and entropy decoding, per request."
        )
        self.tail_seconds = r.histogram(
            "entroguard_tail_duration_seconds", "Tail (g_s and backbone), per request, seconds."
        )
        self.in_flight = r.gauge("entroguard_in_flight_requests", "Inference requests in flight.")
        self.threshold = r.gauge(
            "entroguard_guard_threshold_bytes", "Rate-guard payload threshold, bytes."
        )
        self.model_info = r.gauge(
            "entroguard_model_info", "The served model (value 1).",
            ("model", "fingerprint", "arch", "prior"),
        )  # fmt: skip

    def render(self) -> str:
        return self.registry.render()
