"""Several packets in one request body (content type ``application/x-entroguard-batch``).

Framing: the packets one after the other, each preceded by its length in bytes as a 4-byte
big-endian unsigned integer::

    [len 0: u32 BE][packet 0][len 1: u32 BE][packet 1] ...

The body must end exactly after the last packet. At most ``max_count`` packets are accepted;
lengths are checked against the bytes actually present before anything is sliced, so a frame
never makes the server allocate more than the (already size-limited) body.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from entroguard.serve.errors import ServeError

BATCH_CONTENT_TYPE = "application/x-entroguard-batch"
"""Content type of a framed batch of packets."""
PACKET_CONTENT_TYPE = "application/octet-stream"
"""Content type of a single packet."""
DEFAULT_MAX_BATCH = 64
"""Default largest number of packets in one request."""

_LEN = struct.Struct(">I")


def encode_batch(packets: Sequence[bytes]) -> bytes:
    """Frame ``packets`` (each at most 2**32 - 1 bytes) into one batch body."""
    out = bytearray()
    for i, p in enumerate(packets):
        if not isinstance(p, (bytes, bytearray, memoryview)):
            raise TypeError(f"packet {i} must be bytes, got {type(p).__name__}")
        out += _LEN.pack(len(p))
        out += p
    return bytes(out)


def decode_batch(body: bytes, *, max_count: int = DEFAULT_MAX_BATCH) -> list[bytes]:
    """Split a batch body into packets (unparsed). Raises :class:`ServeError`.

    Reasons: ``"empty"`` (no bytes), ``"bad_batch"`` (a length prefix cut short or pointing
    past the end of the body), ``"too_many_packets"`` (more than ``max_count``).
    """
    if max_count < 1:
        raise ValueError(f"max_count must be >= 1, got {max_count}")
    if not body:
        raise ServeError("empty", "empty batch: send at least one length-prefixed packet")
    view = memoryview(body)
    packets: list[bytes] = []
    pos, n = 0, len(view)
    while pos < n:
        if len(packets) == max_count:
            raise ServeError(
                "too_many_packets",
                f"more than {max_count} packets in one request: split the batch",
            )
        if pos + _LEN.size > n:
            raise ServeError(
                "bad_batch",
                f"batch frame {len(packets)}: {n - pos} byte(s) left, too few for the 4-byte "
                "length prefix; frame each packet as a big-endian u32 length then the packet",
            )
        (length,) = _LEN.unpack_from(view, pos)
        pos += _LEN.size
        if length > n - pos:
            raise ServeError(
                "bad_batch",
                f"batch frame {len(packets)} declares {length} bytes but only {n - pos} follow: "
                "the body was cut or the length prefix is wrong",
            )
        packets.append(bytes(view[pos : pos + length]))
        pos += length
    return packets
