"""A deadline-aware edge: pick a slimmable head's setting per request from the measured link.

After Assine et al. (2023): the edge keeps an exponentially weighted moving average (alpha
0.4) of the uplink bandwidth it measures on every reply, and before each request picks the
most accurate setting whose predicted time, device time + packet bits / bandwidth + round
trip, fits within ``margin`` (0.8) of the deadline; when none fits, the fastest. Device time
per setting is measured at start-up on this machine; packet bytes and accuracy per setting
come from the checkpoint's clean measurements. Unlike the published harness, which sent random
bytes of the nominal size, every request carries the real packet.

:class:`ShapedTransport` simulates a link on loopback for tests and what-if runs: each request
is delayed by a round-trip time plus its bytes over the bandwidth a deterministic trace gives
for that request.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import httpx
import torch

from entroguard.errors import InputError
from entroguard.models.slimmable import SlimmableSplitClassifier, setting_name
from entroguard.serve.client import EdgeClient

Setting = tuple[int, int]
EWMA_ALPHA = 0.4
DEADLINE_MARGIN = 0.8


@dataclass(frozen=True)
class SettingProfile:
    """What the controller knows of one setting: device ms, packet bytes, clean top-1."""

    setting: Setting
    device_ms: float
    packet_bytes: float
    top1: float


def measure_device_ms(
    model: SlimmableSplitClassifier, image: torch.Tensor, repeats: int = 5
) -> dict[Setting, float]:
    """Median milliseconds for the head to turn ``image`` (1, 3, H, W) into a packet, per
    setting; the model is left at its largest setting."""
    times = {}
    for setting in model.settings:
        model.set_mode(*setting)
        model.to_packets(image)  # warm-up
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.to_packets(image)
            samples.append((time.perf_counter() - start) * 1e3)
        times[setting] = statistics.median(samples)
    model.set_mode(*model.largest)
    return times


def setting_profiles(
    model: SlimmableSplitClassifier, metadata: dict, device_ms: dict[Setting, float]
) -> list[SettingProfile]:
    """One profile per trained setting, from the checkpoint's ``settings`` rows."""
    rows = {(int(r["members"]), int(r["rate"])): r for r in metadata.get("settings", [])}
    missing = [s for s in model.settings if s not in rows]
    if missing:
        raise InputError(
            f"the checkpoint has no clean measurements for settings {missing[:3]}: re-measure "
            "it (entroguard train --recipe slimmable writes them)"
        )
    return [SettingProfile(s, device_ms[s], float(rows[s]["packet_bytes"]),
                           float(rows[s]["top1"])) for s in model.settings]  # fmt: skip


class DeadlineController:
    """Chooses the setting of the next request.

    Args:
        profiles: every setting's device time, packet bytes and accuracy.
        deadline_ms: the per-request deadline, milliseconds.
        rtt_ms: the link's round-trip time, milliseconds (added to every prediction).
        initial_mbps: the bandwidth assumed before the first measurement, Mbit/s.
        alpha: EWMA weight of the newest measurement.
        margin: the fraction of the deadline a prediction may use.
    """

    def __init__(
        self,
        profiles: Sequence[SettingProfile],
        deadline_ms: float,
        *,
        rtt_ms: float = 0.0,
        initial_mbps: float = 1.0,
        alpha: float = EWMA_ALPHA,
        margin: float = DEADLINE_MARGIN,
    ) -> None:
        if deadline_ms <= 0 or initial_mbps <= 0 or not 0 < alpha <= 1 or not 0 < margin <= 1:
            raise ValueError("deadline and bandwidth must be > 0, alpha and margin in (0, 1]")
        self.profiles = list(profiles)
        self.deadline_ms = deadline_ms
        self.rtt_ms = rtt_ms
        self.bandwidth_mbps = initial_mbps
        self.alpha = alpha
        self.margin = margin

    def predicted_ms(self, profile: SettingProfile) -> float:
        """Device time + transfer time at the current estimate + round trip, ms."""
        transfer_ms = profile.packet_bytes * 8 / (self.bandwidth_mbps * 1e3)
        return profile.device_ms + transfer_ms + self.rtt_ms

    def choose(self) -> SettingProfile:
        """The most accurate setting predicted to fit, else the fastest."""
        budget = self.margin * self.deadline_ms
        fitting = [p for p in self.profiles if self.predicted_ms(p) <= budget]
        if fitting:
            return max(fitting, key=lambda p: (p.top1, -self.predicted_ms(p)))
        return min(self.profiles, key=self.predicted_ms)

    def observe(self, sent_bytes: int, transfer_ms: float) -> None:
        """Fold one measured transfer (bytes sent, ms on the link) into the estimate."""
        sample = sent_bytes * 8 / (max(transfer_ms, 1e-3) * 1e3)
        self.bandwidth_mbps = self.alpha * sample + (1 - self.alpha) * self.bandwidth_mbps


class ShapedTransport(httpx.HTTPTransport):
    """An httpx transport that delays each request like a link would: ``rtt_ms`` plus the
    request body's bits over ``trace[i % len(trace)]`` Mbit/s for the i-th request."""

    def __init__(self, trace_mbps: Sequence[float], rtt_ms: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not trace_mbps or min(trace_mbps) <= 0:
            raise ValueError("the bandwidth trace needs at least one value, all > 0 Mbit/s")
        self.trace = list(trace_mbps)
        self.rtt_ms = rtt_ms
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        if request.method == "POST":
            mbps = self.trace[self.requests % len(self.trace)]
            self.requests += 1
            time.sleep((self.rtt_ms + len(body) * 8 / (mbps * 1e3)) / 1e3)
        return super().handle_request(request)


@dataclass
class DeadlineRecord:
    """One request: the setting used, bytes, times (ms), whether it met the deadline."""

    setting: str
    packet_bytes: int
    device_ms: float
    latency_ms: float
    total_ms: float
    hit: bool
    correct: bool | None

    def to_dict(self) -> dict:
        return asdict(self)


def run_deadline(
    model: SlimmableSplitClassifier,
    client: EdgeClient,
    images: torch.Tensor,
    labels: Sequence[int] | None,
    choose: Callable[[], Setting],
    observe: Callable[[int, float], None],
    deadline_ms: float,
) -> list[DeadlineRecord]:
    """Send ``images`` (N, 3, H, W) one request each at the setting ``choose()`` returns;
    ``observe(bytes, link_ms)`` gets each measured transfer."""
    records = []
    for i in range(len(images)):
        members, rate = choose()
        model.set_mode(members, rate)
        start = time.perf_counter()
        packet = model.to_packets(images[i : i + 1])[0]
        device_ms = (time.perf_counter() - start) * 1e3
        reply = client.infer(packet)
        latency_ms = reply.latency_s * 1e3
        observe(len(packet), max(latency_ms - float(reply.body.get("server_ms", 0.0)), 1e-3))
        total = device_ms + latency_ms
        correct = None if labels is None else int(reply.body["predicted"]) == int(labels[i])
        records.append(DeadlineRecord(setting_name("", (members, rate)).lstrip("@"),
                                      len(packet), device_ms, latency_ms, total,
                                      total <= deadline_ms, correct))  # fmt: skip
    model.set_mode(*model.largest)
    return records


def summarize_deadline(records: Sequence[DeadlineRecord]) -> dict:
    """Deadline hits (share), accuracy, mean packet bytes and the settings used."""
    n = len(records)
    judged = [r.correct for r in records if r.correct is not None]
    used: dict[str, int] = {}
    for r in records:
        used[r.setting] = used.get(r.setting, 0) + 1
    return {
        "n": n,
        "deadline_hits": sum(r.hit for r in records) / max(n, 1),
        "accuracy": sum(judged) / len(judged) if judged else None,
        "packet_bytes": sum(r.packet_bytes for r in records) / max(n, 1),
        "mean_total_ms": sum(r.total_ms for r in records) / max(n, 1),
        "settings_used": used,
    }


def compare_on_trace(
    model: SlimmableSplitClassifier,
    profiles: Sequence[SettingProfile],
    server: str,
    images: torch.Tensor,
    labels: Sequence[int] | None,
    *,
    deadline_ms: float,
    trace_mbps: Sequence[float] | None,
    rtt_ms: float = 0.0,
    fixed: Sequence[Setting] = (),
) -> list[dict]:
    """The adaptive controller, then each ``fixed`` setting, over the same images and the
    same link (a fresh :class:`ShapedTransport` on ``trace_mbps`` each; None: the real
    network). One summary row per policy, ``policy`` = ``"adaptive"`` or the setting."""
    rows = []
    policies: list[Setting | None] = [None, *fixed]
    for policy in policies:
        transport = ShapedTransport(trace_mbps, rtt_ms) if trace_mbps else None
        with EdgeClient(server, transport=transport, retries=0) as client:
            if policy is None:
                controller = DeadlineController(profiles, deadline_ms, rtt_ms=rtt_ms)
                choose, observe = (lambda c=controller: c.choose().setting), controller.observe
            else:
                choose, observe = (lambda policy=policy: policy), (lambda *_: None)
            records = run_deadline(model, client, images, labels, choose, observe, deadline_ms)
        name = "adaptive" if policy is None else setting_name("", policy).lstrip("@")
        rows.append({"policy": name, **summarize_deadline(records),
                     "records": [r.to_dict() for r in records]})  # fmt: skip
    return rows
