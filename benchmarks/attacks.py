"""Throughput of the rate attack: batched against one image at a time, STE against noise.

Three tables, each measured in one run on one device (no timed assertions anywhere):

1. ``RatePGD`` on a batch of ``--n`` images against the very same attack run on one image at
   a time (on ``--single-n`` of them, to keep the baseline short): images per second and the
   ratio. On the CPU with a small 32x32 model; on the GPU (if there is one) with a
   ResNet-50 mean-scale-hyperprior split model at 224x224 (target: a ratio of at least 10).
2. Our batched attack against the published code's structure (:func:`paper_loop`: one image
   at a time and the noisy copies one after another), same loss, same settings: images per
   second, the inflation each reaches, and the speed ratio (the issue's target on a GPU with
   ResNet-50 mshp at 224 px: at least 25x).
3. Straight-through (one copy) against the expectation over ``--copies`` noisy copies, and
   the noisy-copy attack in bfloat16 autocast, TF32 (CUDA only; the same as float32 on the
   CPU) and compiled by ``torch.compile``: the rate inflation each reaches (real payload
   bytes, attacked over clean) per second of attack, so a setting that speeds the attack up
   shows whether it keeps its strength. The first call is timed apart (it builds the compiled
   program).

Usage::

    python benchmarks/attacks.py                      # CPU table, then GPU if available
    python benchmarks/attacks.py --device cuda --n 64 --model-arch resnet50
    python benchmarks/attacks.py --checkpoint runs/zoo/resnet_s-mshp-beta0.01.safetensors
    python benchmarks/attacks.py --device cpu --imagenet --n 2 --single-n 1 --steps 1  # the
        # GPU path's code on the CPU, in seconds (tests/test_benchmarks.py)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from entroguard.threats.attacks import RatePGD

SMALL_ARCHS = ("resnet_s", "regnet_s", "mobilenetv2_s")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], torch.Tensor], device: torch.device, repeats: int = 1
) -> tuple[torch.Tensor, float]:
    """Run ``fn`` ``repeats`` times; its last result and the best wall time in seconds
    (device synchronised; the best of several runs filters out other processes' load)."""
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return out, best


def payload(model, images: torch.Tensor, chunk: int = 64) -> float:
    """Mean real payload bytes per image (the coder's strings, no header)."""
    sizes: list[int] = []
    for i in range(0, len(images), chunk):
        sizes += model.compress(images[i : i + chunk]).payload_bytes()
    return sum(sizes) / len(sizes)


# ----------------------------------------------------------------------------- models
def small_model(args: argparse.Namespace, device: torch.device):
    """A small 32x32 model: ``--checkpoint``, else the zoo's, else a fresh (untrained) one."""
    from entroguard.data import load_dataset
    from entroguard.models.small import build_small
    from entroguard.train.checkpoint import load_checkpoint
    from entroguard.train.zoo import default_zoo_dir

    arch = args.model_arch if args.model_arch in SMALL_ARCHS else "resnet_s"
    candidates = [Path(args.checkpoint)] if args.checkpoint else []
    for zoo in (default_zoo_dir(), Path("runs/zoo")):
        candidates += sorted(zoo.glob(f"{arch}-{args.prior}-beta?.??.safetensors"))  # not *-radv
    for path in candidates:
        if path.is_file():
            model, source = load_checkpoint(path, map_location=str(device)), str(path)
            break
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_small(arch, args.prior)
        model.to(device).eval().prepare_coding()
        source = "untrained (no checkpoint found: inflation figures are not meaningful)"
    test = load_dataset("fashion-mnist", "test")
    images = test.to_float(slice(0, args.n)).to(device)
    return model, images, f"{arch}/{args.prior}", source


def imagenet_model(args: argparse.Namespace, device: torch.device):
    """ResNet-50 (or ``--model-arch``) MSHP split model at 224, untrained; None if missing."""
    try:
        from entroguard.models import build_model

        arch = args.model_arch if args.model_arch not in SMALL_ARCHS else "resnet50"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(arch, args.prior, 1000)
    except (ImportError, ValueError) as exc:
        print(f"skipping the {args.model_arch} GPU benchmark: {exc}")
        return None
    model.to(device).eval().prepare_coding()
    h, w = model.spec.input_size
    gen = torch.Generator(device=device).manual_seed(0)
    # smooth synthetic images: random 28x28 colour fields upsampled to the input size
    coarse = torch.rand(args.n, 3, 28, 28, generator=gen, device=device)
    images = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear").clamp(0, 1)
    return model, images, f"{arch}/{args.prior}", "untrained weights, synthetic images"


# ------------------------------------------------------------------------- the baseline
def paper_loop(model, image: torch.Tensor, args, generator: torch.Generator) -> torch.Tensor:
    """The published attack's structure, reimplemented from the facts in PAPER.md: one image
    (1, 3, H, W) at a time, each step a loop over the noisy copies (one forward and one
    backward each, gradients summed), then a sign step of 0.1 eps and the projection. The loss
    is ours (the bits of y and z, gradient through the latent), so that the two reach the same
    inflation and only the structure differs."""
    from entroguard.threats.attacks import frozen_eval, rate_bits
    from entroguard.threats.attacks.projection import project

    eps = args.eps / 255
    x_adv = image.clone()
    with frozen_eval(model), torch.enable_grad():
        for _ in range(args.steps):
            x_adv.requires_grad_(True)
            grad = torch.zeros_like(image)
            for _ in range(args.copies):
                loss = rate_bits(model, x_adv, "noise", generator, 1).mean()
                grad += torch.autograd.grad(loss, x_adv)[0]
            x_adv = project(x_adv.detach() + 0.1 * eps * grad.sign(), image, eps, "linf")
    return x_adv.detach()


# ------------------------------------------------------------------------- the tables
def bench_paper_loop(model, images, args, device) -> list[list[str]]:
    """Images/s and inflation of our batched attack against the published one-image loop, on
    the same ``--single-n`` images for the loop (the batched attack on all ``--n``)."""
    n = min(args.single_n, len(images))
    attack = RatePGD(args.eps / 255, steps=args.steps, noise_copies=args.copies)
    ours, t_ours = timed(lambda: attack(model, images, generator=torch.Generator(device)
                                        .manual_seed(0)), device, args.repeats)  # fmt: skip
    loop, t_loop = timed(lambda: torch.cat([paper_loop(model, images[i : i + 1], args,
                                                       torch.Generator(device).manual_seed(i))
                                            for i in range(n)]), device, 1)  # fmt: skip
    clean, clean_n = payload(model, images), payload(model, images[:n])
    rows = [["ours, batched", f"{len(images)}", f"{len(images) / t_ours:.2f}",
             f"{100 * (payload(model, ours) / clean - 1):+.1f}",
             f"{100 * (payload(model, ours[:n]) / clean_n - 1):+.1f}"],
            ["published loop", f"{n}", f"{n / t_loop:.3f}", "-",
             f"{100 * (payload(model, loop) / clean_n - 1):+.1f}"]]  # fmt: skip
    rows[0].append(f"{(len(images) / t_ours) / (n / t_loop):.1f}x")
    rows[1].append("1.0x")
    return rows


def bench_batching(model, images, args, device) -> list[list[str]]:
    """Images/s of the batched attack and of the same attack one image at a time."""
    rows = []
    for quantization in ("noise", "ste"):
        attack = RatePGD(
            args.eps / 255, steps=args.steps, quantization=quantization, noise_copies=args.copies
        )
        attack(model, images[:2])  # warm-up (allocator, cuDNN autotuning)

        def batched(attack=attack):
            return attack(model, images, generator=torch.Generator(device).manual_seed(0))

        def single(attack=attack):
            return [
                attack(model, images[i : i + 1], generator=torch.Generator(device).manual_seed(i))
                for i in range(min(args.single_n, len(images)))
            ]

        _, t_batch = timed(batched, device, args.repeats)
        _, t_single = timed(single, device, args.repeats)
        ips_batch = len(images) / t_batch
        ips_single = min(args.single_n, len(images)) / t_single
        label = f"noise x{args.copies}" if quantization == "noise" else "ste"
        rows.append(
            [
                label,
                f"{len(images)}",
                f"{ips_batch:.2f}",
                f"{ips_single:.2f}",
                f"{ips_batch / ips_single:.1f}x",
            ]
        )
    return rows


def bench_modes(model, images, args, device) -> list[list[str]]:
    """Rate inflation (real payload bytes) per second: STE against noisy copies, the noisy
    copies in each precision, and compiled. ``first s`` is the first call (with
    ``torch.compile``'s build), ``seconds`` the best of ``--repeats`` calls after it."""
    clean = payload(model, images)
    rows = []
    settings = [("ste", 1, "float32", False), ("noise", args.copies, "float32", False),
                ("noise", args.copies, "bf16", False), ("noise", args.copies, "tf32", False),
                ("noise", args.copies, "float32", True)][:4 if args.no_compiled else 5]  # fmt: skip
    for quantization, copies, precision, compiled in settings:
        attack = RatePGD(args.eps / 255, steps=args.steps, quantization=quantization,
                         noise_copies=copies, precision=precision, compiled=compiled)  # fmt: skip

        def run(attack=attack):
            return attack(model, images, generator=torch.Generator(device).manual_seed(0))

        _, first = timed(run, device, 1)
        adv, seconds = timed(run, device, args.repeats)
        inflation = 100.0 * (payload(model, adv) / clean - 1.0)
        label = ("ste" if quantization == "ste" else f"noise x{copies}") + f" {precision}"
        rows.append([label + (" compiled" if compiled else ""), f"{first:.2f}",
                     f"{seconds:.2f}", f"{clean:.1f}", f"{payload(model, adv):.1f}",
                     f"{inflation:+.1f}", f"{inflation / seconds:.2f}"])  # fmt: skip
    return rows


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for row in [header, *rows]:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


def run(device: torch.device, args: argparse.Namespace) -> None:
    if device.type == "cuda" or args.imagenet:
        loaded = imagenet_model(args, device)
        if loaded is None:
            return
    else:
        loaded = small_model(args, device)
    model, images, name, source = loaded
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    shape = tuple(images.shape[1:])
    print(f"\n== {where}: {name} {shape}, eps {args.eps:g}/255, {args.steps} steps; {source}")
    print_table(
        f"batched vs one image at a time (baseline on {min(args.single_n, len(images))} images)",
        ["mode", "n", "batched img/s", "per-image img/s", "ratio"],
        bench_batching(model, images, args, device),
    )
    print_table(
        "ours against the published one-image loop (copies one by one; same loss)",
        [
            "attack",
            "n",
            "img/s",
            "inflation %",
            f"on the first {min(args.single_n, len(images))}",
            "speed ratio",
        ],
        bench_paper_loop(model, images, args, device),
    )
    print_table(
        "straight-through vs noisy copies, precisions, compiled (payload bytes per image)",
        ["mode", "first s", "seconds", "clean B", "attacked B", "inflation %", "inflation %/s"],
        bench_modes(model, images, args, device),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (cpu then cuda)")
    parser.add_argument("--n", type=int, default=64, help="images in the batch")
    parser.add_argument("--single-n", type=int, default=8, help="images for the 1-by-1 baseline")
    parser.add_argument("--model-arch", default="resnet_s", help="small arch (cpu) or resnet50")
    parser.add_argument("--prior", default="mshp", choices=("fp", "mshp"))
    parser.add_argument("--checkpoint", default=None, help="small-model checkpoint to attack")
    parser.add_argument("--eps", type=float, default=8.0, help="budget in grey levels (x/255)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--copies", type=int, default=16, help="noisy copies per step")
    parser.add_argument("--repeats", type=int, default=3, help="timings keep the best of these")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--imagenet",
        action="store_true",
        help="the GPU's ImageNet model on any device (a CPU check of that path)",
    )
    parser.add_argument("--no-compiled", action="store_true", help="skip the compiled row")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    for name in devices:
        if name.startswith("cuda") and not torch.cuda.is_available():
            print("skipping cuda: torch.cuda.is_available() is False")
            continue
        run(torch.device(name), args)


if __name__ == "__main__":
    main()
