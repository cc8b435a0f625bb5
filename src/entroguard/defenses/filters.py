"""Frequency-domain baselines: a DCT low-pass filter, a Gaussian blur and JPEG re-encoding.

The two linear filters are differentiable (exact gradient path). JPEG is not: it quantises
in the DCT domain and rounds to 8 bits, so its gradient path is BPDA (Athalye et al. 2018,
"Obfuscated gradients give a false sense of security"), the approximation with which they
broke the JPEG defence of Guo et al. 2018 ("Countering adversarial images using input
transformations").
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms.v2.functional import gaussian_blur

from entroguard.defenses.base import Defense
from entroguard.defenses.dct import band_fraction, project_low_band


class LowPass(Defense):
    """Keep the lowest ``fraction`` of 2-D DCT frequencies of each image and channel.

    The orthogonal projection onto the low band of :func:`entroguard.defenses.dct.low_band_mask`
    (the same band as the ``rate_lowfreq`` attack's), over the spatial dimensions only, then a
    clamp to [0, 1]. Linear before the clamp, so the gradient path is exact.

    Args:
        fraction: fraction of the H x W DCT frequencies kept, in (0, 1] (lowest normalised
            radius first; ties at the cut are kept, see ``band_fraction``).

    Shape:
        images (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1].
    """

    name = "lowpass"
    gradient = "exact"
    hparams: tuple[str, ...] = ("fraction",)

    def __init__(self, fraction: float = 0.25) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.fraction = float(fraction)

    def kept_fraction(self, h: int, w: int) -> float:
        """The fraction of frequencies really kept for an h x w image."""
        return band_fraction(h, w, self.fraction)

    def forward(
        self, model: nn.Module | None, images: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        return project_low_band(images, self.fraction).clamp(0.0, 1.0)


class GaussianBlur(Defense):
    """Gaussian blur (torchvision's, reflect padding) of standard deviation ``sigma`` pixels.

    Args:
        sigma: standard deviation in pixels (> 0).
        kernel_size: odd kernel size; default ``2 * ceil(3 * sigma) + 1``.

    Shape:
        images (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1]. Exact gradient path.
    """

    name = "gaussian_blur"
    gradient = "exact"
    hparams: tuple[str, ...] = ("sigma", "kernel_size")

    def __init__(self, sigma: float = 1.0, kernel_size: int | None = None) -> None:
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0 pixels, got {sigma}")
        if kernel_size is None:
            kernel_size = 2 * math.ceil(3 * sigma) + 1
        if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        self.sigma = float(sigma)
        self.kernel_size = int(kernel_size)

    def forward(
        self, model: nn.Module | None, images: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        k = self.kernel_size
        if k // 2 >= min(images.shape[-2:]):
            raise ValueError(f"kernel_size {k} is too large for {tuple(images.shape[-2:])} images")
        return gaussian_blur(images, [k, k], [self.sigma, self.sigma]).clamp(0.0, 1.0)


class JPEG(Defense):
    """JPEG re-encoding at ``quality`` (libjpeg through Pillow, 4:2:0 chroma subsampling).

    The images are rounded to 8 bits, encoded and decoded one by one in memory (JPEG codes
    one image at a time) and scaled back to [0, 1]. Gradient path: BPDA (identity backward).

    Args:
        quality: JPEG quality, 1-100 (Guo et al. 2018 used 75).

    Shape:
        images (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1], multiples of 1/255.
    """

    name = "jpeg"
    gradient = "bpda"
    hparams: tuple[str, ...] = ("quality",)

    def __init__(self, quality: int = 75) -> None:
        if int(quality) != quality or not 1 <= quality <= 100:
            raise ValueError(f"quality must be an integer in 1-100, got {quality}")
        self.quality = int(quality)

    def _round_trip(self, pixels: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=self.quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return np.asarray(decoded.convert("RGB"))

    def forward(
        self, model: nn.Module | None, images: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        if images.shape[1] != 3:
            raise ValueError(f"JPEG needs RGB images (B, 3, H, W), got {tuple(images.shape)}")
        if images.shape[0] == 0:
            return images.clone()
        pixels = (images.detach() * 255.0).round().clamp(0, 255).to(torch.uint8)
        batch = pixels.permute(0, 2, 3, 1).cpu().numpy()
        decoded = np.stack([self._round_trip(np.ascontiguousarray(p)) for p in batch])
        out = torch.from_numpy(decoded).permute(0, 3, 1, 2)
        return out.to(device=images.device, dtype=images.dtype) / 255.0
