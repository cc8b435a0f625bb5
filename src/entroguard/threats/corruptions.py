"""The 19 ImageNet-C corruptions, applied reproducibly to batches of torch images.

This wraps :mod:`imagecorruptions` 1.1.2 (Michaelis et al.; the reference implementation
of Hendrycks & Dietterich's ImageNet-C corruptions) with

* a torch interface: float images in ``[0, 1]`` of shape ``(B, 3, H, W)`` in, the same out;
* per-image reproducibility: image ``i`` of a batch uses its own random stream derived from
  ``(seed, name, severity, offset + i)``, so an image receives the same corruption whatever
  batch it is in, and no global random state is left changed;
* fixes for the library's incompatibilities with current dependencies and small images
  (see :func:`corrupt_batch` for the full list).

The library is imported lazily (on the first corruption), so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import numbers
import os
import threading
import warnings
import zlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from entroguard.errors import InputError

__all__ = [
    "BENCHMARK",
    "BLUR",
    "CORRUPTIONS",
    "DIGITAL",
    "MIN_SIDE",
    "NOISE",
    "STOCHASTIC",
    "VALIDATION",
    "WEATHER",
    "corrupt_batch",
]

NOISE: tuple[str, ...] = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
BLUR: tuple[str, ...] = (
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "gaussian_blur",
)
WEATHER: tuple[str, ...] = ("snow", "frost", "fog", "brightness", "spatter")
DIGITAL: tuple[str, ...] = (
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "saturate",
)
#: All 19 corruptions, grouped noise / blur / weather / digital.
CORRUPTIONS: tuple[str, ...] = NOISE + BLUR + WEATHER + DIGITAL

#: The four "validation"/extra corruptions of ImageNet-C (not in the 15-corruption benchmark).
VALIDATION: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
#: The 15 benchmark corruptions of ImageNet-C (mCE), in :data:`CORRUPTIONS` order.
BENCHMARK: tuple[str, ...] = tuple(c for c in CORRUPTIONS if c not in VALIDATION)

#: Corruptions that draw random numbers (the others are deterministic functions of the image).
STOCHASTIC: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "glass_blur",
    "motion_blur",
    "snow",
    "frost",
    "fog",
    "spatter",
    "elastic_transform",
)

#: imagecorruptions only accepts images whose height and width are both at least this.
MIN_SIDE = 32

_RANGE_TOL = 1e-6
# Domain tag mixed into every derived seed, so these streams never coincide with other
# SeedSequence([seed, ...]) uses elsewhere in the project.
_SEED_DOMAIN = 0x45474331  # "EGC1"
_NAME_KEYS = {name: zlib.crc32(name.encode("ascii")) for name in CORRUPTIONS}

# Parameters copied from imagecorruptions 1.1.2 for the corruptions reimplemented here.
_IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
_GLASS_PARAMS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))
_FROST_PARAMS = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
_FROST_FILES = (
    "frost1.png",
    "frost2.png",
    "frost3.png",
    "frost4.jpg",
    "frost5.jpg",
    "frost6.jpg",
)

# Serialises corrupt_batch calls: they temporarily reseed the legacy global numpy RNG and
# patch one library attribute, which must not interleave between threads.
_LOCK = threading.Lock()


# --------------------------------------------------------------------------- library access


@functools.lru_cache(maxsize=1)
def _library() -> ModuleType:
    """Import ``imagecorruptions.corruptions`` once, silencing its import-time warnings."""
    with warnings.catch_warnings():
        # imagecorruptions 1.1.2 imports pkg_resources (deprecated; only used to locate the
        # bundled frost pictures, which we load ourselves) and scipy.ndimage.interpolation.
        warnings.filterwarnings("ignore", message=".*pkg_resources", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            import imagecorruptions.corruptions as lib
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "The corruptions need the 'imagecorruptions' package (>=1.1.2), which also "
                "imports pkg_resources: install with pip install 'imagecorruptions>=1.1.2' "
                f"'setuptools<81' (original error: {exc})"
            ) from exc
    return lib


@contextlib.contextmanager
def _skimage_gaussian_compat() -> Iterator[None]:
    """Temporarily make ``imagecorruptions.corruptions.gaussian`` accept ``multichannel=``.

    imagecorruptions 1.1.2 calls ``skimage.filters.gaussian(..., multichannel=True)`` in
    ``gaussian_blur`` and ``glass_blur``; scikit-image removed ``multichannel`` (0.21+) in favour
    of ``channel_axis``. Inside this context the module-level name ``gaussian`` of
    imagecorruptions (and only that name; :mod:`skimage` itself is untouched) is replaced by a
    wrapper translating ``multichannel=True`` to ``channel_axis=-1``; the original is restored
    on exit, also on error. Re-entrant (a nested use is a no-op).
    """
    lib = _library()
    original = lib.gaussian
    if getattr(original, "_entroguard_shim", False):
        yield
        return

    @functools.wraps(original)
    def gaussian(image: Any, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> Any:
        if multichannel is not None and "channel_axis" not in kwargs:
            kwargs["channel_axis"] = -1 if multichannel else None
        return original(image, *args, **kwargs)

    gaussian._entroguard_shim = True  # type: ignore[attr-defined]
    lib.gaussian = gaussian
    try:
        yield
    finally:
        lib.gaussian = original


# ------------------------------------------------------------------- reimplemented corruptions


def _impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """imagecorruptions' impulse_noise, with an explicit generator.

    The library calls ``skimage.util.random_noise(..., mode='s&p')`` without ``rng``, and
    scikit-image >= 0.21 then draws from a *fresh OS-seeded* generator, ignoring numpy's
    global seed, so the library version is not reproducible. Same call, same parameters, but
    with our derived generator.
    """
    from skimage.util import random_noise

    c = _IMPULSE_AMOUNT[severity - 1]
    out = random_noise(x / 255.0, mode="s&p", amount=c, rng=rng)
    return np.clip(out, 0, 1) * 255


def _glass_blur(x: np.ndarray, severity: int) -> np.ndarray:
    """imagecorruptions' glass_blur, bit-identical for the same global numpy RNG state.

    Reimplemented because (1) the library passes the removed ``multichannel=True`` to
    scikit-image's gaussian and (2) its per-pixel loop calls ``np.random.randint(size=2)`` once
    per pixel (~100 images/s at 32x32, ~2/s at 224x224). Here all offsets are drawn in one call
    (the legacy generator yields the same stream) and the pixel loop runs on Python lists.
    The library's "swap" ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on numpy views actually
    only copies pixel (h', w') into (h, w); that exact behaviour is reproduced.
    """
    from skimage.filters import gaussian

    sigma, delta, iterations = _GLASS_PARAMS[severity - 1]
    img = np.uint8(gaussian(x / 255.0, sigma=sigma, channel_axis=-1) * 255)
    height, width, channels = img.shape
    rows = range(height - delta, delta, -1)
    cols = range(width - delta, delta, -1)
    n = len(rows) * len(cols)
    if n > 0:
        offsets = np.random.randint(-delta, delta, size=(iterations * n, 2)).tolist()
        pixels = img.reshape(height * width, channels).tolist()
        k = 0
        for _ in range(iterations):
            for h in rows:
                base = h * width
                for w in cols:
                    dx, dy = offsets[k]
                    k += 1
                    pixels[base + w] = pixels[(h + dy) * width + w + dx]
        img = np.asarray(pixels, dtype=np.uint8).reshape(height, width, channels)
    return np.clip(gaussian(img / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255


@functools.lru_cache(maxsize=len(_FROST_FILES))
def _frost_picture(idx: int) -> np.ndarray:
    import cv2

    path = os.path.join(os.path.dirname(_library().__file__), "frost", _FROST_FILES[idx])
    picture = cv2.imread(path)  # BGR, as in the library
    if picture is None:  # pragma: no cover - broken installation
        raise FileNotFoundError(f"imagecorruptions frost picture missing or unreadable: {path}")
    picture.setflags(write=False)
    return picture


@functools.lru_cache(maxsize=64)
def _frost_rescaled(idx: int, dsize: tuple[int, int]) -> np.ndarray:
    import cv2

    rescaled = cv2.resize(_frost_picture(idx), dsize=dsize, interpolation=cv2.INTER_CUBIC)
    rescaled.setflags(write=False)
    return rescaled


def _frost(x: np.ndarray, severity: int) -> np.ndarray:
    """imagecorruptions' frost, bit-identical for the same global numpy RNG state.

    Reimplemented for speed only: the library re-reads and bicubically resizes a 300-900 px
    frost picture on every call (~200 images/s at 32x32); here the pictures and their
    rescaled versions are cached. Same random draws in the same order. (Like the library,
    ``np.random.randint(5)`` never picks the sixth picture.)
    """
    c = _FROST_PARAMS[severity - 1]
    idx = np.random.randint(5)
    frost_shape = _frost_picture(idx).shape
    x_shape = x.shape
    if frost_shape[0] >= x_shape[0] and frost_shape[1] >= x_shape[1]:
        scaling_factor = 1.0
    elif frost_shape[0] < x_shape[0] and frost_shape[1] >= x_shape[1]:
        scaling_factor = x_shape[0] / frost_shape[0]
    elif frost_shape[0] >= x_shape[0] and frost_shape[1] < x_shape[1]:
        scaling_factor = x_shape[1] / frost_shape[1]
    else:
        scaling_factor = np.maximum(x_shape[0] / frost_shape[0], x_shape[1] / frost_shape[1])
    scaling_factor *= 1.1
    dsize = (
        int(np.ceil(frost_shape[1] * scaling_factor)),
        int(np.ceil(frost_shape[0] * scaling_factor)),
    )
    rescaled = _frost_rescaled(idx, dsize)
    x_start = np.random.randint(0, rescaled.shape[0] - x_shape[0])
    y_start = np.random.randint(0, rescaled.shape[1] - x_shape[1])
    crop = rescaled[x_start : x_start + x_shape[0], y_start : y_start + x_shape[1]][..., [2, 1, 0]]
    return np.clip(c[0] * x + c[1] * crop, 0, 255)


# ----------------------------------------------------------------------------- core


def _seed_sequence(seed: int, name: str, severity: int, index: int) -> np.random.SeedSequence:
    """The seed material of image ``index`` (= offset + position in the batch)."""
    return np.random.SeedSequence([_SEED_DOMAIN, seed, _NAME_KEYS[name], severity, index])


def _corrupt_one(
    img: np.ndarray, name: str, severity: int, seed_seq: np.random.SeedSequence
) -> np.ndarray:
    """Corrupt one uint8 HxWx3 image (H, W >= MIN_SIDE); returns uint8 HxWx3.

    Reseeds the legacy global numpy RNG; the caller saves and restores its state.
    """
    np.random.seed(seed_seq.generate_state(4))  # 128-bit seed of the legacy MT19937
    if name == "impulse_noise":
        child = np.random.SeedSequence(seed_seq.entropy, spawn_key=(1,))
        out = _impulse_noise(img, severity, np.random.default_rng(child))
    elif name == "glass_blur":
        out = _glass_blur(img, severity)
    elif name == "frost":
        out = _frost(img, severity)
    else:
        from PIL import Image

        func = getattr(_library(), name)
        if name == "spatter":
            with np.errstate(divide="ignore", invalid="ignore"):
                out = np.asarray(func(Image.fromarray(img), severity))
            if np.isnan(out).any():
                # Severities 1-3 normalise the liquid layer by its maximum; when the random
                # layer is empty (a few % of 32x32 images at severity 1) the library computes
                # 0/0 and returns NaN cast to uint8 (garbage). No liquid means no spatter.
                return img.copy()
        else:
            out = np.asarray(func(Image.fromarray(img), severity))
    # What imagecorruptions.corrupt does (np.uint8 truncates); results are already clipped.
    return np.clip(out, 0, 255).astype(np.uint8)


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str naming a corruption, got {type(name).__name__}")
    if name not in CORRUPTIONS:
        key = name.strip().lower().replace("-", "_").replace(" ", "_")
        close = difflib.get_close_matches(key, CORRUPTIONS, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown corruption name {name!r}.{hint} Valid names: {', '.join(CORRUPTIONS)}."
        )
    return name


def _check_int(value: Any, arg: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{arg} must be an int, got {type(value).__name__} ({value!r})")
    value = int(value)
    if value < low or (high is not None and value > high):
        expected = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{arg} must be an integer {expected}, got {value}")
    return value


def _check_images(images: Any) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}"
        )
    if not images.is_floating_point():
        raise TypeError(
            f"images must be a floating-point tensor with values in [0, 1], got dtype "
            f"{images.dtype}; for uint8 images in [0, 255] use images.float() / 255"
        )
    shape = tuple(images.shape)
    if images.dim() == 3 and shape[0] in (1, 3):
        raise InputError(
            f"images must have shape (B, 3, H, W), got {shape} (a single image?); "
            "add the batch dimension with images.unsqueeze(0)"
        )
    if images.dim() != 4:
        raise InputError(f"images must have shape (B, 3, H, W), got {images.dim()}-D {shape}")
    if shape[1] == 1:
        raise InputError(
            f"images must have 3 (RGB) channels, got shape {shape}; replicate grayscale "
            "images to RGB with images.expand(-1, 3, -1, -1) (or images.repeat(1, 3, 1, 1))"
        )
    if shape[1] != 3:
        hint = " (channels-last? use images.permute(0, 3, 1, 2))" if shape[3] == 3 else ""
        raise InputError(f"images must have shape (B, 3, H, W), got {shape}{hint}")
    if shape[2] < 1 or shape[3] < 1:
        raise InputError(f"images must have a non-empty height and width, got shape {shape}")


def _check_range(values: np.ndarray) -> None:
    # numpy (single-threaded) rather than torch: torch's intra-op thread pool adds tens of ms
    # per reduction on a busy 2-core machine. min/max propagate NaN, which fails the test.
    lo, hi = float(values.min()), float(values.max())
    if not (lo >= -_RANGE_TOL and hi <= 1 + _RANGE_TOL):
        finite = bool(np.isfinite(values).all())
        raise InputError(
            f"images must hold values in [0, 1] (tolerance {_RANGE_TOL:g}), got min={lo:.6g}, "
            f"max={hi:.6g}{'' if finite else ' and non-finite values'}; divide [0, 255] "
            "images by 255 and undo any mean/std normalisation before corrupting"
        )


def _work_size(height: int, width: int) -> tuple[int, int]:
    """Size at which images are corrupted: their own, or upscaled so both sides >= MIN_SIDE."""
    if height >= MIN_SIDE and width >= MIN_SIDE:
        return height, width
    factor = MIN_SIDE / min(height, width)
    return max(MIN_SIDE, round(height * factor)), max(MIN_SIDE, round(width * factor))


def corrupt_batch(
    images: torch.Tensor, name: str, severity: int, *, seed: int, offset: int = 0
) -> torch.Tensor:
    """Apply ImageNet-C corruption ``name`` at ``severity`` to every image of a batch.

    Args:
        images: float tensor ``(B, 3, H, W)`` with values in ``[0, 1]``, any device/dtype.
        name: one of :data:`CORRUPTIONS`.
        severity: 1 (mild) .. 5 (strong).
        seed: non-negative int; with ``name``, ``severity`` and ``offset + i`` it determines
            image ``i``'s random stream.
        offset: non-negative index of ``images[0]`` in the full data set, so an image gets the
            same corruption whatever batch it is in (``corrupt_batch(x[k:k+1], ..., offset=k)``
            equals ``corrupt_batch(x, ...)[k]``).

    Returns:
        A new tensor of the input's shape, dtype and device, values in ``[0, 1]``. As in
        ImageNet-C, images are quantised to 8 bits (``round(x * 255)``) before corruption and
        the outputs are multiples of 1/255.

    Semantics match ``imagecorruptions.corrupt(uint8_hwc, severity, name)`` (bit-identical for
    H, W >= 32 and the same global numpy state, except impulse noise, see below), with:

    * Randomness: before each image the *legacy global* numpy RNG (which the library uses) is
      seeded with 128 bits derived by ``np.random.SeedSequence`` from ``(seed, name, severity,
      offset + i)``; the caller's global RNG state is saved before and restored afterwards
      (also on error). The library uses no other RNG (no Python ``random``, no torch, no
      OpenCV RNG) except impulse noise, below. Calls are serialised by a lock; do not use
      ``np.random`` from other threads concurrently.
    * scikit-image >= 0.21: ``gaussian_blur`` runs under :func:`_skimage_gaussian_compat`
      (temporarily translates the removed ``multichannel=True`` to ``channel_axis=-1``);
      ``glass_blur`` is reimplemented (also ~10x faster at 32x32, ~3x at 224x224),
      bit-identical to the library.
    * ``impulse_noise``: the library's ``skimage.util.random_noise`` call ignores numpy's
      seed under scikit-image >= 0.21 (fresh OS entropy); we make the same call with an
      explicit generator derived from the same seed material. Reproducible, but the draws
      differ from those of the (irreproducible) library call.
    * ``frost``: reimplemented with cached frost pictures (~50x faster at 32x32),
      bit-identical to the library.
    * ``spatter`` (severities 1-3): when the random liquid layer is empty (a few % of 32x32
      images at severity 1, rarer at larger sizes) the library divides 0 by 0 and returns
      NaN cast to uint8; we return the uncorrupted image (no liquid, no spatter).
    * Small images: in 1.1.2 every corruption runs natively on images of at least 32x32
      (checked on 32x32, 33x47, 224x224, all severities), including frost (it crops a
      window of a larger frost picture) and the blurs; they are applied at the image's own
      resolution, with ImageNet-C's pixel-unit parameters, so blurs are relatively much
      stronger on 32x32 images than on 224x224 ones. Images with a side below 32 (which
      ``imagecorruptions.corrupt`` rejects) are upsampled bilinearly so their shorter side is
      32 (aspect ratio kept), corrupted, and downsampled back with antialiased bilinear
      interpolation, then requantised to 8 bits.

    Raises:
        TypeError: ``images`` not a floating-point tensor; ``name``/``severity``/``seed``/
            ``offset`` of the wrong type.
        ValueError: unknown ``name`` (lists the valid names and suggests the closest),
            ``severity`` outside 1..5, negative ``seed``/``offset``.
        entroguard.errors.InputError (a ValueError): shape not (B, 3, H, W) (the message says
            how to fix grayscale, channels-last or unbatched input), values outside [0, 1].
    """
    name = _check_name(name)
    severity = _check_int(severity, "severity", 1, 5)
    seed = _check_int(seed, "seed", 0)
    offset = _check_int(offset, "offset", 0)
    _check_images(images)

    batch, _, height, width = images.shape
    if batch == 0:
        return images.clone()
    values = images.detach().to(device="cpu", dtype=torch.float32).numpy()
    _check_range(values)
    _library()  # import (and fail) before doing any work

    work_h, work_w = _work_size(height, width)
    resized = (work_h, work_w) != (height, width)
    if resized:
        upsampled = F.interpolate(
            torch.from_numpy(np.clip(values, 0, 1)),
            size=(work_h, work_w),
            mode="bilinear",
            align_corners=False,
        )
        values = upsampled.numpy()
    # round half to even, as torch.round; uint8 HWC images as imagecorruptions expects
    arrays = np.ascontiguousarray(
        np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    )

    outs = []
    with _LOCK:
        saved_state = np.random.get_state()
        try:
            with _skimage_gaussian_compat():
                for i in range(batch):
                    seed_seq = _seed_sequence(seed, name, severity, offset + i)
                    outs.append(_corrupt_one(arrays[i], name, severity, seed_seq))
        finally:
            np.random.set_state(saved_state)

    stacked = np.ascontiguousarray(np.stack(outs).transpose(0, 3, 1, 2))
    out = torch.from_numpy(stacked.astype(np.float32) / np.float32(255))
    if resized:
        out = F.interpolate(out, size=(height, width), mode="bilinear", antialias=True)
        out = (out * 255).round_().clamp_(0, 255) / 255
    return out.to(device=images.device, dtype=images.dtype)
