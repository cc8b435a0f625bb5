"""Batch framing of several packets in one body."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entroguard.serve.errors import REASONS, ServeError
from entroguard.serve.framing import decode_batch, encode_batch


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=8))
def test_roundtrip(packets):
    assert decode_batch(encode_batch(packets)) == packets


@settings(derandomize=True, max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_bodies_only_raise_serve_errors(body):
    try:
        packets = decode_batch(body, max_count=4)
    except ServeError as exc:
        assert exc.reason in REASONS and 400 <= exc.status < 500
    else:
        assert sum(len(p) + 4 for p in packets) == len(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"\x00\x00", "bad_batch"),
        (struct.pack(">I", 10) + b"abc", "bad_batch"),
        (struct.pack(">I", 0xFFFFFFFF) + b"abc", "bad_batch"),
        (encode_batch([b"a"] * 5), "too_many_packets"),
    ],
)
def test_errors(body, reason):
    with pytest.raises(ServeError) as info:
        decode_batch(body, max_count=4)
    assert info.value.reason == reason


def test_zero_length_frames_are_kept_for_the_packet_parser_to_refuse():
    assert decode_batch(struct.pack(">I", 0)) == [b""]
