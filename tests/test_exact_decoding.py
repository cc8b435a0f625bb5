"""Every mshp zoo model decodes exactly what it encoded, on clean and on JPEG-defended images.

Regression: MobileNetV2's analysis transform hands ``h_a`` a channels-last latent, so the
encoder's hyper-latent had channels-last strides while the decoder's was contiguous; ``h_s``
then gave scales that differed in the last bits, and on some images (test image 30 after JPEG
on ``mobilenetv2_s-mshp-beta0.04``) a scale crossed a table boundary and the decoder derailed.
"""

from __future__ import annotations

import pytest
import torch

from entroguard.campaign.models import resolve_models
from entroguard.data import load_dataset
from entroguard.defenses import build_defense

MSHP = [r for r in resolve_models("zoo") if r.prior == "mshp"]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return load_dataset("fashion-mnist", "test").to_float(slice(0, 48))


@pytest.mark.parametrize("ref", MSHP, ids=[r.name for r in MSHP])
def test_decoding_is_exact_on_clean_and_jpeg_images(ref, images):
    model = ref.load()
    jpeg = build_defense("jpeg")
    for x in (images, jpeg(model, images)):
        with torch.no_grad():
            y = model.analyze(x)
            decoded = model.codec.decompress(model.codec.compress(y), tuple(y.shape[-2:]))
            expected = model.codec.quantize(y)
        mismatched = (decoded != expected).flatten(1).any(dim=1)
        assert not mismatched.any(), f"images {mismatched.nonzero().flatten().tolist()}"


def test_the_hyper_synthesis_does_not_depend_on_the_memory_layout():
    (ref,) = resolve_models(["mobilenetv2_s-mshp-beta0.04"])
    codec = ref.load().codec
    z = torch.randn(4, codec.hyper_channels, 2, 2, generator=torch.Generator().manual_seed(0))
    a = codec.gaussian_params(z, (8, 8))
    b = codec.gaussian_params(z.to(memory_format=torch.channels_last), (8, 8))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
