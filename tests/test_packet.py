"""Tests for the entroguard wire format (entroguard.packet)."""

from __future__ import annotations

import array
import pickle
import struct
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entroguard import packet as packet_module
from entroguard.packet import (
    DEFAULT_MAX_PACKET_BYTES,
    MAGIC,
    MAX_LATENT_SIDE,
    MAX_STRING_BYTES,
    PACKET_ERROR_REASONS,
    PRIORS,
    READABLE_VERSIONS,
    STRINGS_PER_PRIOR,
    VERSION,
    Packet,
    PacketError,
    header_size,
    parse_packet,
)

FP = b"\x01\x02\x03\x04"
FUZZ = settings(derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _raw(
    body: bytes,
    *,
    magic: bytes = MAGIC,
    version: int = VERSION,
    prior_id: int = 0,
    crc: int | None = None,
) -> bytes:
    """Hand-build a packet from the bytes after the checksum field (correct CRC by default)."""
    crc = zlib.crc32(body) if crc is None else crc
    return magic + bytes([(version << 4) | prior_id]) + FP + struct.pack(">I", crc) + body


def _reseal(data: bytes) -> bytes:
    """Recompute the checksum of a (possibly mutated) packet so later checks get exercised."""
    if len(data) < 11:
        return data
    return data[:7] + struct.pack(">I", zlib.crc32(data[11:])) + data[11:]


def _reason(data, **kw) -> str:
    with pytest.raises(PacketError) as info:
        parse_packet(data, **kw)
    assert info.value.reason in PACKET_ERROR_REASONS
    assert str(info.value)  # a human sentence
    return info.value.reason


# --------------------------------------------------------------------------- round trips


def test_constants():
    assert (
        VERSION == 2
        and READABLE_VERSIONS == (1, 2, 3, 4, 5)
        and MAGIC == b"EG"
        and MAX_LATENT_SIDE == 4096
    )
    assert DEFAULT_MAX_PACKET_BYTES == 4 * 1024 * 1024
    assert PRIORS == {"fp": 0, "mshp": 1, "q8": 2}
    assert STRINGS_PER_PRIOR == {"fp": 1, "mshp": 1, "q8": 1}
    assert MAX_STRING_BYTES == 2**21 - 1


@pytest.mark.parametrize(
    ("prior", "hw", "lengths", "header"),
    [
        ("fp", (8, 8), [300], 15),
        ("fp", (8, 8), [0], 14),
        ("fp", (1, 1), [127], 14),
        ("fp", (127, 128), [128], 16),
        ("fp", (4096, 4096), [16384], 18),
        ("mshp", (8, 8), [360], 15),
        ("mshp", (8, 8), [0], 14),
        ("mshp", (1, 1), [127], 14),
        ("mshp", (127, 128), [128], 16),
        ("mshp", (16, 24), [20000], 16),
        ("mshp", (3, 4096), [16384], 17),
        ("mshp", (4096, 4096), [16383], 17),
    ],
)
def test_round_trip_and_exact_header_size(prior, hw, lengths, header):
    strings = tuple(bytes((i * 7 + k) & 0xFF for i in range(n)) for k, n in enumerate(lengths))
    p = Packet(prior=prior, fingerprint=FP, latent_hw=hw, strings=strings)
    data = p.to_bytes()
    assert p.header_bytes == header == header_size(prior, hw, lengths)
    assert p.payload_bytes == sum(lengths)
    assert len(data) == header + sum(lengths) == p.total_bytes
    assert data[:2] == b"EG" and data[2] == (VERSION << 4) | PRIORS[prior] and data[3:7] == FP
    q = parse_packet(data)
    assert q == p and q.strings == strings and q.latent_hw == hw and q.prior == prior
    assert parse_packet(bytearray(data)) == p
    assert parse_packet(memoryview(data)) == p


@pytest.mark.parametrize("prior", sorted(PRIORS))
def test_typical_headers_are_compact(prior):
    # one string per prior; "mshp" codes z then y into that single stream
    p = Packet(prior, FP, (8, 8), (b"\xbb" * 60 + b"\xaa" * 300,))
    assert p.header_bytes == 15
    assert len(p.to_bytes()) == 375
    for n in (128, 300, 16383):  # a 2-byte length varint: 15-byte header for an 8x8 latent
        assert header_size(prior, (8, 8), [n]) == 15
    assert header_size(prior, (8, 8), [127]) == 14
    assert header_size(prior, (8, 8), [16384]) == 16


@pytest.mark.parametrize("prior", sorted(PRIORS))
def test_largest_header(prior):
    hw = (MAX_LATENT_SIDE, MAX_LATENT_SIDE)
    assert header_size(prior, hw, [MAX_STRING_BYTES]) == 11 + 2 + 2 + 3


def test_multi_string_machinery_kept_for_future_priors(monkeypatch):
    # One varint length per string: a prior declaring two strings round-trips with both.
    monkeypatch.setitem(packet_module.STRINGS_PER_PRIOR, "mshp", 2)
    p = Packet("mshp", FP, (8, 8), (b"a" * 300, b"b" * 60))
    assert p.header_bytes == 16 == header_size("mshp", (8, 8), [300, 60])
    data = p.to_bytes()
    assert len(data) == 376 and parse_packet(data) == p
    with pytest.raises(ValueError):
        Packet("mshp", FP, (8, 8), (b"a",))
    assert _reason(data[:-1]) == "length_mismatch"


def test_exotic_buffers_parse():
    p = Packet("mshp", FP, (5, 9), (b"zhello",))
    data = p.to_bytes()
    assert parse_packet(memoryview(array.array("B", data))) == p
    assert parse_packet(memoryview(data + data)[: len(data)]) == p
    strided = memoryview(bytes(b for pair in zip(data, data, strict=True) for b in pair))[::2]
    assert parse_packet(strided) == p


def test_bytearray_stays_resizable_after_parse_error():
    buf = bytearray(b"EG\x10" + bytes(20))
    assert _reason(buf) in PACKET_ERROR_REASONS
    buf.extend(b"more")  # would raise BufferError if parse_packet leaked a buffer export


def test_packet_normalises_fields():
    p = Packet("fp", bytearray(FP), [2, 3], [bytearray(b"ab")])
    assert p.fingerprint == FP and type(p.fingerprint) is bytes
    assert p.latent_hw == (2, 3) and p.strings == (b"ab",) and type(p.strings[0]) is bytes
    assert parse_packet(p.to_bytes()) == p


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(prior="hp", fingerprint=FP, latent_hw=(8, 8), strings=(b"",)),
        dict(prior=0, fingerprint=FP, latent_hw=(8, 8), strings=(b"",)),
        dict(prior="fp", fingerprint=FP, latent_hw=(8, 8), strings=(b"", b"")),
        dict(prior="fp", fingerprint=FP, latent_hw=(8, 8), strings=()),
        dict(prior="mshp", fingerprint=FP, latent_hw=(8, 8), strings=(b"y", b"z")),
        dict(prior="mshp", fingerprint=FP, latent_hw=(8, 8), strings=()),
        dict(prior="mshp", fingerprint=FP, latent_hw=(8, 8), strings=b"abc"),
        dict(prior="fp", fingerprint=FP, latent_hw=(8, 8), strings=b"abc"),
        dict(prior="fp", fingerprint=FP, latent_hw=(8, 8), strings=("abc",)),
        dict(prior="fp", fingerprint=b"abc", latent_hw=(8, 8), strings=(b"",)),
        dict(prior="fp", fingerprint=b"abcde", latent_hw=(8, 8), strings=(b"",)),
        dict(prior="fp", fingerprint="abcd", latent_hw=(8, 8), strings=(b"",)),
        dict(prior="fp", fingerprint=FP, latent_hw=(0, 8), strings=(b"",)),
        dict(prior="fp", fingerprint=FP, latent_hw=(8, 4097), strings=(b"",)),
        dict(prior="fp", fingerprint=FP, latent_hw=(8,), strings=(b"",)),
        dict(prior="fp", fingerprint=FP, latent_hw=(8.0, 8), strings=(b"",)),
        dict(prior="fp", fingerprint=FP, latent_hw=(True, 8), strings=(b"",)),
        dict(prior="fp", fingerprint=FP, latent_hw=(8, 8), strings=(bytes(MAX_STRING_BYTES + 1),)),
        dict(
            prior="mshp", fingerprint=FP, latent_hw=(8, 8), strings=(bytes(MAX_STRING_BYTES + 1),)
        ),
    ],
)
def test_packet_validation(kwargs):
    with pytest.raises(ValueError):
        Packet(**kwargs)


def test_header_size_validation():
    with pytest.raises(ValueError):
        header_size("fp", (8, 8), [1, 2])
    with pytest.raises(ValueError):
        header_size("mshp", (8, 8), [300, 60])
    with pytest.raises(ValueError):
        header_size("mshp", (8, 8), [])
    with pytest.raises(ValueError):
        header_size("xx", (8, 8), [1])
    with pytest.raises(ValueError):
        header_size("fp", (8, 8), [-1])
    with pytest.raises(ValueError):
        header_size("fp", (0, 8), [1])


def test_packet_error_is_value_error_and_picklable():
    e = PacketError("checksum", "packet checksum mismatch")
    assert isinstance(e, ValueError) and e.reason == "checksum"
    e2 = pickle.loads(pickle.dumps(e))
    assert e2.reason == "checksum" and str(e2) == str(e)
    with pytest.raises(ValueError):
        PacketError("nonsense", "x")


@pytest.mark.parametrize("bad", ["EG", 123, None, [69, 71], bytearray])
def test_non_bytes_input_is_type_error(bad):
    with pytest.raises(TypeError):
        parse_packet(bad)


def test_bad_max_bytes_is_value_error():
    with pytest.raises(ValueError):
        parse_packet(b"EG", max_bytes=0)


# --------------------------------------------------------------------------- one test per reason


def _good(prior: str = "fp") -> bytes:
    # one string for both priors; for "mshp" it is one stream with the z symbols first, then y
    strings = (b"y" * 300,) if prior == "fp" else (b"z" * 60 + b"y" * 300,)
    return Packet(prior, FP, (8, 8), strings).to_bytes()


def test_reason_empty():
    assert _reason(b"") == "empty"
    assert _reason(bytearray()) == "empty"
    assert _reason(memoryview(b"")) == "empty"


def test_reason_oversized_checked_first():
    data = _good()
    assert _reason(data, max_bytes=len(data) - 1) == "oversized"
    assert parse_packet(data, max_bytes=len(data)) is not None
    assert _reason(b"XX" * 100, max_bytes=10) == "oversized"  # before the magic check
    assert _reason(bytes(DEFAULT_MAX_PACKET_BYTES + 1)) == "oversized"


def test_reason_truncated():
    data = _good("mshp")
    assert _reason(data[:1]) == "truncated"  # b"E"
    assert _reason(data[:2]) == "truncated"  # magic only
    assert _reason(data[:10]) == "truncated"  # inside fixed header
    assert _reason(data[:11]) == "truncated"  # no latent height varint
    assert _reason(data[:13]) == "truncated"  # no string length varint
    assert _reason(data[:14]) == "truncated"  # length varint is 2 bytes (360), cut mid-way
    assert _reason(_raw(b"\x08\x08\x80")) == "truncated"  # varint continues past the end
    assert _reason(_raw(b"\x08\x08\x80", prior_id=1)) == "truncated"


def test_reason_bad_magic():
    data = _good()
    assert _reason(b"XG" + data[2:]) == "bad_magic"
    assert _reason(b"eg" + data[2:]) == "bad_magic"
    assert _reason(b"X") == "bad_magic"
    assert _reason(b"\x89PNG\r\n\x1a\n" + bytes(50)) == "bad_magic"


@pytest.mark.parametrize("version", [0, 6, 15])
def test_reason_bad_version(version):
    assert _reason(_raw(b"\x08\x08\x00", version=version)) == "bad_version"
    assert _reason(_raw(b"", version=version)[:3]) == "bad_version"


@pytest.mark.parametrize("prior_id", [3, 7, 15])
def test_reason_bad_prior(prior_id):
    assert _reason(_raw(b"\x08\x08\x00", prior_id=prior_id)) == "bad_prior"


def test_reason_bad_varint():
    # 4-byte varint (value >= 2**21) for the string length
    assert _reason(_raw(b"\x08\x08\x80\x80\x80\x01" + bytes(10))) == "bad_varint"
    # 4-byte varint for the latent height
    assert _reason(_raw(b"\xff\xff\xff\x7f\x08\x00")) == "bad_varint"
    # non-minimal encodings of 8 and of 0
    assert _reason(_raw(b"\x88\x00\x08\x00")) == "bad_varint"
    assert _reason(_raw(b"\x08\x08\x80\x80\x00")) == "bad_varint"


@pytest.mark.parametrize(
    "hw", [(0, 8), (8, 0), (MAX_LATENT_SIDE + 1, 8), (8, MAX_LATENT_SIDE + 1), (2**21 - 1, 1)]
)
def test_reason_bad_shape(hw):
    assert _reason(_raw(_varint(hw[0]) + _varint(hw[1]) + b"\x00")) == "bad_shape"


def test_reason_length_mismatch():
    assert _reason(_good() + b"\x00") == "length_mismatch"  # trailing byte
    assert _reason(_good()[:-1]) == "length_mismatch"  # missing byte
    assert _reason(_good("mshp") + b"\x00") == "length_mismatch"
    assert _reason(_good("mshp")[:-60]) == "length_mismatch"  # tail of the z+y stream dropped
    assert _reason(_raw(b"\x08\x08\x05" + b"abcd")) == "length_mismatch"
    assert _reason(_raw(b"\x08\x08\x05" + b"abcd", prior_id=1)) == "length_mismatch"
    # old two-string "mshp" layout (y length 3, z length 1, then y, z): the second length
    # varint now counts as payload, so the declared single string does not fit
    assert _reason(_raw(b"\x08\x08\x03\x01" + b"yyyz", prior_id=1)) == "length_mismatch"


def test_reason_checksum():
    data = bytearray(_good())
    data[-1] ^= 0x01
    assert _reason(bytes(data)) == "checksum"
    data = bytearray(_good("mshp"))
    data[8] ^= 0x80  # inside the checksum field itself
    assert _reason(bytes(data)) == "checksum"
    assert _reason(_raw(b"\x08\x08\x01a", crc=0)) == "checksum"


def test_fingerprint_is_not_checksummed_but_returned():
    data = bytearray(_good())
    data[3:7] = b"\xde\xad\xbe\xef"
    assert parse_packet(bytes(data)).fingerprint == b"\xde\xad\xbe\xef"


@pytest.mark.parametrize("prior", sorted(PRIORS))
def test_huge_declared_length_fails_fast_without_allocating(prior):
    body = b"\x08\x08" + _varint(2**21 - 1)  # claims a ~2 MiB string ...
    data = _raw(body + bytes(20 - 11 - len(body)), prior_id=PRIORS[prior])  # ... in 20 bytes
    assert len(data) == 20
    tracemalloc.start()
    try:
        for _ in range(100):
            assert _reason(data) == "length_mismatch"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024  # far below the 2 MiB the length field claims


# --------------------------------------------------------------------------- fuzzing


def _check_parse(data) -> None:
    """Only PacketError may escape; a parsed packet re-encodes canonically to the input."""
    try:
        p = parse_packet(data)
    except PacketError as e:
        assert e.reason in PACKET_ERROR_REASONS
        return
    again = p.to_bytes()
    assert again == bytes(data)
    assert parse_packet(again) == p


@settings(FUZZ, max_examples=3000)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(data):
    _check_parse(data)


@settings(FUZZ, max_examples=2000)
@given(
    st.one_of(st.sampled_from([0x10, 0x11]), st.integers(0, 255)),
    st.binary(min_size=0, max_size=40),
    st.booleans(),
)
def test_fuzz_random_bodies_after_valid_prefix(kind_byte, body, reseal):
    data = b"EG" + bytes([kind_byte]) + FP + b"\x00\x00\x00\x00" + body
    _check_parse(_reseal(data) if reseal else data)


packets = st.builds(
    # one string per prior ("mshp": a single stream, z symbols first, then y)
    lambda prior, h, w, s: Packet(prior, FP, (h, w), (s,)),
    st.sampled_from(sorted(PRIORS)),
    st.integers(1, MAX_LATENT_SIDE),
    st.integers(1, MAX_LATENT_SIDE),
    st.binary(max_size=500),
)


@settings(FUZZ, max_examples=1000)
@given(packets)
def test_fuzz_valid_packets_round_trip(p):
    data = p.to_bytes()
    assert len(data) == p.header_bytes + p.payload_bytes
    assert parse_packet(data) == p


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("overwrite"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 8)),
    st.tuples(st.just("varint"), st.integers(0, 4), st.integers(0, 2**21 + 5)),
)


def _mutate(data: bytes, m) -> bytes:
    buf = bytearray(data)
    kind = m[0]
    if kind == "flip" and buf:
        buf[m[1] % len(buf)] ^= 1 << m[2]
    elif kind == "truncate":
        del buf[m[1] % (len(buf) + 1) :]
    elif kind == "insert":
        i = m[1] % (len(buf) + 1)
        buf[i:i] = m[2]
    elif kind == "overwrite" and buf:
        buf[m[1] % len(buf)] = m[2]
    elif kind == "delete" and buf:
        i = m[1] % len(buf)
        del buf[i : i + m[2]]
    elif kind == "varint" and len(buf) > 11:
        # replace the k-th varint (height, width, lengths) with another, possibly huge, value
        pos, k = 11, m[1]
        for _ in range(k):
            while pos < len(buf) and buf[pos] & 0x80:
                pos += 1
            pos += 1
        if pos < len(buf):
            end = pos
            while end < len(buf) and buf[end] & 0x80:
                end += 1
            buf[pos : end + 1] = _varint(m[2])
    return bytes(buf)


@settings(FUZZ, max_examples=3000)
@given(packets, st.lists(mutation, min_size=1, max_size=4), st.booleans(), st.booleans())
def test_fuzz_mutated_packets(p, mutations, reseal, as_bytearray):
    data = p.to_bytes()
    for m in mutations:
        data = _mutate(data, m)
    if reseal:  # fix the checksum so structural checks behind it get exercised too
        data = _reseal(data)
    _check_parse(bytearray(data) if as_bytearray else data)


@pytest.mark.parametrize("version", READABLE_VERSIONS)
def test_every_readable_version_round_trips(version):
    setting = (3, 1) if version == 3 else None
    keyed = (b"n" * 8, b"t" * 4) if version == 4 else None
    capped = 17 if version == 5 else None
    p = Packet("mshp", FP, (8, 8), (b"\x00" * 12,), version=version, setting=setting,
               keyed=keyed, capped=capped)  # fmt: skip
    data = p.to_bytes()
    assert data[2] >> 4 == version
    assert parse_packet(data) == p and parse_packet(data).version == version


def test_an_unwritable_version_is_a_clear_error():
    with pytest.raises(ValueError, match="version must be one of"):
        Packet("fp", FP, (8, 8), (b"\x00" * 8,), version=6)


def test_the_cap_byte_round_trips_costs_one_byte_and_is_checked():
    plain = Packet("fp", FP, (8, 8), (b"\x01" * 12,))
    capped = Packet("fp", FP, (8, 8), (b"\x01" * 12,), capped=255)
    data = capped.to_bytes()
    assert capped.version == 5 and len(data) == len(plain.to_bytes()) + 1 == capped.total_bytes
    assert parse_packet(data).capped == 255 and parse_packet(plain.to_bytes()).capped is None
    zero = bytearray(data)
    zero[13] = 0  # the cap byte follows the two one-byte latent sides
    assert _reason(_reseal(bytes(zero))) == "bad_cap"
    assert _reason(_reseal(data[:13])) == "truncated"
    for bad in (0, 256, True):
        with pytest.raises(ValueError, match="reset share"):
            Packet("fp", FP, (8, 8), (b"\x01",), capped=bad)
    with pytest.raises(ValueError, match="needs a cap byte"):
        Packet("fp", FP, (8, 8), (b"\x01",), version=5)


def test_the_nonce_and_tag_round_trip_and_cost_twelve_bytes():
    plain = Packet("fp", FP, (8, 8), (b"\x01" * 12,))
    keyed = Packet("fp", FP, (8, 8), (b"\x01" * 12,), keyed=(b"\x07" * 8, b"\x09" * 4))
    data = keyed.to_bytes()
    assert keyed.version == 4 and len(data) == len(plain.to_bytes()) + 12 == keyed.total_bytes
    assert parse_packet(data).keyed == (b"\x07" * 8, b"\x09" * 4)
    assert _reason(_reseal(data[:20])) == "truncated"
    with pytest.raises(ValueError, match="8-byte nonce"):
        Packet("fp", FP, (8, 8), (b"\x01",), keyed=(b"short", b"\x09" * 4))
    with pytest.raises(ValueError, match="needs a keyed nonce"):
        Packet("fp", FP, (8, 8), (b"\x01",), version=4)


def test_the_setting_byte_round_trips_and_costs_one_byte():
    plain = Packet("mshp", FP, (8, 8), (b"\x01" * 12,))
    slim = Packet("mshp", FP, (8, 8), (b"\x01" * 12,), setting=(2, 3))
    assert plain.version == 2 and slim.version == 3
    data = slim.to_bytes()
    assert len(data) == len(plain.to_bytes()) + 1 == slim.total_bytes
    assert parse_packet(data).setting == (2, 3)
    assert _reason(_reseal(data[:13])) in {"truncated", "length_mismatch"}


@pytest.mark.parametrize("setting", [(16, 0), (0, -1), (1,), "ab"])
def test_a_bad_setting_or_a_setting_in_an_old_format_is_a_clear_error(setting):
    with pytest.raises(ValueError, match="setting must be"):
        Packet("fp", FP, (8, 8), (b"\x00" * 8,), setting=setting)
    with pytest.raises(ValueError, match="cannot carry a setting"):
        Packet("fp", FP, (8, 8), (b"\x00" * 8,), version=2, setting=(1, 1))
    with pytest.raises(ValueError, match="needs a setting"):
        Packet("fp", FP, (8, 8), (b"\x00" * 8,), version=3)


def test_q8_does_not_exist_in_format_1():
    assert _reason(_raw(b"\x08\x08\x00", version=1, prior_id=PRIORS["q8"])) == "bad_prior"
