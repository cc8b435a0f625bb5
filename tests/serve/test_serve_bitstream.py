"""Checking rANS strings before CompressAI's decoder reads them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from compressai.ans import RansEncoder
from serve_helpers import make_model, noise_images, smooth_images

from entroguard.models.split import EncodedBatch
from entroguard.serve.bitstream import (
    BitstreamError,
    CheckedRansDecoder,
    RansWalker,
    check_rans_string,
    harden_decoder,
    is_hardened,
)


def _fp_tables(model):
    eb = model.codec.entropy_bottleneck
    return (
        eb._quantized_cdf.tolist(),
        eb._cdf_length.reshape(-1).tolist(),
        eb._offset.reshape(-1).tolist(),
    )


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_every_encoder_output_passes_and_decodes_unchanged(prior):
    model = make_model(prior, seed=3)
    images = torch.cat([smooth_images(6, seed=4), noise_images(6, seed=5)])
    encoded = model.compress(images)
    expected = model.decompress(encoded)
    assert harden_decoder(model)["entropy_models"] >= 1
    assert is_hardened(model)
    assert harden_decoder(model)["entropy_models"] == 0  # idempotent
    assert torch.equal(model.decompress(encoded), expected)


def test_bypass_coded_values_pass():
    """Values outside the CDF range go through the coder's bypass path (up to 8 nibbles)."""
    model = make_model("fp", seed=3)
    cdfs, sizes, offsets = _fp_tables(model)
    g = torch.Generator().manual_seed(0)
    n_channels = len(cdfs)
    indexes = [i % n_channels for i in range(512)]
    big = torch.randint(-(2**20), 2**20, (512,), generator=g).tolist()
    small = torch.randint(-3, 4, (512,), generator=g).tolist()
    symbols = [b if i % 5 == 0 else s for i, (b, s) in enumerate(zip(big, small, strict=True))]
    symbols[7] = 2**26  # 7 bypass nibbles (CompressAI's encoder never returns from 2**28 on)
    string = RansEncoder().encode_with_indexes(symbols, indexes, cdfs, sizes, offsets)
    check_rans_string(string, indexes, cdfs, sizes)
    decoder = CheckedRansDecoder()
    assert decoder.decode_with_indexes(string, indexes, cdfs, sizes, offsets) == symbols


def test_stream_decoding_in_groups():
    model = make_model("fp", seed=3)
    cdfs, sizes, offsets = _fp_tables(model)
    from compressai.ans import BufferedRansEncoder

    first, second = [1, -2, 3, 100] * 4, [0, 5, -7, 9000] * 4
    indexes = list(range(4)) * 4
    enc = BufferedRansEncoder()
    enc.encode_with_indexes(first, indexes, cdfs, sizes, offsets)
    enc.encode_with_indexes(second, indexes, cdfs, sizes, offsets)
    string = enc.flush()
    decoder = CheckedRansDecoder()
    decoder.set_stream(string)
    assert decoder.decode_stream(indexes, cdfs, sizes, offsets) == first
    assert decoder.decode_stream(indexes, cdfs, sizes, offsets) == second
    with pytest.raises(BitstreamError, match="past the end"):
        decoder.decode_stream(indexes * 50, cdfs, sizes, offsets)
    with pytest.raises(BitstreamError, match="before set_stream"):
        CheckedRansDecoder().decode_stream(indexes, cdfs, sizes, offsets)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "32-bit words"),
        (b"\x01\x02\x03\x04\x05\x06\x07", "32-bit words"),
        (b"\x00" * 10, "32-bit words"),
        (b"\xff" * 64, "bypass"),
    ],
)
def test_walker_refuses_malformed_strings(data, match):
    model = make_model("fp", seed=3)
    cdfs, sizes, _ = _fp_tables(model)
    with pytest.raises(BitstreamError, match=match):
        check_rans_string(data, [i % len(cdfs) for i in range(1024)], cdfs, sizes)


def test_walker_refuses_truncated_and_padded_strings():
    model = make_model("fp", seed=3)
    cdfs, sizes, _ = _fp_tables(model)
    y = model.analyze(smooth_images(1, seed=9))
    (string,) = model.codec.compress(y)[0]
    hw = y.shape[-2] * y.shape[-1]
    indexes = [c for c in range(len(cdfs)) for _ in range(hw)]
    check_rans_string(string, indexes, cdfs, sizes)
    for bad in (string[:-4], string + b"\x00" * 4, string[4:]):
        with pytest.raises(BitstreamError):
            check_rans_string(bad, indexes, cdfs, sizes)
    with pytest.raises(BitstreamError, match="CDF index"):
        RansWalker(string).walk([len(cdfs)], cdfs, sizes)


FUZZ_DECODE = textwrap.dedent(
    """
    import random, sys, torch
    sys.path.insert(0, {helpers!r})
    from serve_helpers import make_model, noise_images
    from entroguard.models.split import EncodedBatch
    from entroguard.serve.bitstream import BitstreamError, harden_decoder
    torch.set_num_threads(1)
    model = make_model({prior!r}, seed=3)
    harden_decoder(model)
    encoded = model.compress(noise_images(8, seed=1))
    rng = random.Random(0)
    refused = decoded = 0
    for trial in range({n}):
        s = bytearray(encoded.strings[trial % 8][0])
        kind = trial % 4
        if kind == 0:
            for _ in range(rng.choice([1, 2, 8])):
                s[rng.randrange(len(s))] = rng.getrandbits(8)
        elif kind == 1:
            s = bytearray(b"\\xff" * rng.choice([8, 64, 700, 4096, 20000, 60000]))
        elif kind == 2:
            s = bytearray(rng.getrandbits(8) for _ in range(rng.choice([8, 12, 64, 1000])))
        else:
            s = s[: rng.randrange(8, len(s) + 1) // 4 * 4]
        try:
            model.decompress(EncodedBatch([[bytes(s)]], encoded.latent_hw))
            decoded += 1
        except BitstreamError:
            refused += 1
    print(refused, decoded)
    """
)


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_corrupt_strings_never_crash_the_decoder(prior, tmp_path):
    """Run in a subprocess: without the checks this segfaults (CompressAI issue #300)."""
    from pathlib import Path

    code = FUZZ_DECODE.format(helpers=str(Path(__file__).parent), prior=prior, n=400)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    refused, decoded = map(int, done.stdout.split())
    assert refused + decoded == 400 and refused > 100


def test_encoded_batch_type_is_the_models():
    assert EncodedBatch  # the servers decode EncodedBatch objects built by packets_to_batch
