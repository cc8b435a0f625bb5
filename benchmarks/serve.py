"""Benchmark of split inference over HTTP: throughput, latency, bytes on the wire, rate guard.

Starts ``python -m entroguard.serve serve`` on loopback with a zoo model (default: the first
one ``entroguard zoo`` lists) and measures, in one run:

1. **Throughput and latency**: end-to-end requests/s and p50/p99 latency (one packet per
   request, persistent HTTP/1.1 connections) at a few client concurrencies, against the
   baseline of the same model decoding and classifying the same packets in-process, one at a
   time (the ratio is the HTTP + JSON overhead: both sides check every coder string before
   decoding it, in the codec). The client threads run on the same machine as the server and
   share its CPUs.
2. **Bytes on the wire** per image: the split packet (header + coder payload) against the raw
   8-bit image, a PNG and a JPEG (quality 90) of the same image (grey images as one channel;
   see :mod:`entroguard.serve.uploads`). HTTP headers come on top of every option alike.
3. **Rate guard** at its default threshold (clean 0.999 quantile x 1.10, flag mode), as the
   server answers: the false-positive rate on clean test packets (the statistics come from
   this same test set, so this is in-sample) and on clean *train* packets (out of sample),
   and the detection rate on rate-PGD packets (eps 8/255, 20 steps, 16 noise copies).

Usage::

    python benchmarks/serve.py                       # first zoo model, JSON to stdout
    python benchmarks/serve.py --model resnet_s-mshp-beta0.01 --out results/serve.json
    python benchmarks/serve.py --checkpoint runs/zoo/resnet_s-fp-beta0.01.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch

from entroguard.serve.framing import BATCH_CONTENT_TYPE, PACKET_CONTENT_TYPE, encode_batch
from entroguard.serve.process import ServerProcess

OCTET = {"content-type": PACKET_CONTENT_TYPE}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="zoo model name (default: the first zoo model)")
    p.add_argument("--checkpoint", type=Path, help="checkpoint path (instead of --model)")
    p.add_argument("--zoo-dir", type=Path, help="zoo folder (default: the shipped zoo)")
    p.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    p.add_argument("--concurrency", default="1,4,16", help="client concurrencies, comma-separated")
    p.add_argument("--bytes-images", type=int, default=2000, help="test images for the bytes")
    p.add_argument("--clean-images", type=int, default=None, help="clean test images for the "
                   "false-positive rate (default: the whole test set)")  # fmt: skip
    p.add_argument("--attack-images", type=int, default=500, help="images to attack")
    p.add_argument("--eps", type=float, default=8.0, help="rate-PGD budget, grey levels")
    p.add_argument("--skip-attack", action="store_true", help="skip the rate-PGD detection rate")
    p.add_argument("--torch-threads", type=int, default=1, help="server torch threads")
    p.add_argument("--model-threads", type=int, default=1, help="server tail workers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the results JSON here")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- server
def start_server(checkpoint: Path, args: argparse.Namespace) -> ServerProcess:
    """The server on a free loopback port, without budgets (this measures throughput)."""
    return ServerProcess(
        str(checkpoint), "--log-level", "warning", "--client-budget-bytes-per-s", "0",
        "--client-budget-packets-per-s", "0", "--torch-threads", str(args.torch_threads),
        "--model-threads", str(args.model_threads), "--max-in-flight", "256",
    )  # fmt: skip


# ------------------------------------------------------------------------ measures
def in_process_baseline(model, packets: list[bytes], n: int) -> dict:
    """Decode + tail of one packet at a time, in this process (torch threads as the server)."""
    for p in packets[:20]:
        model.from_packets([p])
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        model.from_packets([packets[i % len(packets)]])
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    return {"images_per_s": float(1e3 / ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}  # fmt: skip


def load(url: str, packets: list[bytes], total: int, concurrency: int) -> dict:
    """``total`` single-packet requests from ``concurrency`` threads; latencies and rate."""
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()

    def send(i: int) -> tuple[int, float]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=120)
            with lock:
                clients.append(local.client)
        t0 = time.perf_counter()
        r = local.client.post("/v1/infer", content=packets[i % len(packets)], headers=OCTET)
        return r.status_code, time.perf_counter() - t0

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(send, range(min(200, total))))  # warm-up, connections opened
            t0 = time.perf_counter()
            results = list(pool.map(send, range(total)))
            wall = time.perf_counter() - t0
    finally:
        for c in clients:
            c.close()
    ms = np.array([t for _, t in results]) * 1e3
    errors = sum(s != 200 for s, _ in results)
    return {"concurrency": concurrency, "requests": total, "errors": int(errors),
            "requests_per_s": total / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}  # fmt: skip


def guard_verdicts(url: str, packets: list[bytes], batch: int = 64) -> list[str]:
    """The server's guard decision for each packet (sent in batches)."""
    decisions: list[str] = []
    with httpx.Client(base_url=url, timeout=300) as client:
        for start in range(0, len(packets), batch):
            body = encode_batch(packets[start : start + batch])
            r = client.post("/v1/infer", content=body, headers={"content-type": BATCH_CONTENT_TYPE})
            r.raise_for_status()
            decisions += [res["guard"]["decision"] for res in r.json()["results"]]
    return decisions


def encode(model, images: torch.Tensor, batch: int = 500) -> list[bytes]:
    return [
        p for s in range(0, len(images), batch) for p in model.to_packets(images[s : s + batch])
    ]


def rate_pgd_packets(model, images: torch.Tensor, eps_255: float, seed: int) -> list[bytes]:
    """Packets of ``images`` after the rate PGD attack with budget ``eps_255 / 255``."""
    try:
        from entroguard.threats.attacks import build_attack
    except ImportError as exc:
        sys.exit(f"the rate-PGD attack is not available ({exc}); rerun with --skip-attack")
    attack = build_attack("rate_pgd", eps_255)
    g = torch.Generator().manual_seed(seed)
    adv = torch.cat([attack(model, images[s : s + 50], generator=g)
                     for s in range(0, len(images), 50)])  # fmt: skip
    return encode(model, adv)


SWEEP = ((0.9, 1.0), (0.99, 1.0), (0.999, 1.0), (0.999, 1.1), (1.0, 1.0), (1.0, 1.1))


def _payloads(packets: list[bytes]) -> np.ndarray:
    from entroguard.packet import parse_packet

    return np.array([parse_packet(p).payload_bytes for p in packets], dtype=np.int64)


def threshold_sweep(stats: dict | None, payloads: dict[str, np.ndarray]) -> list[dict]:
    """Flag rates of each payload set at other thresholds (the guard's rule, offline)."""
    from entroguard.serve.guard import threshold_from_stats

    if not stats:
        return []
    rows = []
    for q, m in SWEEP:
        t = threshold_from_stats(stats, q, m)
        row = {"quantile": q, "multiple": m, "threshold_bytes": t}
        for name, values in payloads.items():
            row[f"flagged_{name}"] = float((values > t).mean())
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    from entroguard.data import load_dataset
    from entroguard.packet import parse_packet
    from entroguard.serve.resolve import load_served_model
    from entroguard.serve.uploads import upload_sizes
    from entroguard.train.zoo import list_zoo

    name = str(args.checkpoint) if args.checkpoint else args.model
    if name is None:
        rows = list_zoo(args.zoo_dir)
        if not rows:
            sys.exit("no zoo model found: train the zoo or pass --checkpoint")
        name = rows[0]["name"]
    served = load_served_model(name, args.zoo_dir)
    model = served.model
    dataset = served.metadata.get("dataset", "fashion-mnist")
    test = load_dataset(dataset, "test")
    print(f"model {served.name} ({model.fingerprint[:8]}), dataset {dataset}", file=sys.stderr)

    clean_n = args.clean_images or len(test)
    clean_images = test.to_float(slice(0, clean_n))
    clean_packets = encode(model, clean_images)
    result: dict = {
        "model": served.name,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "server": {"torch_threads": args.torch_threads, "model_threads": args.model_threads,
                   "http": "uvicorn h11, one packet per request, keep-alive"},
    }  # fmt: skip

    # bytes on the wire
    n_bytes = min(args.bytes_images, clean_n)
    uploads = upload_sizes(clean_images[:n_bytes])
    packet_bytes = np.array([len(p) for p in clean_packets[:n_bytes]], dtype=np.float64)
    payload = np.array([parse_packet(p).payload_bytes for p in clean_packets[:n_bytes]])
    sizes = {"images": n_bytes, "packet_bytes": float(packet_bytes.mean()),
             "payload_bytes": float(payload.mean()), **uploads.means()}  # fmt: skip
    for key in ("raw_bytes", "png_bytes", "jpeg_bytes"):
        sizes[f"{key.removesuffix('_bytes')}_over_packet"] = sizes[key] / sizes["packet_bytes"]
    result["bytes_per_image"] = sizes

    server = start_server(served.path, args)
    try:
        # throughput and latency against the in-process baseline
        pool = clean_packets[:512]
        base = in_process_baseline(model, pool, min(args.requests, 1000))
        result["in_process_baseline"] = base
        result["load"] = []
        for c in (int(x) for x in args.concurrency.split(",")):
            row = load(server.url, pool, args.requests, c)
            row["over_in_process"] = row["requests_per_s"] / base["images_per_s"]
            result["load"].append(row)
            print(f"concurrency {c}: {row['requests_per_s']:.0f} req/s, p50 {row['p50_ms']:.2f}"
                  f" ms, p99 {row['p99_ms']:.2f} ms", file=sys.stderr)  # fmt: skip

        # rate guard
        threshold = httpx.get(server.url + "/v1/models").json()["models"][0]["guard"]
        verdicts = guard_verdicts(server.url, clean_packets)
        guard = {"threshold_bytes": threshold["threshold_bytes"], "mode": threshold["mode"],
                 "quantile": threshold["quantile"], "multiple": threshold["multiple"],
                 "clean_test_n": len(verdicts),
                 "fpr_clean_test": verdicts.count("flag") / len(verdicts)}  # fmt: skip
        train = load_dataset(dataset, "train").subset(clean_n)
        train_packets = encode(model, train.to_float(slice(None)))
        train_verdicts = guard_verdicts(server.url, train_packets)
        guard["clean_train_n"] = len(train_verdicts)
        guard["fpr_clean_train"] = train_verdicts.count("flag") / len(train_verdicts)
        payloads = {
            "clean_test": _payloads(clean_packets),
            "clean_train": _payloads(train_packets),
        }
        if not args.skip_attack:
            t0 = time.perf_counter()
            n_att = min(args.attack_images, len(test))
            attacked = rate_pgd_packets(model, clean_images[:n_att], args.eps, args.seed)
            adv_verdicts = guard_verdicts(server.url, attacked)
            adv_payload = np.array([parse_packet(p).payload_bytes for p in attacked])
            own_clean = np.array([parse_packet(p).payload_bytes for p in clean_packets[:n_att]])
            guard.update({
                "attack": f"rate_pgd eps {args.eps:g}/255 (20 steps, 16 noise copies)",
                "attack_n": n_att,
                "detection_rate": adv_verdicts.count("flag") / n_att,
                "attacked_payload_bytes": float(adv_payload.mean()),
                "clean_payload_bytes_same_images": float(own_clean.mean()),
                "rate_increase_pct": float(100 * (adv_payload.mean() / own_clean.mean() - 1)),
                "attack_s": time.perf_counter() - t0,
            })  # fmt: skip
            payloads["attacked"] = adv_payload
        guard["sweep"] = threshold_sweep(served.metadata.get("clean_payload"), payloads)
        result["guard"] = guard
    finally:
        server.stop()
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
