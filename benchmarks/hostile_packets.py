"""Benchmark: a million hostile packets against ``entroguard serve``, per prior of the zoo.

Starts the server (budgets off: this is about packets, not clients) for one fp and one mshp
zoo model and sends ``--packets`` hostile packets to each, one per request, from
``--threads`` client threads, drawn from these kinds (seeded):

* ``flip`` / ``flip_resealed``: 1-8 random bits flipped, with the stale CRC or a fresh one
  (then the bytes reach the header checks and the decoder);
* ``truncate`` / ``extend``: cut at a random length or grown by random bytes, resealed;
* ``random``: random bytes behind a valid magic and version, resealed;
* ``header``: a resealed packet with another latent size, version or prior byte;
* ``crafted``: coder strings the head's own coder made from latents with symbols of 1e3 to
  1.3e8 (the tail must refuse them: ``impossible_latent``);
* ``foreign``: a packet of another zoo model (another fingerprint or prior);
* ``empty`` / ``tiny``: 0 to 10 bytes.

Reported per model and kind: the answers by status and reason, the 5xx count (must be 0),
whether the server is alive after, and its resident memory before and after.

Usage::

    python benchmarks/hostile_packets.py --packets 500000 --out hostile_packets.json
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from hostile import start_server  # noqa: E402

from entroguard.models.split import EncodedBatch  # noqa: E402
from entroguard.serve.framing import PACKET_CONTENT_TYPE  # noqa: E402

KINDS = ("flip", "flip_resealed", "truncate", "extend", "random", "header", "crafted",
         "foreign", "empty", "tiny")  # fmt: skip
MODELS = ("resnet_s-fp-beta0.01", "resnet_s-mshp-beta0.01", "resnet_s-q8-c4-bottlefit")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--packets", type=int, default=20_000, help="hostile packets per model")
    p.add_argument("--threads", type=int, default=4, help="client threads")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the results JSON here")
    return p.parse_args(argv)


def reseal(data: bytes) -> bytes:
    """``data`` with the CRC over its body recomputed (bytes 7-10 of the header)."""
    if len(data) < 11:
        return data
    return data[:7] + struct.pack(">I", zlib.crc32(data[11:])) + data[11:]


def crafted_pool(model, n: int, rng: np.random.Generator) -> list[bytes]:
    """Packets the model's own coder made from latents carrying impossible symbols."""
    from entroguard.data import load_dataset

    images = load_dataset("fashion-mnist", "test").to_float(slice(0, n))
    with torch.no_grad():
        y = model.analyze(images)
    for i in range(n):
        c, h, w = (int(rng.integers(0, s)) for s in y.shape[1:])
        y[i, c, h, w] = float(rng.choice([-1, 1]) * 10 ** rng.uniform(3, 8.1))
    return model.packets(EncodedBatch(model.codec.compress(y), tuple(y.shape[-2:])))


def mutate(kind: str, good: bytes, pools: dict, rng: np.random.Generator) -> bytes:
    """One hostile packet of ``kind`` from the clean packet ``good``."""
    data = bytearray(good)
    if kind in ("flip", "flip_resealed"):
        for _ in range(int(rng.integers(1, 9))):
            data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        return reseal(bytes(data)) if kind == "flip_resealed" else bytes(data)
    if kind == "truncate":
        return reseal(bytes(data[: int(rng.integers(0, len(data)))]))
    if kind == "extend":
        return reseal(bytes(data) + rng.bytes(int(rng.integers(1, 400))))
    if kind == "random":
        return reseal(bytes(data[:3]) + rng.bytes(int(rng.integers(8, 2000))))
    if kind == "header":
        data[int(rng.choice([2, 11, 12]))] = int(rng.integers(0, 256))
        return reseal(bytes(data))
    if kind in ("crafted", "foreign"):
        pool = pools[kind]
        return pool[int(rng.integers(0, len(pool)))]
    if kind == "empty":
        return b""
    return rng.bytes(int(rng.integers(1, 11)))


def rss_kb(pid: int) -> int:
    """Resident memory of process ``pid``, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def attack_model(name: str, foreign_name: str, args) -> dict:
    import entroguard

    rng = np.random.default_rng(args.seed)
    model = entroguard.load(name)
    from entroguard.data import load_dataset

    clean = model.to_packets(load_dataset("fashion-mnist", "test").to_float(slice(0, 256)))
    foreign = entroguard.load(foreign_name).to_packets(
        load_dataset("fashion-mnist", "test").to_float(slice(0, 64)))  # fmt: skip
    pools = {"crafted": crafted_pool(model, 256, rng), "foreign": foreign}
    unbudgeted = ("--client-budget-packets-per-s", "0", "--client-budget-bytes-per-s", "0")
    server = start_server(name, *unbudgeted, "--max-in-flight-per-client", "64")
    tally: dict[str, Counter] = {k: Counter() for k in KINDS}
    lock, local = threading.Lock(), threading.local()
    rss_before = rss_kb(server.proc.pid)

    def send(i: int) -> None:
        r = np.random.default_rng([args.seed, i])
        kind = KINDS[i % len(KINDS)]
        body = mutate(kind, clean[int(r.integers(0, len(clean)))], pools, r)
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=server.url, timeout=60)
        try:
            resp = local.client.post("/v1/infer", content=body,
                                     headers={"content-type": PACKET_CONTENT_TYPE})  # fmt: skip
            key = str(resp.status_code)
            if resp.status_code != 200:
                key += " " + resp.json()["error"]["reason"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            key = f"client error {type(exc).__name__}"
        with lock:
            tally[kind][key] += 1

    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(send, range(args.packets), chunksize=256))
        alive = server.proc.poll() is None and httpx.get(server.url + "/v1/health").is_success
        rss_after = rss_kb(server.proc.pid)
    finally:
        server.stop()
    answers = sum((c for c in tally.values()), Counter())
    return {"packets": args.packets, "seconds": round(time.monotonic() - t0, 1),
            "server_5xx": sum(n for k, n in answers.items() if k.startswith("5")),
            "alive": alive, "rss_mb_before": round(rss_before / 1024, 1),
            "rss_mb_after": round(rss_after / 1024, 1),
            "answers": dict(answers.most_common()),
            "by_kind": {k: dict(c.most_common()) for k, c in tally.items()}}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    names = args.models.split(",")
    out = {}
    for name in names:  # another model's packets: the first other one of the list or MODELS
        foreign = next(n for n in (*names, *MODELS) if n != name)
        out[name] = attack_model(name, foreign, args)
        r = out[name]
        print(
            f"{name}: {r['packets']} packets in {r['seconds']} s, 5xx {r['server_5xx']}, "
            f"alive {r['alive']}, RSS {r['rss_mb_before']} -> {r['rss_mb_after']} MB"
        )
        print("  " + ", ".join(f"{k}: {n}" for k, n in list(r["answers"].items())[:12]))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
