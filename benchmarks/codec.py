"""Encode/decode throughput of the zoo models: batched against one image at a time.

Prints, per model, images/s of ``to_packets`` (head: analysis + rANS encoding + packet) and
``from_packets`` (tail: parse + rANS decoding + synthesis + classifier), batched and one
image at a time in the same run, their ratio, and the payload / estimate ratio.

The decoder checks every coder string before CompressAI's C++ decoder reads it
(``entroguard.codec.rans``); the same packets are also decoded with the check switched off,
interleaved with the checked runs, to give the check's cost: ``chk_ratio`` (checked /
unchecked images/s, batched and one by one) and ``chk_us_img`` / ``chk_ns_sym`` (added time
per image and per coded symbol, batched).

``pad_ratio``: images/s of encoding and decoding (batched) with the coder tables cut to their
lengths, as the codec passes them, against CompressAI's padded tables (interleaved, same run;
the same packets either way).

For the hyperprior models the same packets are also decoded with packet format 1's float
``h_s`` in place of the integer hyper-synthesis (interleaved, same run): ``int_ratio`` and
``int_ratio_1by1`` are integer / float images/s of ``from_packets`` (the cost of decoding that
gives the same result on every machine). ``undecodable``: a packet that the float ``h_s`` coded
does not decode with the float ``h_s`` itself (it chose other tables at decoding than at
encoding), the failure the integer ``h_s`` exists to prevent.

    python benchmarks/codec.py [--n 512] [--batch 128] [--models resnet_s-fp-beta0.01,...]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from unittest import mock

import torch

from entroguard.codec.hyperprior import MeanScaleHyperprior
from entroguard.codec.kernels import float_coding_params
from entroguard.codec.rans import BitstreamError, CdfTables, RansWalker
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


@contextlib.contextmanager
def unchecked_decoding() -> Iterator[None]:
    """CompressAI's decoder without the codec's check: the baseline of the check's cost.

    For this benchmark only, on packets it just encoded: unchecked, a crafted string crashes
    the process (CompressAI issue #300).
    """
    with (
        mock.patch.object(RansWalker, "walk", lambda self, indexes, tables: None),
        mock.patch.object(RansWalker, "finished", lambda self: True),
    ):
        yield


@contextlib.contextmanager
def float_hs_decoding() -> Iterator[None]:
    """Packet format 1's decoder: the float ``h_s`` and CompressAI's index rule, per image.

    For this benchmark only: its packets are not the integer decoder's, so only the speed of
    the two decoders is compared (on the same bytes), not what they decode.
    """
    with mock.patch.object(MeanScaleHyperprior, "coding_params", float_coding_params):
        yield


@contextlib.contextmanager
def padded_tables(model) -> Iterator[None]:
    """The coder given CompressAI's tables as stored, padded to the longest (the baseline of
    ``pad_ratio``)."""

    def padded(cls, em):
        return cls(em._quantized_cdf.tolist(), em._cdf_length.reshape(-1).int().tolist(),
                   em._offset.reshape(-1).int().tolist())  # fmt: skip

    with mock.patch.object(CdfTables, "of", classmethod(padded)):
        model.codec.tables_changed()
        yield
    model.codec.tables_changed()


def _with_and_without(
    fn: Callable[[], object],
    n: int,
    repeats: int,
    baseline: Callable[[], contextlib.AbstractContextManager],
) -> tuple[float, float]:
    """Images/s of ``fn`` as it is and inside ``baseline()``, best of ``repeats`` runs each."""
    current = base = 0.0
    for _ in range(repeats):
        current = max(current, _rate(fn, n))
        with baseline():
            base = max(base, _rate(fn, n))
    return current, base


def _checked_and_unchecked(fn: Callable[[], object], n: int, repeats: int) -> tuple[float, float]:
    """Images/s of ``fn`` with and without the check, best of ``repeats`` interleaved runs."""
    return _with_and_without(fn, n, repeats, unchecked_decoding)


def _integer_against_float(model, images: torch.Tensor, batch: int, repeats: int) -> dict:
    """``int_ratio`` (batched) and ``int_ratio_1by1``: integer / float ``h_s`` decoding speed.

    Each decoder decodes packets its own encoder wrote from the same images (a float-coded
    string does not decode with the integer ``h_s``, nor the other way round).
    """
    if model.spec.prior != "mshp":
        return {"int_ratio": "-", "int_ratio_1by1": "-"}
    codec, hw, n = model.codec, model.latent_hw, len(images)
    y = model.analyze(images)
    integer = [s for c in y.split(batch) for s in codec.compress(c)]
    with float_hs_decoding():
        floating = [s for c in y.split(batch) for s in codec.compress(c)]

    def batched(strings):
        return lambda: [codec.decompress(strings[i : i + batch], hw) for i in range(0, n, batch)]

    def single(strings):
        return lambda: [codec.decompress([s], hw) for s in strings]

    ratios = {}
    for key, make in (("int_ratio", batched), ("int_ratio_1by1", single)):
        new = old = 0.0
        try:
            for _ in range(repeats):
                new = max(new, _rate(make(integer), n))
                with float_hs_decoding():
                    old = max(old, _rate(make(floating), n))
        except BitstreamError:  # the float h_s picked other tables at decoding than at encoding
            ratios[key] = "undecodable"
            continue
        ratios[key] = f"{new / old:.2f}"
    return ratios


def symbols_per_image(model) -> int:
    """Coded symbols per image: the latent's, plus the hyper-latent's for a hyperprior."""
    h, w = model.latent_hw
    n = model.codec.channels * h * w
    if hasattr(model.codec, "hyper_hw"):
        hz, wz = model.codec.hyper_hw((h, w))
        n += model.codec.hyper_channels * hz * wz
    return n


def bench_model(path: str, images: torch.Tensor, batch: int, repeats: int) -> dict:
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
        dec_batched, dec_batched_raw = _checked_and_unchecked(
            lambda: [model.from_packets(packets[i : i + batch]) for i in range(0, n, batch)],
            n,
            repeats,
        )
        dec_single, dec_single_raw = _checked_and_unchecked(
            lambda: [model.from_packets([p]) for p in packets], n, repeats
        )
        est = torch.cat([model.estimate(c).bits() for c in chunks]) / 8
        integer = _integer_against_float(model, images, batch, repeats)
        trimmed, padded = _with_and_without(
            lambda: [model.from_packets(model.to_packets(c)) for c in chunks], n, repeats,
            lambda: padded_tables(model),
        )  # fmt: skip
    extra_s = 1 / dec_batched - 1 / dec_batched_raw
    payload = torch.tensor([model.packets_to_batch([p]).payload_bytes()[0] for p in packets])
    return {
        "model": model.metadata.get("name", path.rsplit("/", 1)[-1].removesuffix(".safetensors")),
        "enc_img_s": f"{enc_batched:.0f}",
        "enc_1by1": f"{enc_single:.0f}",
        "enc_x": f"{enc_batched / enc_single:.1f}",
        "dec_img_s": f"{dec_batched:.0f}",
        "dec_1by1": f"{dec_single:.0f}",
        "dec_x": f"{dec_batched / dec_single:.1f}",
        "unchk_img_s": f"{dec_batched_raw:.0f}",
        "unchk_1by1": f"{dec_single_raw:.0f}",
        "chk_ratio": f"{dec_batched / dec_batched_raw:.2f}",
        "chk_ratio_1by1": f"{dec_single / dec_single_raw:.2f}",
        "chk_us_img": f"{extra_s * 1e6:.0f}",
        "chk_ns_sym": f"{extra_s * 1e9 / symbols_per_image(model):.0f}",
        "pad_ratio": f"{trimmed / padded:.2f}",
        "payload/est": f"{float(payload.double().sum() / est.double().sum()):.3f}",
        "mean_excess_B": f"{float((payload - (1.01 * est + 8)).mean()):.2f}",
        "max_excess_B": f"{float((payload - (1.01 * est + 8)).max()):.2f}",
        **integer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="test images")
    parser.add_argument("--batch", type=int, default=128, help="batch size of the batched runs")
    parser.add_argument("--models", default="", help="comma-separated zoo names (default all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--repeats", type=int, default=3, help="decode runs (best of)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = list_zoo()
    if args.models:
        wanted = set(args.models.split(","))
        rows = [r for r in rows if r["name"] in wanted]
    images = load_dataset("fashion-mnist", "test").to_float(slice(0, args.n))
    results = [bench_model(r["path"], images, args.batch, args.repeats) for r in rows]
    print(f"{args.n} images, batch {args.batch}, torch threads {torch.get_num_threads()}")
    print("excess_B: payload - (1.01 x estimate + 8 B) per image (mean, max); <= 0 is good")
    print("chk: decoding with the string check against without it, on the same packets")
    print("int: latent decoding with the integer h_s against format 1's float h_s (mshp)")
    print(format_table(results, list(results[0])))


if __name__ == "__main__":
    main()
