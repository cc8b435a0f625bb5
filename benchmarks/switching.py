"""Switching a resident slimmable head against reloading one checkpoint per setting.

Both systems answer the same request: "from now on, code at rate setting r; here is an image".
The resident system calls ``set_mode(members, r)`` on the slimmable head it holds and codes the
image; the reloading system loads the separately trained zoo model of that rate (same
architecture and prior, the beta the slimmable head's rate setting was trained with) from its
checkpoint and codes the image. Two medians over ``--rounds`` cycles through the four rate
settings, measured in the same run: the switch itself (``set_mode`` against loading the
checkpoint: ``switch_ms``, ``reload_ms``, ``ratio``) and the time to first result, the packet
(``first_result_switch_ms``, ``first_result_reload_ms``, ``first_result_ratio``), which adds
the same coding time to both. Resident memory is the bytes of parameters and buffers each
system holds. Run it on an otherwise idle machine: the coding time is milliseconds.

    python benchmarks/switching.py [--model resnet_s-slim-mshp] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from entroguard.models.slimmable import SlimmableSplitClassifier
from entroguard.train.checkpoint import load_checkpoint, read_metadata
from entroguard.train.zoo import list_zoo


def resident_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer of ``model`` (coder tables included)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def separate_models(slim_name: str) -> list[str]:
    """Paths of the zoo models trained separately at each of ``slim_name``'s rate betas."""
    zoo = {row["name"]: row for row in list_zoo()}
    meta = read_metadata(zoo[slim_name]["path"])
    arch, prior = meta["spec"]["arch"], meta["spec"]["prior"]
    paths = []
    for beta in meta["train"]["config"]["betas"]:
        name = f"{arch}-{prior}-beta{beta:g}"
        if name not in zoo:
            raise SystemExit(f"the zoo lacks {name}, the separate model of rate beta {beta}")
        paths.append(zoo[name]["path"])
    return [zoo[slim_name]["path"], *paths]


def time_ms(action) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1e3


def measure(slim_path: str, separate: list[str], rounds: int) -> dict:
    """Median switch and reload times to first result, and resident bytes of both systems."""
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    slim = load_checkpoint(slim_path)
    assert isinstance(slim, SlimmableSplitClassifier)
    members = slim.largest[0]
    times: dict[str, list[float]] = {"switch": [], "reload": [], "code_s": [], "code_r": []}
    for _ in range(rounds):
        for rate, path in enumerate(separate):
            times["switch"].append(time_ms(lambda rate=rate: slim.set_mode(members, rate)))
            times["code_s"].append(time_ms(lambda: slim.to_packets(image)))
            holder: list = []
            times["reload"].append(time_ms(lambda p=path, h=holder: h.append(load_checkpoint(p))))
            times["code_r"].append(time_ms(lambda h=holder: h[0].to_packets(image)))
    med = {k: statistics.median(v) for k, v in times.items()}
    first_switch, first_reload = med["switch"] + med["code_s"], med["reload"] + med["code_r"]
    one = load_checkpoint(separate[-1])
    return {
        "switch_ms": med["switch"],
        "reload_ms": med["reload"],
        "ratio": med["reload"] / med["switch"],
        "first_result_switch_ms": first_switch,
        "first_result_reload_ms": first_reload,
        "first_result_ratio": first_reload / first_switch,
        "resident_bytes_slimmable": resident_bytes(slim),
        "resident_bytes_one_separate": resident_bytes(one),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet_s-slim-mshp", help="slimmable zoo model")
    parser.add_argument("--rounds", type=int, default=5, help="cycles through the settings")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    slim_path, *separate = separate_models(args.model)
    measure(slim_path, separate, 1)  # warm-up: imports, first-call allocations
    result = {"model": args.model} | measure(slim_path, separate, args.rounds)
    if args.json:
        print(json.dumps(result))
        return
    slim_kb = result["resident_bytes_slimmable"] / 1e3
    one_kb = result["resident_bytes_one_separate"] / 1e3
    print(
        f"{args.model}: set_mode {result['switch_ms']:.3f} ms vs loading a checkpoint "
        f"{result['reload_ms']:.1f} ms: {result['ratio']:.0f}x; to the first packet "
        f"{result['first_result_switch_ms']:.1f} ms vs {result['first_result_reload_ms']:.1f} ms: "
        f"{result['first_result_ratio']:.1f}x; resident {slim_kb:.0f} kB (all settings) vs "
        f"{one_kb:.0f} kB (one separate model)"
    )


if __name__ == "__main__":
    main()
