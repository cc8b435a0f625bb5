"""Throughput of the defences: batched object-aware TV against scikit-image's Chambolle TV.

One table per image set, each measured in one run on one device (no timed assertions):

* ``object_tv`` on the whole batch (rate-map mask included: the model's head runs on the
  batch) against ``skimage.restoration.denoise_tv_chambolle`` run one image at a time on the
  very same images, with the comparable weight ``tv_weight / fidelity_weight`` (both minimise
  ``||u - x||^2 / 2 + weight * TV(u)`` per channel; ours with a smoothed TV, a per-pixel
  weight and 100 fixed steps); the ratio is printed (target: at least 5x on the CPU, grey
  and colour images);
* the other defences (``tv``, ``lowpass``, ``jpeg``, ``gaussian_blur``), batched.

What makes the comparison fair: both get the same float32 images (``denoise_tv_chambolle``
keeps float32) and the same number of timed runs, taken in alternation so that the load of
other processes hits both alike, best of ``--repeats`` after one warm-up run each (ours
builds its compiled kernel in the warm-up, about 0.3 s once per process). The TV solver
solves a grey image stored as RGB (three equal channels) on one channel; the baseline gets
the same shortcut (it denoises the first channel and copies it). Chambolle runs with its
default stopping rule (relative energy change below 2e-4, at most 200 iterations: about 20
to 40 iterations on these images, against our 100 steps); a second row runs it for exactly
our number of steps (``eps=0``), for reference.

Image sets: the first ``--n`` test images of ``--dataset`` (Fashion-MNIST by default: grey
images stored as RGB), and, with ``--colour``, as many seeded smooth colour images (all three
channels differ: no shortcut).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/defenses.py             # 256 Fashion-MNIST images
    OMP_NUM_THREADS=1 python benchmarks/defenses.py --colour --n 128
    python benchmarks/defenses.py --checkpoint runs/zoo/resnet_s-fp-beta0.01.safetensors
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from entroguard.defenses import DEFENSES, ObjectAwareTV, build_defense


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time in seconds of ``repeats`` runs of ``fn`` (after one warm-up run)."""
    return timed_alternately([fn], repeats)[0]


def timed_alternately(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Best wall time in seconds of each of ``fns`` over ``repeats`` rounds, each round running
    every function once in turn (after one warm-up round), so that a burst of load from other
    processes slows all of them rather than one."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def load_model(checkpoint: str | None):
    """The model whose rate map drives ``object_tv``: ``--checkpoint``, else the zoo's
    ``resnet_s-fp-beta0.01``, else a fresh (untrained) resnet_s: the mask then means nothing,
    but it costs the same to compute."""
    from entroguard.models.small import build_small
    from entroguard.train.checkpoint import load_checkpoint
    from entroguard.train.zoo import default_zoo_dir

    path = Path(checkpoint) if checkpoint else default_zoo_dir() / "resnet_s-fp-beta0.01"
    if checkpoint or Path(f"{path}.safetensors").is_file():
        return load_checkpoint(path), str(path)
    torch.manual_seed(0)
    model = build_small("resnet_s", "fp").eval()
    model.prepare_coding()
    return model, "fresh resnet_s-fp (untrained; no zoo weights found)"


def colour_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` seeded smooth colour images (B, 3, size, size) in [0, 1], channels different."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    return (x + 0.05 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


def is_grey(image: torch.Tensor) -> bool:
    """Whether all channels of one image (C, H, W) are equal (grey stored as RGB)."""
    return all(torch.equal(image[0], image[i]) for i in range(1, image.shape[0]))


def chambolle_one_by_one(images: torch.Tensor, weight: float, **kwargs) -> np.ndarray:
    """scikit-image's Chambolle TV, one float32 (H, W, 3) image at a time (the baseline); a
    grey image is denoised on one channel and copied, as our solver does. ``kwargs`` go to
    ``denoise_tv_chambolle`` (``eps``, ``max_num_iter``)."""
    from skimage.restoration import denoise_tv_chambolle

    batch = images.permute(0, 2, 3, 1).numpy().astype(np.float32)
    out = []
    for image, grey in zip(batch, [is_grey(im) for im in images], strict=True):
        if grey:
            plane = denoise_tv_chambolle(image[..., 0], weight=weight, **kwargs)
            out.append(np.repeat(plane[..., None], image.shape[-1], axis=-1))
        else:
            out.append(denoise_tv_chambolle(image, weight=weight, channel_axis=-1, **kwargs))
    return np.stack(out)


def solver_name() -> str:
    """Which forward TV solver runs here: the compiled kernel (lanes) or PyTorch operations."""
    from entroguard.defenses import tv_kernel

    if tv_kernel.available():
        return f"compiled kernel, {tv_kernel.lanes()} planes per SIMD vector"
    return "PyTorch operations (no C compiler, or ENTROGUARD_TV_KERNEL=0)"


def table(title: str, images: torch.Tensor, model, args: argparse.Namespace) -> None:
    n = len(images)
    defense = ObjectAwareTV()
    weight = args.chambolle_weight or defense.tv_weight / defense.fidelity_weight
    grey = sum(is_grey(im) for im in images)
    print(f"\n{title}: {n} images {tuple(images.shape[1:])} ({grey} grey), OMP threads "
          f"{torch.get_num_threads()}, TV solver: {solver_name()}")  # fmt: skip
    t_ours, t_base = timed_alternately(
        [lambda: defense(model, images), lambda: chambolle_one_by_one(images, weight)],
        args.repeats,
    )
    print(f"  {'object_tv (batched, mask included)':42s} {n / t_ours:9.1f} images/s   {defense!r}")
    print(f"  {'denoise_tv_chambolle (one at a time)':42s} {n / t_base:9.1f} images/s   "
          f"weight={weight:g}, defaults (eps=2e-4, max_num_iter=200)")  # fmt: skip
    print(f"  ratio object_tv / chambolle: {t_base / t_ours:.2f}x (target >= 5x)")
    if args.equal_iterations:
        steps = defense.steps
        t_equal = timed(
            lambda: chambolle_one_by_one(images, weight, eps=0.0, max_num_iter=steps),
            args.repeats,
        )
        print(f"  {f'denoise_tv_chambolle, exactly {steps} iterations':42s} "
              f"{n / t_equal:9.1f} images/s   ratio {t_equal / t_ours:.2f}x "
              "(for reference)")  # fmt: skip
    for name in sorted(DEFENSES):
        if name == "object_tv":
            continue
        other = build_defense(name)
        t = timed(lambda other=other: other(model, images), args.repeats)
        print(f"  {name + ' (batched)':42s} {n / t:9.1f} images/s   {other!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=256, help="images per set (default 256)")
    parser.add_argument("--dataset", default="fashion-mnist", help="dataset of the test images")
    parser.add_argument("--checkpoint", default=None, help="model for object_tv's rate map")
    parser.add_argument("--colour", action="store_true", help="also time seeded colour images")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (best is kept)")
    parser.add_argument(
        "--no-equal-iterations",
        dest="equal_iterations",
        action="store_false",
        help="skip the reference row of Chambolle run for exactly object_tv's steps",
    )
    parser.add_argument(
        "--chambolle-weight",
        type=float,
        default=None,
        help="Chambolle weight (default: object_tv's tv_weight / fidelity_weight)",
    )
    args = parser.parse_args()
    from entroguard.data import load_dataset

    model, source = load_model(args.checkpoint)
    print(f"model: {source}")
    data = load_dataset(args.dataset, "test").subset(args.n)
    images = data.to_float(slice(0, len(data)))
    table(args.dataset, images, model, args)
    if args.colour:
        table("seeded colour images", colour_images(args.n), model, args)


if __name__ == "__main__":
    main()
