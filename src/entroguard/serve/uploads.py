"""What the same images would cost to upload without the split model: raw, PNG and JPEG bytes.

The baseline is the image the head receives (e.g. 32x32 for the embedded models), quantised to
8 bits. An image whose three channels are equal (Fashion-MNIST's grey images, repeated to RGB
by the data pipeline) is counted as one grey channel, which is what a device would send, so
the baselines are never inflated by the channel repetition.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is not imported for the CLI's constants
    from torch import Tensor

DEFAULT_JPEG_QUALITY = 90


@dataclass
class UploadSizes:
    """Bytes per image of each way of uploading it, arrays of shape (N,).

    Attributes:
        raw: uncompressed 8-bit pixels (H x W x channels).
        png: lossless PNG (Pillow, default compression level).
        jpeg: baseline JPEG at ``jpeg_quality`` (Pillow, 4:2:0 for colour images).
        jpeg_quality: the JPEG quality used (1-95).
    """

    raw: np.ndarray
    png: np.ndarray
    jpeg: np.ndarray
    jpeg_quality: int = DEFAULT_JPEG_QUALITY

    def means(self) -> dict[str, float]:
        """Mean bytes per image of each baseline."""
        return {
            "raw_bytes": float(self.raw.mean()),
            "png_bytes": float(self.png.mean()),
            "jpeg_bytes": float(self.jpeg.mean()),
        }


def to_uint8_hwc(images: Tensor) -> np.ndarray:
    """Float images (B, C, H, W) in [0, 1] -> uint8 array (B, H, W, C), rounded."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    x = images.detach().float().clamp(0, 1).mul(255).round().to("cpu").numpy().astype(np.uint8)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _pil_image(pixels: np.ndarray):
    from PIL import Image

    if pixels.shape[-1] == 3 and (pixels == pixels[..., :1]).all():
        return Image.fromarray(pixels[..., 0], mode="L")
    if pixels.shape[-1] == 1:
        return Image.fromarray(pixels[..., 0], mode="L")
    return Image.fromarray(pixels, mode="RGB")


def encoded_size(image, fmt: str, **options) -> int:
    """Size in bytes of a Pillow image saved as ``fmt`` with ``options``."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.tell()


def upload_sizes(images: Tensor, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> UploadSizes:
    """Raw, PNG and JPEG sizes (bytes) of each image of a float batch (B, C, H, W) in [0, 1]."""
    if not 1 <= jpeg_quality <= 95:
        raise ValueError(f"jpeg_quality must be in 1..95, got {jpeg_quality}")
    raw, png, jpeg = [], [], []
    for pixels in to_uint8_hwc(images):
        image = _pil_image(pixels)
        raw.append(image.width * image.height * len(image.getbands()))
        png.append(encoded_size(image, "PNG"))
        jpeg.append(encoded_size(image, "JPEG", quality=jpeg_quality))
    as_array = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return UploadSizes(as_array(raw), as_array(png), as_array(jpeg), jpeg_quality)
