"""Reading request bodies without passing the byte limit."""

from __future__ import annotations

import asyncio

import pytest

from entroguard.serve.body import check_content_length, read_limited
from entroguard.serve.errors import ServeError


class Stream:
    """An async chunk stream that counts what was pulled from it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self):
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk


def test_reads_everything_under_the_limit():
    stream = Stream([b"ab", b"cd", b""])
    assert asyncio.run(read_limited(stream, 4)) == b"abcd"


def test_stops_at_the_first_chunk_past_the_limit():
    stream = Stream([b"x" * 10] * 1000)
    with pytest.raises(ServeError) as info:
        asyncio.run(read_limited(stream, 25))
    assert info.value.status == 413 and info.value.reason == "too_large"
    assert stream.pulled == 3  # 10 + 10 fit, the third chunk passes 25: nothing more is read


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("0", 0), ("100", 100), (" 42 ", 42)]
)
def test_content_length_ok(value, expected):
    assert check_content_length(value, 100) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [("101", "too_large"), ("-1", "bad_content_length"), ("1e3", "bad_content_length"),
     ("", "bad_content_length"), ("9" * 40, "bad_content_length"), ("１２", "bad_content_length")],
)  # fmt: skip
def test_content_length_refused(value, reason):
    with pytest.raises(ServeError) as info:
        check_content_length(value, 100)
    assert info.value.reason == reason
