"""Hostile image files at the edge: bombs and strips are one-line errors, tiny images warn."""

from __future__ import annotations

import logging
import struct
import zlib

import pytest
from PIL import Image

from entroguard.errors import InputError
from entroguard.serve.inputs import MAX_IMAGE_PIXELS, InputSource, load_image


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its pixel data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


@pytest.mark.parametrize("width,height", [(20_000, 20_000), (10_000, 5_000)])
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, width, height):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(width, height))
    assert width * height > MAX_IMAGE_PIXELS
    with pytest.raises(InputError, match="megapixel limit: downscale") as info:
        load_image(bomb, (32, 32))
    assert "\n" not in str(info.value)


def test_an_extreme_strip_is_refused_before_it_is_resized(tmp_path):
    strip = tmp_path / "strip.png"
    Image.new("L", (100_000, 1)).save(strip)
    assert strip.stat().st_size < 1_000
    with pytest.raises(InputError, match="more elongated than 20:1"):
        list(InputSource([str(strip)], (32, 32)).batches(1))


def test_a_tiny_image_is_classified_with_a_warning(tmp_path, caplog):
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tiny)
    with caplog.at_level(logging.WARNING, logger="entroguard.edge"):
        image = load_image(tiny, (32, 32))
    assert image.shape == (3, 32, 32)
    assert "1x1, much smaller than the model's 32x32" in caplog.text
    normal = tmp_path / "normal.png"
    Image.new("RGB", (40, 30)).save(normal)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="entroguard.edge"):
        load_image(normal, (32, 32))
    assert caplog.text == ""
