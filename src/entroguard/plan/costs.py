"""End-to-end latency and device energy of each way to classify an image, over bandwidths.

Every option is three measured numbers (:class:`OptionCost`): the device's busy time, the bytes
it uploads and the server's time. Over a link of ``bw`` Mbit/s with round-trip time ``rtt``:

* latency (ms) = device_ms + [upload_bytes * 8 / (bw * 1000) + rtt_ms + server_ms if it uploads]
* device energy (mJ) = device_ms * device_compute_w + radio_ms * radio_w, radio_ms being the
  transmission time (ms x W = mJ).

The power figures are named parameters (:class:`PlanParameters`) and assumptions: the defaults
come from published board measurements and are no measurement of this machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

DEFAULT_BANDWIDTHS_MBPS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
OPTIONS = ("local", "offload_png", "offload_jpeg", "split")


@dataclass(frozen=True)
class PlanParameters:
    """The network and the device's power draw (assumptions, not measurements).

    Attributes:
        rtt_ms: round-trip time of the link, added once per uploaded image (ms).
        device_compute_w: device power while computing (W); default 5 W, the Jetson Nano's
            5-watt mode (NVIDIA's specification; a Raspberry Pi 4 under load draws 5-6 W).
        radio_w: device power while transmitting (W); default 1.3 W, a Wi-Fi radio's
            transmit draw of the order reported for the Raspberry Pi and similar boards.
        bandwidths_mbps: uplink bandwidths to evaluate (Mbit/s).
    """

    rtt_ms: float = 20.0
    device_compute_w: float = 5.0
    radio_w: float = 1.3
    bandwidths_mbps: tuple[float, ...] = DEFAULT_BANDWIDTHS_MBPS

    def __post_init__(self) -> None:
        if self.rtt_ms < 0 or self.device_compute_w < 0 or self.radio_w < 0:
            raise ValueError("rtt_ms, device_compute_w and radio_w must be >= 0")
        if not self.bandwidths_mbps or min(self.bandwidths_mbps) <= 0:
            raise ValueError("bandwidths_mbps must be positive Mbit/s values")


@dataclass(frozen=True)
class OptionCost:
    """One way to classify an image: measured device time, upload and server time.

    Attributes:
        option: ``local``, ``offload_png``, ``offload_jpeg`` or ``split``.
        device_ms: the device's compute time per image (ms).
        upload_bytes: bytes sent per image (0: nothing leaves the device).
        server_ms: the server's compute time per image (ms).
    """

    option: str
    device_ms: float
    upload_bytes: float
    server_ms: float

    def radio_ms(self, bandwidth_mbps: float) -> float:
        """Transmission time of the upload (ms) at ``bandwidth_mbps``."""
        return self.upload_bytes * 8 / (bandwidth_mbps * 1000)

    def latency_ms(self, bandwidth_mbps: float, params: PlanParameters) -> float:
        """End-to-end latency per image (ms)."""
        if self.upload_bytes == 0:
            return self.device_ms
        return self.device_ms + self.radio_ms(bandwidth_mbps) + params.rtt_ms + self.server_ms

    def energy_mj(self, bandwidth_mbps: float, params: PlanParameters) -> float:
        """Device energy per image (mJ)."""
        radio = self.radio_ms(bandwidth_mbps) if self.upload_bytes else 0.0
        return self.device_ms * params.device_compute_w + radio * params.radio_w


def plan_rows(costs: list[OptionCost], params: PlanParameters) -> list[dict]:
    """One row per (bandwidth, option): latency, device energy, and whether it wins on each."""
    rows = []
    for bw in params.bandwidths_mbps:
        group = [{"bandwidth_mbps": bw, "option": c.option, "latency_ms": c.latency_ms(bw, params),
                  "device_energy_mj": c.energy_mj(bw, params), "upload_bytes": c.upload_bytes}
                 for c in costs]  # fmt: skip
        fastest = min(group, key=lambda r: r["latency_ms"])
        frugal = min(group, key=lambda r: r["device_energy_mj"])
        for row in group:
            row["fastest"] = row is fastest
            row["least_energy"] = row is frugal
        rows.extend(group)
    return rows


def crossovers(costs: list[OptionCost], params: PlanParameters) -> list[dict]:
    """Bandwidths (Mbit/s) where the fastest option changes, solved exactly.

    Latency is ``a + b / bw`` for every option (``b`` = 8 x bytes / 1000), so two options
    tie at ``bw = (b_i - b_j) / (a_j - a_i)``; the crossovers reported are the ties between the
    fastest options just below and just above, in the evaluated range.
    """
    lo, hi = min(params.bandwidths_mbps), max(params.bandwidths_mbps)

    def fastest(bw: float) -> OptionCost:
        return min(costs, key=lambda c: c.latency_ms(bw, params))

    def parts(c: OptionCost) -> tuple[float, float]:
        if c.upload_bytes == 0:
            return c.device_ms, 0.0
        return c.device_ms + params.rtt_ms + c.server_ms, c.upload_bytes * 8 / 1000

    ties = []
    for i, a in enumerate(costs):
        for b in costs[i + 1 :]:
            (a0, a1), (b0, b1) = parts(a), parts(b)
            if a0 != b0 and (a1 - b1) / (b0 - a0) > 0:
                ties.append((a1 - b1) / (b0 - a0))
    found = []
    for bw in sorted(t for t in ties if lo <= t <= hi):
        below, above = fastest(bw * 0.999), fastest(bw * 1.001)
        if below.option != above.option:
            found.append({"bandwidth_mbps": bw, "from": below.option, "to": above.option})
    return found


def parameters_dict(params: PlanParameters) -> dict:
    """The parameters as JSON-ready values."""
    return asdict(params) | {"bandwidths_mbps": list(params.bandwidths_mbps)}
