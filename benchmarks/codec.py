"""Encode/decode throughput of the zoo models: batched against one image at a time.

Prints, per model, images/s of ``to_packets`` (head: analysis + rANS encoding + packet) and
``from_packets`` (tail: parse + rANS decoding + synthesis + classifier), batched and one
image at a time in the same run, their ratio, and the payload / estimate ratio.

    python benchmarks/codec.py [--n 512] [--batch 128] [--models resnet_s-fp-beta0.01,...]
"""

from __future__ import annotations

import argparse
import gc
import time

import torch

from entroguard.data import load_dataset
from entroguard.report.table import format_table
from entroguard.train.checkpoint import load_checkpoint
from entroguard.train.zoo import list_zoo


def _rate(fn, n: int, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def bench_model(path: str, images: torch.Tensor, batch: int) -> dict:
    model = load_checkpoint(path)
    gc.freeze()  # as the campaign runner does: keep the coder tables out of GC scans
    n = len(images)
    chunks = images.split(batch)
    singles = images.split(1)
    with torch.no_grad():
        model.from_packets(model.to_packets(chunks[0]))  # warm-up: allocator, kernels, tables
        packets = [p for c in chunks for p in model.to_packets(c)]
        enc_batched = _rate(lambda: [model.to_packets(c) for c in chunks], n)
        enc_single = _rate(lambda: [model.to_packets(c) for c in singles], n)
        dec_batched = _rate(
            lambda: [model.from_packets(packets[i : i + batch]) for i in range(0, n, batch)], n
        )
        dec_single = _rate(lambda: [model.from_packets([p]) for p in packets], n)
        est = torch.cat([model.estimate(c).bits() for c in chunks]) / 8
    payload = torch.tensor([model.packets_to_batch([p]).payload_bytes()[0] for p in packets])
    return {
        "model": model.metadata.get("name", path.rsplit("/", 1)[-1].removesuffix(".safetensors")),
        "enc_img_s": f"{enc_batched:.0f}",
        "enc_1by1": f"{enc_single:.0f}",
        "enc_x": f"{enc_batched / enc_single:.1f}",
        "dec_img_s": f"{dec_batched:.0f}",
        "dec_1by1": f"{dec_single:.0f}",
        "dec_x": f"{dec_batched / dec_single:.1f}",
        "payload/est": f"{float(payload.double().sum() / est.double().sum()):.3f}",
        "mean_excess_B": f"{float((payload - (1.01 * est + 8)).mean()):.2f}",
        "max_excess_B": f"{float((payload - (1.01 * est + 8)).max()):.2f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="test images")
    parser.add_argument("--batch", type=int, default=128, help="batch size of the batched runs")
    parser.add_argument("--models", default="", help="comma-separated zoo names (default all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = list_zoo()
    if args.models:
        wanted = set(args.models.split(","))
        rows = [r for r in rows if r["name"] in wanted]
    images = load_dataset("fashion-mnist", "test").to_float(slice(0, args.n))
    results = [bench_model(r["path"], images, args.batch) for r in rows]
    print(f"{args.n} images, batch {args.batch}, torch threads {torch.get_num_threads()}")
    print("excess_B: payload - (1.01 x estimate + 8 B) per image (mean, max); <= 0 is good")
    print(format_table(results, list(results[0])))


if __name__ == "__main__":
    main()
