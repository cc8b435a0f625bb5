"""Read a request body without ever holding more than a byte limit.

``Content-Length`` is checked before a byte is read; then the body is pulled chunk by chunk
from the ASGI receive stream and reading stops (413) as soon as the running total passes the
limit, so a client cannot make the server buffer more than ``limit`` bytes (plus one chunk the
server had already received), with or without a truthful ``Content-Length``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from entroguard.serve.errors import ServeError

DEFAULT_MAX_BODY_BYTES = 1 << 20
"""Default largest request body, in bytes (1 MiB)."""


def check_content_length(value: str | None, limit: int) -> int | None:
    """The declared body size in bytes (None when absent); 400 if malformed, 413 if > ``limit``."""
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ServeError(
            "bad_content_length",
            f"Content-Length {value[:40]!r} is not a byte count: send a decimal integer",
        )
    declared = int(text)
    if declared > limit:
        raise ServeError(
            "too_large",
            f"request body of {declared} bytes is over the server's {limit}-byte limit: "
            "send fewer packets per request",
        )
    return declared


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """Concatenate ``chunks`` (e.g. Starlette's ``request.stream()``), stopping past ``limit``.

    Raises :class:`ServeError` ``"too_large"`` (413) as soon as more than ``limit`` bytes have
    arrived; the rest of the stream is left unread.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0 bytes, got {limit}")
    buf = bytearray()
    async for chunk in chunks:
        if len(buf) + len(chunk) > limit:
            raise ServeError(
                "too_large",
                f"request body is over the server's {limit}-byte limit: "
                "send fewer packets per request",
            )
        buf += chunk
    return bytes(buf)
