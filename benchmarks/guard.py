"""Calibration and measurement of the rate guard's per-client sequential test (CUSUM).

For each model (default: resnet_s-fp-beta0.01 and resnet_s-mshp-beta0.01, Fashion-MNIST), in
one run:

1. **Scores**: every clean test and train image is encoded by the model's head, and each packet
   is scored by the server's :class:`~entroguard.serve.guard.RateGuard` (z = (payload - clean
   mean) / clean std, the checkpoint's ``clean_payload``, measured on the test set). Rate-PGD
   packets (``entroguard.threats.attacks.RatePGD``, paper settings: 20 steps of 0.1 eps,
   expectation over 16 noise copies) are made for a seeded random subset of test images at
   each budget (default eps 2, 4, 8 / 255).
2. **Per-packet guard** at its default threshold (clean q0.999 x 1.10): false positives on the
   clean packets and detection rate on the attacked ones (and 1 / rate, the expected packets
   until its first flag on a fully attacked stream).
3. **False alarms** of the CUSUM on clean client streams of ``--stream-len`` (10,000) packets:
   the test set in ``--test-streams`` seeded random orders (in-sample: the statistics come from
   the test set); the train set shuffled and cut into streams (out of sample); one-class
   streams (every packet from one Fashion-MNIST class, drawn at random from its test and train
   images: a device that only ever sees shirts, say); and i.i.d. streams drawn from all clean
   images (a false-alarm rate per packet). Reported: streams with an alarm, alarms raised per
   packet, and the largest statistic reached (against h).
4. **Detection delay**: packets until the alarm for clients sending only attacked packets
   (drawn at random from the attacked set), from a fresh client and from one that sent
   ``--warmup`` clean packets first (delay counted from its first attacked packet).
5. **Calibration grid** (``--grid-k``): for each k, the largest statistic any clean stream of
   any model reached, the h it gives (x ``--margin``, rounded up) and every model's delays at
   that h; the defaults are the grid point with the smallest worst-model p90 delay at eps 8.
6. **Over HTTP** (unless ``--no-http``): the real server (in a thread, on loopback) is sent one
   clean stream and one attacked stream per budget, one packet per request, each as its own
   ``X-Client-Id``; the ``client_alarm`` it answers must match the simulation packet by packet.

The simulation (vectorised over streams) runs the same arithmetic as
:class:`~entroguard.serve.sequential.Cusum`; it is checked against that class on a few streams.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/guard.py                      # defaults, both models
    OMP_NUM_THREADS=1 python benchmarks/guard.py --grid-k 1,1.25,1.5,1.75,2 --out guard.json
    OMP_NUM_THREADS=1 python benchmarks/guard.py --cusum-k 1 --cusum-h 10 --no-http
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from entroguard.serve.sequential import (
    CAP_MULTIPLE,
    DEFAULT_CUSUM_CLIP,
    DEFAULT_CUSUM_H,
    DEFAULT_CUSUM_K,
    Cusum,
)

MODELS = ("resnet_s-fp-beta0.01", "resnet_s-mshp-beta0.01")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="zoo models, comma-separated")
    p.add_argument("--zoo-dir", type=Path, help="zoo folder (default: the shipped zoo)")
    p.add_argument("--cusum-k", type=float, default=DEFAULT_CUSUM_K, help="k, clean std")
    p.add_argument("--cusum-h", type=float, default=DEFAULT_CUSUM_H, help="h, clean std")
    p.add_argument("--cusum-clip", type=float, default=DEFAULT_CUSUM_CLIP, help="clip, clean std")
    p.add_argument("--eps", default="2,4,8", help="rate-PGD budgets, grey levels")
    p.add_argument("--attack-images", type=int, default=500, help="test images attacked")
    p.add_argument("--train-images", type=int, default=60_000, help="clean train images")
    p.add_argument("--stream-len", type=int, default=10_000, help="packets per clean stream")
    p.add_argument("--test-streams", type=int, default=20, help="test-set orders")
    p.add_argument("--class-streams", type=int, default=500, help="one-class streams per class")
    p.add_argument("--iid-streams", type=int, default=500, help="i.i.d. clean streams")
    p.add_argument("--attack-streams", type=int, default=1000, help="attacked streams per eps")
    p.add_argument("--max-delay", type=int, default=2000, help="attacked packets per stream")
    p.add_argument("--warmup", type=int, default=1000, help="clean packets before an attack")
    p.add_argument("--grid-k", default="", help="calibration grid of k, comma-separated")
    p.add_argument("--margin", type=float, default=1.25, help="h = margin x largest clean S")
    p.add_argument("--http", action=argparse.BooleanOptionalAction, default=True,
                   help="check the real server's answers on a few streams")  # fmt: skip
    p.add_argument("--http-clean", type=int, default=2000, help="clean packets sent over HTTP")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the results JSON here")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- data
def encode_payloads(model, images, batch: int = 1000) -> list[bytes]:
    """Packets of ``images`` (an ImageSet or a float tensor), encoded ``batch`` at a time."""
    n = len(images)
    get = images.to_float if hasattr(images, "to_float") else images.__getitem__
    return [p for s in range(0, n, batch) for p in model.to_packets(get(slice(s, s + batch)))]


def payload_sizes(packets: list[bytes]) -> np.ndarray:
    from entroguard.packet import parse_packet

    return np.array([parse_packet(p).payload_bytes for p in packets], dtype=np.int64)


def rate_pgd(model, images: torch.Tensor, eps_255: float, seed: int) -> torch.Tensor:
    """``images`` after RatePGD (paper settings) with budget ``eps_255 / 255``."""
    from entroguard.threats.attacks import RatePGD

    attack = RatePGD(eps=eps_255 / 255.0)  # 20 steps, step 0.1 eps, 16 noise copies
    g = torch.Generator().manual_seed(seed)
    return torch.cat([attack(model, images[s : s + 50], generator=g)
                      for s in range(0, len(images), 50)])  # fmt: skip


def scores(guard, payloads: np.ndarray) -> np.ndarray:
    """The guard's z-score of each payload (clean std units), as the server computes it."""
    table = {int(v): guard.score(int(v)).z for v in np.unique(payloads)}
    return np.array([table[int(v)] for v in payloads], dtype=np.float64)


# ------------------------------------------------------------------------ the CUSUM
def run_cusum(
    z: np.ndarray, k: float, h: float, clip: float, s0: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The sequential test over streams ``z`` (streams, T), as :class:`Cusum` runs it.

    Returns per stream: ``first`` (1-based packet of the first alarm, 0 if none), ``alarms``
    (alarms raised: crossings of h), ``max_s`` (largest statistic) and ``final`` (S at the end).
    """
    n, length = z.shape
    cap = CAP_MULTIPLE * h
    s = np.zeros(n) if s0 is None else s0.astype(np.float64).copy()
    alarm = s > h
    first = np.zeros(n, dtype=np.int64)
    alarms = np.zeros(n, dtype=np.int64)
    max_s = s.copy()
    zc = np.clip(z, -clip, clip)
    for t in range(length):
        s = np.minimum(cap, np.maximum(0.0, (s + zc[:, t]) - k))
        now = s > h
        raised = now & ~alarm
        alarms += raised
        first[raised & (first == 0)] = t + 1
        alarm = now
        np.maximum(max_s, s, out=max_s)
    return {"first": first, "alarms": alarms, "max_s": max_s, "final": s}


def check_against_class(z: np.ndarray, k: float, h: float, clip: float) -> None:
    """Assert that :func:`run_cusum` and :class:`Cusum` give the same alarms on ``z``."""
    sim = run_cusum(z, k, h, clip)
    for i, row in enumerate(z):
        cusum = Cusum(k, h, clip)
        steps = [cusum.update(float(v)) for v in row]
        first = next((t + 1 for t, st in enumerate(steps) if st.raised), 0)
        assert first == sim["first"][i], (first, sim["first"][i])
        assert sum(st.raised for st in steps) == sim["alarms"][i]
        assert math.isclose(cusum.statistic, sim["final"][i], abs_tol=1e-9)


def delay_summary(first: np.ndarray, max_delay: int) -> dict:
    """Median, p90, max of the delays (packets) and the share not detected within max_delay."""
    hit = first[first > 0]
    miss = float(np.mean(first == 0))
    if len(hit) == 0:
        return {"median": None, "p90": None, "max": None, "missed": miss, "within": max_delay}
    # missed streams count as +inf for the quantiles
    padded = np.where(first > 0, first, np.iinfo(np.int64).max).astype(np.float64)
    med, p90 = (float(np.quantile(padded, q)) for q in (0.5, 0.9))
    return {"median": med if med < 1e18 else None, "p90": p90 if p90 < 1e18 else None,
            "max": int(hit.max()) if miss == 0 else None, "missed": miss,
            "within": max_delay}  # fmt: skip


# ---------------------------------------------------------------------------- streams
StreamSet = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
"""Makes the same chunks of clean streams on every call: (z (streams, T), class (streams,),
-1 where a stream mixes classes)."""

CHUNK = 250
"""Streams simulated at once (memory: CHUNK x stream_len x 8 bytes per array)."""


def clean_streams(data: dict, args: argparse.Namespace) -> dict[str, StreamSet]:
    """The named clean stream sets, each made chunk by chunk from its own seed."""
    length = args.stream_len
    test_z, train_z = data["test_z"], data["train_z"]
    pool_z = np.concatenate([test_z, train_z])
    pool_y = np.concatenate([data["test_y"], data["train_y"]])
    mixed = np.full(CHUNK, -1)

    def test_orders() -> Iterator:
        rng = np.random.default_rng([args.seed, 1])
        reps = -(-length // len(test_z))
        for start in range(0, args.test_streams, CHUNK):
            n = min(CHUNK, args.test_streams - start)
            z = np.stack([np.tile(test_z[rng.permutation(len(test_z))], reps)[:length]
                          for _ in range(n)])  # fmt: skip
            yield z, mixed[:n]

    def train_orders() -> Iterator:
        n = len(train_z) // length
        if n:
            rng = np.random.default_rng([args.seed, 2])
            yield train_z[rng.permutation(len(train_z))][: n * length].reshape(n, length), mixed[:n]

    def one_class() -> Iterator:
        rng = np.random.default_rng([args.seed, 3])
        for c in np.unique(pool_y):
            zc = pool_z[pool_y == c]
            for start in range(0, args.class_streams, CHUNK):
                n = min(CHUNK, args.class_streams - start)
                yield zc[rng.integers(0, len(zc), size=(n, length))], np.full(n, c)

    def iid() -> Iterator:
        rng = np.random.default_rng([args.seed, 4])
        for start in range(0, args.iid_streams, CHUNK):
            n = min(CHUNK, args.iid_streams - start)
            yield pool_z[rng.integers(0, len(pool_z), size=(n, length))], mixed[:n]

    return {
        "test, random order": test_orders,
        "train, random order": train_orders,
        "one class": one_class,
        "i.i.d. (test + train)": iid,
    }


def false_alarms(streams: dict[str, StreamSet], k: float, h: float, clip: float) -> dict:
    rows = {}
    for name, make in streams.items():
        n = packets = raised = with_alarm = 0
        max_s = 0.0
        by_class: dict[int, float] = {}
        alarm_classes: set[int] = set()
        for z, classes in make():
            res = run_cusum(z, k, h, clip)
            n += len(z)
            packets += z.size
            raised += int(res["alarms"].sum())
            with_alarm += int((res["alarms"] > 0).sum())
            max_s = max(max_s, float(res["max_s"].max()))
            for c in np.unique(classes[classes >= 0]):
                mine = classes == c
                by_class[int(c)] = max(by_class.get(int(c), 0.0), float(res["max_s"][mine].max()))
                if (res["alarms"][mine] > 0).any():
                    alarm_classes.add(int(c))
        if not n:
            continue
        row = {"streams": n, "packets": packets, "streams_with_alarm": with_alarm,
               "alarms": raised, "max_s": max_s}  # fmt: skip
        if by_class:
            row["max_s_by_class"] = by_class
            row["classes_with_alarm"] = sorted(alarm_classes)
        rows[name] = row
    return rows


def attack_delays(
    data: dict, eps: float, k: float, h: float, clip: float, args, rng: np.random.Generator
) -> dict:
    za = data["attacked_z"][eps]
    z = za[rng.integers(0, len(za), size=(args.attack_streams, args.max_delay))]
    fresh = run_cusum(z, k, h, clip)["first"]
    test_z = data["test_z"]
    warm_z = test_z[rng.integers(0, len(test_z), size=(args.attack_streams, args.warmup))]
    s0 = run_cusum(warm_z, k, h, clip)["final"]
    warm = run_cusum(z, k, h, clip, s0=s0)["first"]
    return {"fresh": delay_summary(fresh, args.max_delay),
            "after_clean": delay_summary(warm, args.max_delay)}  # fmt: skip


# ------------------------------------------------------------------------------ HTTP
def http_check(served, data: dict, config, args, rng: np.random.Generator) -> dict:
    """Send real packets to the real server; its ``client_alarm`` answers vs the simulation."""
    import httpx

    from entroguard.serve.app import ServeLimits, create_app
    from entroguard.serve.framing import PACKET_CONTENT_TYPE
    from entroguard.serve.protocol import ConnectionLimits
    from entroguard.serve.runner import ServerThread

    logging.getLogger("entroguard.serve").setLevel(logging.ERROR)  # alarms are expected here
    # this process plays the proxy that names each stream's client; no packet budget
    limits = ServeLimits(budget_packets_per_s=0,
                         connections=ConnectionLimits(trusted_proxies=("127.0.0.1",)))  # fmt: skip
    app = create_app(served.model, config, clean_stats=data["stats"], model_name=served.name,
                     limits=limits)  # fmt: skip
    order = rng.permutation(len(data["test_packets"]))[: args.http_clean]
    streams = {"clean": [data["test_packets"][i] for i in order]}
    for eps, packets in data["attacked_packets"].items():
        idx = rng.integers(0, len(packets), size=200)
        streams[f"rate_pgd eps {eps:g}"] = [packets[i] for i in idx]
    out = {}
    with ServerThread(app, "127.0.0.1", 0) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for name, packets in streams.items():
                headers = {"content-type": PACKET_CONTENT_TYPE, "x-client-id": name}
                answers = []
                for p in packets:
                    r = client.post("/v1/infer", content=p, headers=headers)
                    r.raise_for_status()
                    answers.append(r.json()["guard"])
                alarm = np.array([a["client_alarm"] for a in answers])
                z = scores(app.state.guard, payload_sizes(packets))[None, :]
                sim = run_cusum(z, config.cusum_k, config.cusum_h, config.cusum_clip)
                served_first = int(np.argmax(alarm)) + 1 if alarm.any() else 0
                raised = int(np.sum(alarm[1:] & ~alarm[:-1]) + alarm[0])
                agrees = served_first == sim["first"][0] and raised == sim["alarms"][0]
                out[name] = {"packets": len(packets), "first_alarm": served_first,
                             "alarms": raised, "flagged_packets": int(alarm.sum()),
                             "simulation_agrees": bool(agrees)}  # fmt: skip
            metrics = client.get("/metrics").text
    out["metrics_alarms"] = next(
        (float(line.split()[-1]) for line in metrics.splitlines()
         if line.startswith("entroguard_guard_client_alarms_total ")), 0.0
    )  # fmt: skip
    return out


# ------------------------------------------------------------------------------- main
def load_model_data(name: str, args: argparse.Namespace, eps_list: list[float]) -> tuple:
    from entroguard.data import load_dataset
    from entroguard.serve.guard import GuardConfig, RateGuard
    from entroguard.serve.resolve import load_served_model

    served = load_served_model(name, args.zoo_dir)
    model = served.model
    stats = served.metadata["clean_payload"]
    guard = RateGuard(stats, GuardConfig())
    dataset = served.metadata.get("dataset", "fashion-mnist")
    test = load_dataset(dataset, "test")
    train = load_dataset(dataset, "train").subset(args.train_images)
    t0 = time.perf_counter()
    test_packets = encode_payloads(model, test)
    train_sizes = payload_sizes(encode_payloads(model, train))
    test_sizes = payload_sizes(test_packets)
    log(f"{name}: encoded {len(test)} test + {len(train)} train in "
        f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    rng = np.random.default_rng(args.seed)
    picked = torch.from_numpy(np.sort(rng.choice(len(test), args.attack_images, replace=False)))
    images = test.to_float(picked)
    attacked_packets, attacked_sizes = {}, {}
    for eps in eps_list:
        t0 = time.perf_counter()
        attacked_packets[eps] = encode_payloads(model, rate_pgd(model, images, eps, args.seed))
        attacked_sizes[eps] = payload_sizes(attacked_packets[eps])
        log(f"  rate_pgd eps {eps:g}: {len(images)} images in {time.perf_counter() - t0:.0f} s")
    data = {
        "stats": stats,
        "threshold_bytes": guard.threshold_bytes,
        "test_packets": test_packets,
        "test_z": scores(guard, test_sizes),
        "train_z": scores(guard, train_sizes),
        "test_y": test.labels.numpy(),
        "train_y": train.labels.numpy(),
        "test_sizes": test_sizes,
        "train_sizes": train_sizes,
        "clean_same_images": test_sizes[picked.numpy()],
        "attacked_packets": attacked_packets,
        "attacked_sizes": attacked_sizes,
        "attacked_z": {e: scores(guard, s) for e, s in attacked_sizes.items()},
        "flagged": {
            "clean_test": float(np.mean(test_sizes > guard.threshold_bytes)),
            "clean_train": float(np.mean(train_sizes > guard.threshold_bytes)),
            **{e: float(np.mean(s > guard.threshold_bytes)) for e, s in attacked_sizes.items()},
        },
    }
    return served, data


def measure(served, data: dict, args, eps_list: list[float]) -> dict:
    k, h, clip = args.cusum_k, args.cusum_h, args.cusum_clip
    rng = np.random.default_rng(args.seed + 1)
    streams = clean_streams(data, args)
    first_chunk, _ = next(streams["test, random order"]())
    check_against_class(first_chunk[:2, :2000], k, h, clip)
    check_against_class(data["attacked_z"][eps_list[-1]][None, :], k, h, clip)
    by_class = {int(c): float(data["test_z"][data["test_y"] == c].mean())
                for c in np.unique(data["test_y"])}  # fmt: skip
    result: dict = {
        "model": served.name,
        "clean_payload": {"mean": data["stats"]["mean"], "std": data["stats"]["std"]},
        "per_packet_threshold_bytes": data["threshold_bytes"],
        "per_packet_false_positives": {"clean_test": data["flagged"]["clean_test"],
                                       "clean_train": data["flagged"]["clean_train"]},
        "mean_z_by_class_test": by_class,
        "share_of_clean_test_packets_with_z_over_k": float(np.mean(data["test_z"] > k)),
        "cusum": {"k": k, "h": h, "clip": clip, "cap": CAP_MULTIPLE * h},
        "false_alarms": false_alarms(streams, k, h, clip),
        "attacks": {},
    }  # fmt: skip
    for eps in eps_list:
        rate = data["flagged"][eps]
        sizes = data["attacked_sizes"][eps]
        result["attacks"][f"{eps:g}"] = {
            "payload_bytes": float(sizes.mean()),
            "clean_payload_bytes_same_images": float(data["clean_same_images"].mean()),
            "rate_increase_pct": float(100 * (sizes.mean() / data["clean_same_images"].mean() - 1)),
            "mean_z": float(data["attacked_z"][eps].mean()),
            "per_packet_detection_rate": rate,
            "per_packet_expected_packets_to_first_flag": (1 / rate) if rate > 0 else None,
            "cusum_delay": attack_delays(data, eps, k, h, clip, args, rng),
        }
    if args.grid_k:
        ks = [float(x) for x in args.grid_k.split(",")]
        result["grid_max_s"] = grid_max_s(streams, ks, args.cusum_clip)
    return result


def grid_max_s(streams: dict[str, StreamSet], ks: list[float], clip: float) -> dict:
    """For each k: the largest statistic each clean stream set reached (no alarm threshold)."""
    out: dict[str, dict[str, float]] = {f"{k:g}": {} for k in ks}
    for name, make in streams.items():
        for z, _ in make():
            for k in ks:
                m = float(run_cusum(z, k, math.inf, max(clip, k + 1.0))["max_s"].max())
                row = out[f"{k:g}"]
                row[name] = max(row.get(name, 0.0), m)
    return out


def calibrate(results: list[dict], datas: list[dict], args, eps_list: list[float]) -> list[dict]:
    """For each k of the grid: h = margin x the largest clean statistic over every model and
    stream set (rounded up), and each model's delays at that h."""
    rows = []
    for k in (float(x) for x in args.grid_k.split(",")):
        clip = max(args.cusum_clip, k + 1.0)
        worst = max(max(r["grid_max_s"][f"{k:g}"].values()) for r in results)
        h = float(math.ceil(args.margin * worst))
        row: dict = {"k": k, "h": h, "clip": clip, "largest_clean_s": worst, "models": {}}
        for r, data in zip(results, datas, strict=True):
            rng = np.random.default_rng(args.seed + 2)
            row["models"][r["model"]] = {
                f"{eps:g}": attack_delays(data, eps, k, h, clip, args, rng)["fresh"]
                for eps in eps_list
            }
        p90 = [d[f"{eps_list[-1]:g}"]["p90"] for d in row["models"].values()]
        row["worst_p90_delay_largest_eps"] = None if None in p90 else max(p90)
        rows.append(row)
    return rows


def print_report(results: list[dict]) -> None:
    for r in results:
        c = r["cusum"]
        print(f"\n{r['model']}: CUSUM k {c['k']:g}, h {c['h']:g}, clip {c['clip']:g} (clean std "
              f"{r['clean_payload']['std']:.1f} B); per-packet threshold "
              f"{r['per_packet_threshold_bytes']:.1f} B")  # fmt: skip
        print("  clean streams              packets     streams w/ alarm  alarms  max S")
        for name, row in r["false_alarms"].items():
            print(f"  {name:26s} {row['packets']:>10,d}  {row['streams_with_alarm']:>5d} / "
                  f"{row['streams']:<5d}     {row['alarms']:>5d}  {row['max_s']:6.2f}")  # fmt: skip
        print(
            "  attack       payload   mean z  per-packet det.  CUSUM delay fresh "
            "(med/p90/max, missed)  after clean"
        )
        for eps, a in r["attacks"].items():
            f, w = a["cusum_delay"]["fresh"], a["cusum_delay"]["after_clean"]
            print(f"  eps {eps:>3s}/255  {a['rate_increase_pct']:+6.1f} %  {a['mean_z']:6.2f}  "
                  f"{100 * a['per_packet_detection_rate']:6.1f} %        "
                  f"{_d(f['median'])}/{_d(f['p90'])}/{_d(f['max'])}, {100 * f['missed']:.0f} %"
                  f"            {_d(w['median'])}/{_d(w['p90'])}/{_d(w['max'])}, "
                  f"{100 * w['missed']:.0f} %")  # fmt: skip
        for k, row in r.get("grid_max_s", {}).items():
            sets = ", ".join(f"{n} {v:.2f}" for n, v in row.items())
            print(f"  grid k {k}: largest clean S: {sets}")
        if "http" in r:
            for name, row in r["http"].items():
                if isinstance(row, dict):
                    print(f"  over HTTP, {name}: {row['packets']} packets, first alarm at "
                          f"{row['first_alarm'] or '-'}, alarms {row['alarms']}, simulation "
                          f"agrees: {row['simulation_agrees']}")  # fmt: skip


def print_calibration(rows: list[dict], margin: float) -> None:
    print(f"\ncalibration: h = ceil({margin:g} x largest clean S over every model and stream set);"
          " attack delays (median/p90 packets, missed) from a fresh client")  # fmt: skip
    for row in rows:
        parts = []
        for model, delays in row["models"].items():
            cells = ", ".join(f"eps {e} {_d(d['median'])}/{_d(d['p90'])} {100 * d['missed']:.0f}%"
                              for e, d in delays.items())  # fmt: skip
            parts.append(f"{model}: {cells}")
        print(f"  k {row['k']:g} (clip {row['clip']:g}): largest clean S "
              f"{row['largest_clean_s']:.2f} -> h {row['h']:g}; " + "; ".join(parts))  # fmt: skip
    ok = [r for r in rows if r["worst_p90_delay_largest_eps"] is not None]
    if ok:
        best = min(ok, key=lambda r: r["worst_p90_delay_largest_eps"])
        print(f"  smallest worst-model p90 delay at the largest eps: k {best['k']:g}, "
              f"h {best['h']:g}")  # fmt: skip


def _d(value) -> str:
    return "-" if value is None else f"{value:g}"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    from entroguard.serve.guard import GuardConfig

    eps_list = [float(e) for e in args.eps.split(",")]
    config = GuardConfig(budget_bytes_per_s=0, cusum_k=args.cusum_k, cusum_h=args.cusum_h,
                         cusum_clip=args.cusum_clip)  # fmt: skip
    results, datas = [], []
    for name in args.models.split(","):
        served, data = load_model_data(name, args, eps_list)
        result = measure(served, data, args, eps_list)
        datas.append({key: data[key] for key in ("test_z", "attacked_z")})
        if args.http:
            t0 = time.perf_counter()
            result["http"] = http_check(served, data, config, args, np.random.default_rng(7))
            log(f"  over HTTP in {time.perf_counter() - t0:.0f} s")
            bad = [n for n, r in result["http"].items() if isinstance(r, dict)
                   and not r["simulation_agrees"]]  # fmt: skip
            if bad:
                sys.exit(f"the server's client_alarm answers differ from the simulation: {bad}")
        results.append(result)
    print_report(results)
    output: dict = {"results": results}
    if args.grid_k:
        output["calibration"] = calibrate(results, datas, args, eps_list)
        print_calibration(output["calibration"], args.margin)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(output, indent=2) + "\n")
        log(f"wrote {args.out}")
    return output


if __name__ == "__main__":
    main()
