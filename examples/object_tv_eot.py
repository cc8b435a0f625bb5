"""Does randomising object_tv hold against an attacker who averages over its randomness?

    python examples/object_tv_eot.py [--models resnet_s-mshp-beta0.01,...] [--n 32]
        [--jitter 0.5] [--dither 0.0157] [--eot 4]

For each model, on the first ``n`` test images: object_tv as deployed (deterministic) and the
same defence randomised (each call draws a factor on its TV weights in [1 - jitter, 1 + jitter]
per image and adds uniform noise in [-dither, dither] to the image), on clean images, under
``rate_pgd`` eps 8/255 (paper settings, the attacker ignores the defence) and under
``rate_pgd_through`` (the attacker differentiates through the defence, with ``eot`` draws of its
randomness per step). Payload and top-1 through real coding, against the clean images without
defence. Prints a Markdown table (docs/defences.md).
"""

from __future__ import annotations

import argparse

import torch

import entroguard
from entroguard.data import load_dataset
from entroguard.defenses import OBJECT_TV_DEPLOYED, build_defense
from entroguard.measure import measure_batch
from entroguard.threats.adaptive import RatePGDThrough
from entroguard.threats.attacks import RatePGD

EPS = 8 / 255


def _measure(model, images, labels) -> tuple[float, float]:
    """Mean payload (bytes) and top-1 (%) of ``images`` through real coding."""
    m = measure_batch(model, images, labels)
    return float(m.payload_bytes.mean()), 100.0 * float(m.correct.mean())


def _row(name: str, images, labels, randomised: dict, eot: int) -> str:
    model = entroguard.load(name)
    base, top = _measure(model, images, labels)
    seed = torch.Generator().manual_seed
    plain = RatePGD(EPS)(model, images, generator=seed(0))
    cells = [name]
    for params, samples in ((OBJECT_TV_DEPLOYED, 1), (OBJECT_TV_DEPLOYED | randomised, eot)):
        defense = build_defense("object_tv", **params)
        through = RatePGDThrough(EPS, defense="object_tv", defense_params=params,
                                 eot_samples=samples)(model, images, generator=seed(0))  # fmt: skip
        for x in (images, plain, through):
            payload, top1 = _measure(model, defense(model, x, seed(1)), labels)
            cells += [f"{100 * (payload / base - 1):+.1f} %", f"{top1 - top:+.1f}"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet_s-fp-beta0.01,resnet_s-mshp-beta0.01,"
                        "regnet_s-fp-beta0.01,regnet_s-mshp-beta0.01,"
                        "mobilenetv2_s-fp-beta0.01,mobilenetv2_s-mshp-beta0.01")  # fmt: skip
    parser.add_argument("--n", type=int, default=32, help="test images per model")
    parser.add_argument(
        "--jitter", type=float, default=0.2, help="at most 0.24 for the deployed step"
    )
    parser.add_argument("--dither", type=float, default=4 / 255)
    parser.add_argument("--eot", type=int, default=4, help="EOT draws per attack step")
    args = parser.parse_args()
    test = load_dataset("fashion-mnist", "test")
    images, labels = test.to_float(slice(0, args.n)), test.labels[: args.n]
    randomised = {"jitter": args.jitter, "dither": args.dither}
    print(f"{args.n} test images; randomised: {randomised}, EOT {args.eot}; payload and top-1 "
          "(pp) against the clean images without defence\n")  # fmt: skip
    conditions = ["clean", "rate_pgd", "rate_pgd_through"]
    head = [f"{kind} {c} {what}" for kind in ("deterministic", "randomised")
            for c in conditions for what in ("payload", "top-1")]  # fmt: skip
    print("| model | " + " | ".join(head) + " |")
    print("| --- |" + " ---: |" * len(head))
    for name in args.models.split(","):
        print(_row(name, images, labels, randomised, args.eot), flush=True)


if __name__ == "__main__":
    main()
