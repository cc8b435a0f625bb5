"""Benchmark: a normal client of ``entroguard serve`` while a hostile client attacks the server.

Starts ``python -m entroguard.serve serve`` on loopback with a zoo model **at its default
settings** and, for each scenario, measures a normal client (127.0.0.1, one packet per request,
``--victim-rate`` requests per second like a camera, one at a time) for ``--seconds`` while an
attacker (127.0.0.2, another address on the same loopback, in its own process) runs:

* ``unloaded``: no attacker (the baseline, measured in the same run);
* ``slow_headers``: 256 connections sending a header line every second, never finishing;
* ``idle``: 256 connections that send nothing;
* ``slow_body``: 256 connections with complete headers trickling their body a byte a second;
* ``flood``: ``--flood-threads`` (4) threads sending valid 64-packet batches as fast as the
  server answers, ignoring ``Retry-After``;
* ``flood_rotating``: the same with a new ``X-Client-Id`` on every request.

Slow and idle connections that the server closes or refuses are reopened at once (each slot
after 50 ms), so the attacker holds as many as the server lets it. Per scenario: the normal
client's success rate, median and p90 latency and their ratio to the unloaded median, and what
the attacker got (answers by status, connections refused). Run on one machine, attacker and
server share its CPUs.

Usage::

    python benchmarks/hostile.py --model resnet_s-fp-beta0.01 --seconds 15 --out hostile.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np

from entroguard.serve.framing import BATCH_CONTENT_TYPE, PACKET_CONTENT_TYPE, encode_batch
from entroguard.serve.process import ServerProcess

VICTIM, ATTACKER = "127.0.0.1", "127.0.0.2"
SCENARIOS = ("unloaded", "slow_headers", "idle", "slow_body", "flood", "flood_rotating")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet_s-fp-beta0.01", help="zoo model name")
    p.add_argument("--seconds", type=float, default=15.0, help="measurement per scenario, s")
    p.add_argument("--connections", type=int, default=256, help="slow/idle connections")
    p.add_argument("--victim-rate", type=float, default=20.0, help="normal client, requests/s")
    p.add_argument("--flood-threads", type=int, default=4, help="flooding threads")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    p.add_argument("--out", type=Path, help="write the results JSON here")
    return p.parse_args(argv)


def start_server(model: str, *options: str) -> ServerProcess:
    """``entroguard serve`` (at its defaults, unless ``options``) on the normal client's
    loopback address, quiet."""
    return ServerProcess(model, "--log-level", "error", *options, host=VICTIM)


# ------------------------------------------------------------------------------ attackers
async def _hold(server: ServerProcess, kind: str, stop: threading.Event, tally: Counter) -> None:
    """One attacker slot: open, dawdle as ``kind`` until closed, reopen."""
    head = (f"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: {PACKET_CONTENT_TYPE}\r\n"
            "Content-Length: 4000\r\n\r\n").encode()  # fmt: skip
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(server.host, server.port,
                                                           local_addr=(ATTACKER, 0))  # fmt: skip
        except OSError:
            tally["connect_failed"] += 1
            await asyncio.sleep(0.05)
            continue
        tally["opened"] += 1
        if kind == "slow_body":
            writer.write(head)
        elif kind == "slow_headers":
            writer.write(b"POST /v1/infer HTTP/1.1\r\nHost: x\r\n")
        while not stop.is_set():
            try:
                answer = await asyncio.wait_for(reader.read(4096), 1.0)
            except TimeoutError:
                if kind != "idle":
                    writer.write(b"X" if kind == "slow_body" else b"X-Slow: 1\r\n")
                continue
            except OSError:
                answer = b""
            status = answer[9:12].decode(errors="replace") if answer else "closed"
            tally[status] += 1
            break
        writer.close()
        await asyncio.sleep(0.05)


def _slow_attack(server: ServerProcess, kind: str, n: int, stop: threading.Event, tally: Counter):
    async def main() -> None:
        await asyncio.gather(*(_hold(server, kind, stop, tally) for _ in range(n)))

    return threading.Thread(target=asyncio.run, args=(main(),), daemon=True)


def _flood(server: ServerProcess, batch: bytes, rotate: bool, stop: threading.Event, tally: Counter,
           threads: int):  # fmt: skip
    def run() -> None:
        transport = httpx.HTTPTransport(local_address=ATTACKER)
        with httpx.Client(base_url=server.url, transport=transport, timeout=30) as client:
            i = 0
            while not stop.is_set():
                headers = {"content-type": BATCH_CONTENT_TYPE}
                if rotate:
                    headers["x-client-id"] = f"rotating-{i}"
                try:
                    tally[str(client.post("/v1/infer", content=batch, headers=headers)
                              .status_code)] += 1  # fmt: skip
                except httpx.HTTPError:
                    tally["error"] += 1
                i += 1

    return [threading.Thread(target=run, daemon=True) for _ in range(threads)]


# ------------------------------------------------------------------------------- measures
def victim(server: ServerProcess, packet: bytes, seconds: float, rate: float) -> dict:
    """The normal client's success rate and latency over ``seconds``, sending ``rate``
    requests per second (one at a time)."""
    latencies, statuses = [], Counter()
    start = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(int(seconds * rate)):
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            t0 = time.perf_counter()
            try:
                status = client.post(
                    "/v1/infer", content=packet, headers={"content-type": PACKET_CONTENT_TYPE}
                ).status_code
            except httpx.HTTPError:
                status = 0
            latencies.append(time.perf_counter() - t0)
            statuses[status] += 1
    ms = np.array(latencies) * 1e3
    return {"requests": len(ms), "success": statuses[200] / max(1, len(ms)),
            "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "statuses": dict(statuses)}  # fmt: skip


def attack(url: str, name: str, batch: bytes, width: int, seconds: float, queue) -> None:
    """Run attack ``name`` against ``url`` for ``seconds`` (in its own process, so the
    attacker's Python threads do not share the normal client's interpreter lock); put what
    it got on ``queue``. ``width``: connections (slow attacks) or threads (floods)."""
    server = SimpleNamespace(url=url, host=VICTIM, port=int(url.rsplit(":", 1)[1]))
    stop, tally = threading.Event(), Counter()
    if name.startswith("flood"):
        threads = _flood(server, batch, name == "flood_rotating", stop, tally, width)
    else:
        threads = [_slow_attack(server, name, width, stop, tally)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    queue.put(dict(tally))


def scenario(server: ServerProcess, name: str, packets: list[bytes], args) -> dict:
    if name == "unloaded":
        return victim(server, packets[64], args.seconds, args.victim_rate) | {"attacker": {}}
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    width = args.flood_threads if name.startswith("flood") else args.connections
    terms = (server.url, name, encode_batch(packets[:64]), width, args.seconds + 3.0)
    process = ctx.Process(target=attack, args=(*terms, queue))
    process.start()
    time.sleep(2.0)  # let the attack build up
    result = victim(server, packets[64], args.seconds, args.victim_rate)
    tally = queue.get(timeout=120)
    process.join(30)
    return result | {"attacker": tally}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import entroguard
    from entroguard.data import load_dataset

    model = entroguard.load(args.model)
    images = load_dataset("fashion-mnist", "test").to_float(slice(0, 65))
    packets = model.to_packets(images)
    server = start_server(args.model)
    try:
        results = {name: scenario(server, name, packets, args)
                   for name in args.scenarios.split(",")}  # fmt: skip
    finally:
        server.stop()
    base = results.get("unloaded", {}).get("median_ms")
    for r in results.values():
        r["median_ratio"] = r["median_ms"] / base if base else None
    out = {"model": args.model, "seconds": args.seconds, "connections": args.connections,
           "scenarios": results}  # fmt: skip
    for name, r in results.items():
        ratio = f"{r['median_ratio']:.2f}x" if r["median_ratio"] else "-"
        print(f"{name:15s} success {r['success']:.3f}  median {r['median_ms']:7.1f} ms ({ratio})"
              f"  p90 {r['p90_ms']:7.1f} ms  attacker {r['attacker']}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
