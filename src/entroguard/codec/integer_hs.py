"""The hyper-synthesis ``h_s`` in exact integer arithmetic: the same result on every machine.

A mean-scale hyperprior decoder picks the CDF of every latent element from the scale that
``h_s`` computes out of the hyper-latent, and adds the mean to the decoded symbol. If the
encoder's machine and the decoder's disagree on one scale index (one ulp is enough when the
scale sits on a table boundary), the rANS decoder desynchronises and the rest of the image is
lost. Floating-point convolutions differ from machine to machine (oneDNN or not, blocking,
thread count, FMA, GPU kernels), so they cannot be trusted with that choice. Following Ballé,
Johnston and Minnen, "Integer networks for data compression with latent-variable models" (ICLR
2019), both sides therefore run ``h_s`` as an *integer network*:

* every activation is a fixed-point integer with :data:`ACT_FRAC` fractional bits, clamped to
  ``|q| <= ACT_LIMIT`` (values below 2**16 in magnitude);
* every convolution weight is an integer with at most :data:`WEIGHT_BITS` + 1 bits, one power-
  of-two scale per output channel; the bias is an integer at the accumulator's scale;
* each layer accumulates exactly, then rescales to :data:`ACT_FRAC` bits by a rounding right
  shift (``floor((acc + 2**(s-1)) / 2**s)``), then applies ReLU or a LeakyReLU whose slope is
  an integer over 2**16;
* the scale index is the number of integer thresholds (the scale table at :data:`ACT_FRAC`
  bits, floored) below the integer scale; the mean is the integer mean over 2**ACT_FRAC.

Why it is exact on any machine: every value is an integer held in float64, and the compiler
checks that every product and every partial sum stays below 2**53 in magnitude. Sums and products
of such integers are exact in IEEE-754 double precision whatever the order, blocking, FMA use or
thread count of the matrix product, and the rescaling only adds a power of two, multiplies by a
power of two and floors (all exact). The integer network is derived from the float weights by
exact operations only (``frexp``, multiplication by powers of two, round half to even), so every
machine that loads the same checkpoint derives the same integers. It always runs on the CPU.

The integer network follows the float ``h_s`` to about 0.002 in every scale and mean, so rate
and accuracy barely move (measured per zoo model in the documentation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACT_FRAC = 12
"""Fractional bits of every activation (and of the scales and means ``h_s`` outputs)."""
ACT_LIMIT = (1 << 26) - 1
"""Largest activation magnitude, in integer units (values below 2**14)."""
WEIGHT_BITS = 15
"""Integer weights are at most 2**WEIGHT_BITS in magnitude."""
MAX_WEIGHT_SHIFT = 24
"""Largest power-of-two weight scale (keeps the integer bias of near-zero channels small)."""
SLOPE_FRAC = 16
"""Fractional bits of a LeakyReLU's negative slope."""
EXACT_LIMIT = 1 << 53
"""Integers below this magnitude are exact in float64, and so are their sums below it."""
_SLOPE_UNIT = math.ldexp(1.0, -SLOPE_FRAC)


class IntegerNetworkError(ValueError):
    """``h_s`` has a layer with no exact integer form, or one whose sums could exceed 2**53."""


@dataclass(frozen=True)
class IntegerConv:
    """One convolution (plain or transposed) with its activation, on integer activations.

    A plain convolution is ``unfold`` (copies) then one matrix product; a transposed one is one
    matrix product then ``fold`` (adds the overlapping contributions). Both only multiply and
    add integers whose sums stay below 2**53, so any order of the sums gives the same result.

    Attributes:
        weight: float64 integers; plain: (Cout, Cin * k * k); transposed: (Cout * k * k, Cin).
        bias: (Cout, 1, 1) float64 integers at ``ACT_FRAC + shift`` fractional bits.
        scale: (Cout, 1, 1) float64, ``2**-shift`` per output channel (exact powers of two).
        half: (Cout, 1, 1) float64, ``2**(shift - 1)`` (0 where ``shift <= 0``): rounds the shift.
        kernel, stride, padding, output_padding: as in ``torch.nn.Conv(Transpose)2d``.
        transposed: whether this is a transposed convolution.
        slope: negative slope of the activation over 2**SLOPE_FRAC; ``None``: no activation.
    """

    weight: Tensor
    bias: Tensor
    scale: Tensor
    half: Tensor
    kernel: int
    stride: int
    padding: int
    output_padding: int
    transposed: bool
    slope: int | None

    def _accumulate(self, q: Tensor) -> Tensor:
        k, s, p = self.kernel, self.stride, self.padding
        b, _, h, w = q.shape
        if self.transposed:
            out_hw = [(n - 1) * s - 2 * p + k + self.output_padding for n in (h, w)]
            return F.fold(torch.matmul(self.weight, q.reshape(b, -1, h * w)), out_hw, k,
                          padding=p, stride=s)  # fmt: skip
        out_hw = [(n + 2 * p - k) // s + 1 for n in (h, w)]
        columns = F.unfold(q, k, padding=p, stride=s)
        return torch.matmul(self.weight, columns).reshape(b, -1, *out_hw)

    def __call__(self, q: Tensor) -> Tensor:
        """(B, Cin, H, W) integer activations -> (B, Cout, H', W') integer activations."""
        acc = self._accumulate(q) + self.bias  # exact: every sum stays below 2**53
        out = torch.floor((acc + self.half) * self.scale)
        if self.slope is not None:
            negative = torch.floor((out * self.slope + (1 << (SLOPE_FRAC - 1))) * _SLOPE_UNIT)
            out = torch.where(out < 0, negative, out)
        return out.clamp_(-ACT_LIMIT, ACT_LIMIT)


def pow2(exponents: Tensor | list[int]) -> Tensor:
    """``2**e`` for integer exponents, float64, built with ``math.ldexp`` (exact by definition)."""
    return torch.tensor([math.ldexp(1.0, int(e)) for e in exponents], dtype=torch.float64)


def _integer_weights(weight: Tensor) -> tuple[Tensor, list[int]]:
    """Per-output-channel integer weights and their shifts; ``weight`` is (Cout, ...)."""
    w = weight.detach().to("cpu", torch.float64).flatten(1)
    shifts = []
    for peak in w.abs().amax(dim=1).tolist():
        _, exponent = math.frexp(peak)  # peak = m * 2**exponent, m in [0.5, 1)
        shifts.append(min(WEIGHT_BITS - exponent, MAX_WEIGHT_SHIFT) if peak > 0 else 0)
    return torch.round(w * pow2(shifts)[:, None]), shifts


def _activation_slope(module: nn.Module | None) -> int | None:
    if module is None or isinstance(module, nn.Identity):
        return None
    if isinstance(module, nn.ReLU):
        return 0
    if isinstance(module, nn.LeakyReLU):
        return round(module.negative_slope * (1 << SLOPE_FRAC))
    raise IntegerNetworkError(
        f"h_s layer {type(module).__name__} has no exact integer form; the integer hyper-"
        "synthesis supports Conv2d, ConvTranspose2d, ReLU and LeakyReLU"
    )


def _check_geometry(conv: nn.Module) -> None:
    square = conv.kernel_size[0] == conv.kernel_size[1] and conv.stride[0] == conv.stride[1]
    plain_options = conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
    same_padding = conv.padding[0] == conv.padding[1]
    if isinstance(conv, nn.ConvTranspose2d):
        same_padding = same_padding and conv.output_padding[0] == conv.output_padding[1]
    if not (square and plain_options and same_padding):
        raise IntegerNetworkError(
            f"{conv}: the integer hyper-synthesis takes square kernels and strides, the same "
            "zero padding on both axes, no dilation and no groups"
        )


def compile_layer(conv: nn.Module, activation: nn.Module | None) -> IntegerConv:
    """The integer form of ``conv`` (Conv2d or ConvTranspose2d) followed by ``activation``."""
    _check_geometry(conv)
    transposed = isinstance(conv, nn.ConvTranspose2d)
    weight = conv.weight.transpose(0, 1) if transposed else conv.weight  # (Cout, Cin, k, k)
    integers, shift = _integer_weights(weight)
    fan_in = integers.shape[1]
    bias = torch.zeros(integers.shape[0], dtype=torch.float64)
    if conv.bias is not None:
        bias = torch.round(conv.bias.detach().cpu().double() * pow2([s + ACT_FRAC for s in shift]))
    worst = fan_in * integers.abs().amax().item() * ACT_LIMIT + bias.abs().amax().item()
    if worst >= EXACT_LIMIT:
        raise IntegerNetworkError(
            f"{conv}: its sums could reach {worst:.3g}, above 2**53 where float64 stops being "
            "exact on integers; use fewer input channels or a smaller kernel"
        )
    if transposed:  # (Cout, Cin * k * k) -> (Cout * k * k, Cin), fold's column order
        k = conv.kernel_size[0]
        integers = (
            integers.reshape(len(shift), -1, k * k).permute(0, 2, 1).reshape(-1, fan_in // (k * k))
        )
    half = pow2([s - 1 for s in shift]) * torch.tensor([float(s > 0) for s in shift])
    column = (-1, 1, 1)
    return IntegerConv(
        weight=integers.contiguous(),
        bias=bias.reshape(column),
        scale=pow2([-s for s in shift]).reshape(column),
        half=half.reshape(column),
        kernel=conv.kernel_size[0],
        stride=conv.stride[0],
        padding=conv.padding[0],
        output_padding=conv.output_padding[0] if transposed else 0,
        transposed=transposed,
        slope=_activation_slope(activation),
    )


class IntegerHyperSynthesis:
    """``h_s`` compiled to exact integer arithmetic (see the module docstring).

    Args:
        h_s: an ``nn.Sequential`` of Conv2d / ConvTranspose2d layers, each optionally followed
            by ReLU or LeakyReLU; its weights are read once, now.
        medians: the hyper-latent's quantisation offsets, shape (Cz,) (float32 or float64).
        scale_table: the Gaussian scale table (the coder's, float32), shape (S,).
    """

    def __init__(self, h_s: nn.Module, medians: Tensor, scale_table: Tensor) -> None:
        modules = list(h_s.children()) if isinstance(h_s, nn.Sequential) else [h_s]
        self.layers: list[IntegerConv] = []
        i = 0
        while i < len(modules):
            conv = modules[i]
            if not isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
                _activation_slope(conv)  # raises for an unsupported layer
                raise IntegerNetworkError(f"h_s layer {i} ({conv}) must follow a convolution")
            nxt = modules[i + 1] if i + 1 < len(modules) else None
            is_act = nxt is not None and not isinstance(nxt, (nn.Conv2d, nn.ConvTranspose2d))
            self.layers.append(compile_layer(conv, nxt if is_act else None))
            i += 2 if is_act else 1
        one = float(1 << ACT_FRAC)
        self.medians = torch.round(medians.detach().cpu().double() * one).reshape(1, -1, 1, 1)
        self.thresholds = torch.floor(scale_table.detach().cpu().double()[:-1] * one).contiguous()

    def __call__(self, z_symbols: Tensor) -> Tensor:
        """Integer ``h_s`` output (B, 2C, H', W'), float64 holding integers at ACT_FRAC bits.

        ``z_symbols`` are the hyper-latent's coded symbols (B, Cz, Hz, Wz), integers of any
        dtype; the hyper-latent is ``symbols + medians``.
        """
        q = z_symbols.detach().to("cpu", torch.float64) * (1 << ACT_FRAC) + self.medians
        q = q.clamp_(-ACT_LIMIT, ACT_LIMIT)
        for layer in self.layers:
            q = layer(q)
        return q

    def scale_indexes(self, scales_q: Tensor) -> Tensor:
        """CDF index per element (int32): how many thresholds lie below the integer scale.

        The same comparison as CompressAI's ``build_indexes`` on the lower-bounded scale: a
        scale at or below the table's first entry gets index 0.
        """
        return torch.bucketize(scales_q.contiguous(), self.thresholds, right=False).int()

    @staticmethod
    def to_float(q: Tensor) -> Tensor:
        """Integer activations at ACT_FRAC bits -> float32 values (correctly rounded)."""
        return (q * math.ldexp(1.0, -ACT_FRAC)).float()
