"""Decoding rANS strings safely: every encoder output decodes exactly, anything else is refused.

CompressAI's C++ decoder reads past its buffer on crafted strings and can kill the process
(CompressAI issue #300); the codec walks every string first. Tests that feed crafted strings to
a whole model run in a subprocess, so a crash shows up as a failed test, not a dead test run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from bisect import bisect_right
from pathlib import Path

import pytest
import torch
from compressai.ans import BufferedRansEncoder, RansDecoder, RansEncoder
from eg_testutil import seeded_images, seeded_model

from entroguard.codec import BitstreamError
from entroguard.codec.rans import CdfTables, RansWalker, StreamDecoder
from entroguard.errors import EntroguardError

TESTS = Path(__file__).parent


def _fp_tables(model) -> CdfTables:
    return CdfTables.of(model.codec.entropy_bottleneck)


def _decode(string: bytes, indexes: list[int], tables: CdfTables) -> list[int]:
    decoder = StreamDecoder(string)
    values = decoder.decode(torch.tensor(indexes, dtype=torch.int32), tables).tolist()
    decoder.finish()
    return values


def _noise_images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_the_error_is_entroguards_and_names_the_servers_reason():
    assert issubclass(BitstreamError, EntroguardError) and issubclass(BitstreamError, ValueError)
    assert BitstreamError.reason == "undecodable"


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_every_encoder_output_decodes_exactly_and_as_compressai_decodes_it(prior):
    model = seeded_model("resnet_s", prior, seed=3)
    x = torch.cat([seeded_images(6, seed=4), _noise_images(6, seed=5)])
    encoded = model.compress(x)
    assert torch.equal(model.decompress(encoded), model.codec.quantize(model.analyze(x)))
    if prior == "fp":  # the same values as CompressAI's decoder on its own
        tables = _fp_tables(model)
        indexes = model.codec._indexes(model.latent_hw, torch.device("cpu"))
        used, renumbered = tables.used_by(indexes)
        for (string,) in encoded.strings:
            raw = RansDecoder()
            raw.set_stream(string)
            expected = raw.decode_stream(renumbered, used.cdfs, used.lengths, used.offsets)
            assert _decode(string, indexes.reshape(-1).tolist(), tables) == expected


def test_bypass_coded_values_decode():
    """Values outside the CDF range go through the coder's bypass path (up to 8 nibbles)."""
    tables = _fp_tables(seeded_model("resnet_s", "fp", seed=3))
    g = torch.Generator().manual_seed(0)
    indexes = [i % len(tables.cdfs) for i in range(512)]
    big = torch.randint(-(2**20), 2**20, (512,), generator=g).tolist()
    small = torch.randint(-3, 4, (512,), generator=g).tolist()
    symbols = [b if i % 5 == 0 else s for i, (b, s) in enumerate(zip(big, small, strict=True))]
    symbols[7] = 2**26  # 7 bypass nibbles (CompressAI's encoder never returns from 2**28 on)
    string = RansEncoder().encode_with_indexes(
        symbols, indexes, tables.cdfs, tables.lengths, tables.offsets
    )
    assert _decode(string, indexes, tables) == symbols


def test_groups_of_one_stream_and_a_refused_group_poisons_the_stream():
    tables = _fp_tables(seeded_model("resnet_s", "fp", seed=3))
    first, second = [1, -2, 3, 100] * 4, [0, 5, -7, 9000] * 4
    indexes = torch.tensor(list(range(4)) * 4, dtype=torch.int32)
    encoder = BufferedRansEncoder()
    for group in (first, second):
        encoder.encode_with_indexes(
            group, indexes.tolist(), tables.cdfs, tables.lengths, tables.offsets
        )
    string = encoder.flush()
    decoder = StreamDecoder(string)
    assert decoder.decode(indexes, tables).tolist() == first
    with pytest.raises(BitstreamError, match="does not end where its symbols do"):
        decoder.finish()  # a group is left
    assert decoder.decode(indexes, tables).tolist() == second
    decoder.finish()
    with pytest.raises(BitstreamError, match="past the end"):
        decoder.decode(indexes.repeat(50), tables)
    with pytest.raises(BitstreamError, match="already refused"):
        decoder.decode(indexes, tables)
    with pytest.raises(BitstreamError, match="already refused"):
        decoder.finish()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "32-bit words"),
        (b"\x01\x02\x03\x04\x05\x06\x07", "32-bit words"),
        (b"\x00" * 10, "32-bit words"),
        (b"\xff" * 64, "bypass"),
        (b"\xff" * 60_000, "bypass"),
    ],
)
def test_malformed_strings_are_refused(data, match):
    tables = _fp_tables(seeded_model("resnet_s", "fp", seed=3))
    with pytest.raises(BitstreamError, match=match):
        _decode(data, [i % len(tables.cdfs) for i in range(1024)], tables)


def test_truncated_padded_and_shifted_strings_are_refused():
    model = seeded_model("resnet_s", "fp", seed=3)
    tables = _fp_tables(model)
    ((string,),) = model.compress(seeded_images(1, seed=9)).strings
    indexes = model.codec._indexes(model.latent_hw, torch.device("cpu")).reshape(-1).tolist()
    _decode(string, indexes, tables)
    for bad in (string[:-4], string + b"\x00" * 4, string[4:], b"\x00" * len(string)):
        with pytest.raises(BitstreamError):
            _decode(bad, indexes, tables)


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_symbol_lookup_agrees_with_the_decoders_search_for_every_value(prior):
    """The walk finds each symbol through a lookup; it must be the C++ decoder's symbol."""
    codec = seeded_model("resnet_s", prior, seed=3).codec
    models = [codec.entropy_bottleneck] + ([codec.gaussian_conditional] if prior == "mshp" else [])
    rows = [row for model in models for row in CdfTables.of(model).rows]
    picked = rows if prior == "fp" else rows[:: len(rows) // 12]  # narrow to wide Gaussians
    for cdf, size, _, freqs, lookup, shift in picked:
        assert len(lookup) << shift == 1 << 16 and 4 <= shift <= 8
        searched = 0
        for cum in range(1 << 16):
            s = bisect_right(cdf, cum, 0, size) - 1
            v = lookup[cum >> shift]
            if v >= 0:
                assert v == s
            else:
                assert cdf[~v] <= cum and ~v <= s
                searched += 1
        assert searched <= (1 << 16) // 20 or shift == 4
        assert freqs == [cdf[i + 1] - cdf[i] for i in range(size - 1)]


def test_input_types_and_tables():
    tables = _fp_tables(seeded_model("resnet_s", "fp", seed=3))
    with pytest.raises(TypeError, match="bytes"):
        StreamDecoder("not bytes")
    StreamDecoder(bytearray(8))  # bytes-like input is copied
    with pytest.raises(ValueError, match="outside"):
        tables.used_by(torch.tensor([len(tables.cdfs)]))
    with pytest.raises(ValueError, match="quantised CDF"):
        CdfTables([[0, 5, 5, 1 << 16]], [4], [0])
    with pytest.raises(BitstreamError, match="32-bit words"):
        RansWalker(b"\x00" * 6)


CRAFTED_FROM_PACKETS = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    from eg_testutil import seeded_images, seeded_model
    from entroguard.codec import BitstreamError
    from entroguard.packet import Packet
    torch.set_num_threads(1)
    model = seeded_model("resnet_s", {prior!r}, seed=3)
    crafted = Packet({prior!r}, model.fingerprint_bytes, model.latent_hw,
                     (b"\\xff" * {size},)).to_bytes()  # checksum-valid
    x = seeded_images(2, seed=1)
    good = model.to_packets(x)
    try:
        model.from_packets([good[0], crafted])
    except BitstreamError as exc:
        print("refused:", exc)
    expected = model.classify(model.decompress(model.compress(x)))
    assert torch.equal(model.from_packets(good), expected)
    print("still decodes")
    """
)


@pytest.mark.parametrize(("prior", "size"), [("fp", 60_000), ("mshp", 1_000_000)])
def test_from_packets_refuses_crafted_packets_instead_of_crashing(prior, size):
    """Unchecked, these packets segfault ``from_packets`` (CompressAI's decoder, issue #300)."""
    code = CRAFTED_FROM_PACKETS.format(tests=str(TESTS), prior=prior, size=size)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "refused: a coded value announces 15 bypass words" in done.stdout, done.stdout
    assert "resend it" in done.stdout and "still decodes" in done.stdout


FUZZ_FROM_PACKETS = textwrap.dedent(
    """
    import random, sys, torch
    sys.path.insert(0, {tests!r})
    from eg_testutil import seeded_model
    from entroguard.codec import BitstreamError
    from entroguard.packet import Packet
    torch.set_num_threads(1)
    model = seeded_model("resnet_s", {prior!r}, seed=3)
    noise = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    strings = [s[0] for s in model.compress(noise).strings]
    rng = random.Random(0)
    refused = decoded = 0
    for trial in range({n}):
        s = bytearray(strings[trial % 8])
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
        packet = Packet({prior!r}, model.fingerprint_bytes, model.latent_hw, (bytes(s),))
        try:
            model.from_packets([packet.to_bytes()])
            decoded += 1
        except BitstreamError:
            refused += 1
    print(refused, decoded)
    """
)


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_fuzzed_checksum_valid_packets_never_crash_from_packets(prior):
    code = FUZZ_FROM_PACKETS.format(tests=str(TESTS), prior=prior, n=400)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    refused, decoded = map(int, done.stdout.split())
    assert refused + decoded == 400 and refused > 300, (refused, decoded)


def _walk_outcome(data: bytes, indexes: list[int], tables: CdfTables, compiled: bool):
    """Where the walk ends (next word, state, finished) or the message it refuses with."""
    try:
        walker = RansWalker(data, compiled=compiled)
        walker.walk(indexes if not compiled else torch.tensor(indexes), tables)
    except (BitstreamError, ValueError) as error:
        return str(error)
    return walker._p, walker._x, walker.finished()


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_the_compiled_walk_agrees_with_the_python_walk(prior):
    """On valid, cut, padded, bypass-laden and random strings the compiled check ends in the
    same place, or refuses with the same message, as the Python walk."""
    from entroguard.codec import rans_kernel

    assert rans_kernel.available()  # a C compiler is part of the set-up on every CI machine
    model = seeded_model("resnet_s", prior, seed=3)
    x = torch.cat([seeded_images(4, seed=4), _noise_images(4, seed=5)])
    strings = [s[-1] for s in model.compress(x).strings]  # the y string (z first for mshp)
    if prior == "fp":
        tables = _fp_tables(model)
        indexes = model.codec._indexes(model.latent_hw, torch.device("cpu")).reshape(-1).tolist()
    else:  # every Gaussian table, indexes drawn over all of them
        tables = CdfTables.of(model.codec.gaussian_conditional)
        g = torch.Generator().manual_seed(1)
        indexes = torch.randint(0, len(tables.cdfs), (1024,), generator=g).tolist()
    g = torch.Generator().manual_seed(2)
    candidates = [*strings, *(s[:-4] for s in strings), *(s + b"\0" * 4 for s in strings),
                  b"\xff" * 64, b"\xff" * 4096,
                  *(bytes(torch.randint(0, 256, (4 * n,), generator=g).tolist())
                    for n in (2, 3, 17, 200, 2000))]  # fmt: skip
    outcomes = [(_walk_outcome(d, indexes, tables, True), _walk_outcome(d, indexes, tables, False))
                for d in candidates]  # fmt: skip
    assert all(a == b for a, b in outcomes), [o for o in outcomes if o[0] != o[1]]
    assert len({str(a) for a, _ in outcomes}) > 3  # finished, past the end, bypass, unfinished
    with pytest.raises(ValueError, match="outside"):
        RansWalker(strings[0], compiled=True).walk(torch.tensor([len(tables.cdfs)]), tables)


def test_without_a_compiler_the_python_walk_decodes(monkeypatch):
    from entroguard import cbuild
    from entroguard.codec import rans_kernel

    monkeypatch.setattr(cbuild, "compilers", lambda: [])
    rans_kernel._library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not build the rANS check kernel"):
            assert not rans_kernel.available()
        model = seeded_model("resnet_s", "mshp", seed=3)
        x = seeded_images(3, seed=4)
        assert not RansWalker(b"\0" * 8).compiled
        assert torch.equal(model.decompress(model.compress(x)),
                           model.codec.quantize(model.analyze(x)))  # fmt: skip
    finally:
        rans_kernel._library.cache_clear()


def test_flat_tables_are_the_same_for_padded_and_cut_tables():
    """CompressAI stores its tables padded to the longest; the codec cuts them. The compiled
    check reads each table only up to its length either way."""
    gc = seeded_model("resnet_s", "mshp", seed=3).codec.gaussian_conditional
    cut = CdfTables.of(gc)
    padded = CdfTables(gc._quantized_cdf.tolist(), cut.lengths, cut.offsets)
    assert sum(map(len, padded.cdfs)) > sum(map(len, cut.cdfs))
    assert all((a == b).all() for a, b in zip(cut.flat, padded.flat, strict=True))
