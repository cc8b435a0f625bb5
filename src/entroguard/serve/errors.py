"""The server's error contract: an HTTP status and a short machine-readable reason.

Every error response has the body::

    {"error": {"status": 400, "reason": "checksum", "detail": "packet 0: ... resend the packet"}}

``reason`` is one of :data:`REASONS` (the keys) and always comes with the status listed there,
so clients can branch on the reason alone. Statuses:

* 400: the bytes are not a packet this server can read (every :class:`~entroguard.packet.
  PacketError` reason except ``"oversized"``, plus ``"bad_batch"``, ``"undecodable"``,
  ``"impossible_latent"`` (a latent outside what the head can produce from any image, see
  :mod:`~entroguard.models.latent_bounds`),
  ``"bad_content_length"``, ``"bad_parameter"``, ``"bad_client_id"``);
* 400 ``bad_framing`` / ``bad_request``: the HTTP framing itself is refused
  (:mod:`~entroguard.serve.protocol`), and the connection is closed;
* 404 / 405: unknown path or method;
* 408: the headers (``header_timeout``) or the body (``body_timeout``) did not arrive in
  time; the connection is closed;
* 409: a well-formed packet coded by another model (fingerprint, prior or latent size);
* 413: over a size limit (the request body, one packet, or the number of packets);
* 415: a content type other than ``application/octet-stream`` (one packet) or
  ``application/x-entroguard-batch`` (several);
* 422: refused by the rate guard: the packet is well-formed and from the right model, but its
  payload is far above the model's clean payload sizes (``"rate_anomaly"``), or its client's
  sequential test (:mod:`~entroguard.serve.sequential`) is in alarm: the client's packets have
  been larger than clean ones for a while (``"client_alarm"``). Not 429, which tells a
  client to retry later (the same packet would be refused again), not 413 (the packet is
  within the configured size limits), not 400 (nothing is malformed);
* 429: the client's byte or packet budget is spent (``"rate_limited"``), or it already has
  too many requests waiting for the model (``"client_queue_full"``), with ``Retry-After``;
* 503: too many requests in flight (``"overloaded"``), with ``Retry-After``, or too many
  connections (``"too_many_connections"``: the connection is closed at once);
* 500: a bug (``"internal"``); no input is meant to produce it.
"""

from __future__ import annotations

import json
import math

from entroguard.packet import PACKET_ERROR_REASONS

REASONS: dict[str, int] = {
    **{reason: 400 for reason in PACKET_ERROR_REASONS},
    "oversized": 413,
    "bad_batch": 400,
    "undecodable": 400,
    "impossible_latent": 400,
    "bad_content_length": 400,
    "bad_parameter": 400,
    "bad_client_id": 400,
    "bad_framing": 400,
    "bad_request": 400,
    "client_disconnected": 400,
    "not_found": 404,
    "method_not_allowed": 405,
    "header_timeout": 408,
    "body_timeout": 408,
    "model_mismatch": 409,
    "too_large": 413,
    "too_many_packets": 413,
    "unsupported_media_type": 415,
    "rate_anomaly": 422,
    "client_alarm": 422,
    "rate_limited": 429,
    "client_queue_full": 429,
    "overloaded": 503,
    "too_many_connections": 503,
    "internal": 500,
}
"""Every reason the server can answer with, and its HTTP status."""


class ServeError(Exception):
    """A request the server refuses: ``status``, ``reason`` (see :data:`REASONS`), ``detail``.

    Attributes:
        status: HTTP status code, fixed by ``reason``.
        reason: machine-readable code.
        detail: one human sentence: what is wrong and what to do.
        headers: extra response headers (e.g. ``Retry-After``).
    """

    def __init__(self, reason: str, detail: str, headers: dict[str, str] | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown serve error reason {reason!r}")
        super().__init__(detail)
        self.status = REASONS[reason]
        self.reason = reason
        self.detail = detail
        self.headers = dict(headers or {})

    def body(self) -> dict:
        """The JSON body of the error response."""
        return error_body(self.status, self.reason, self.detail)


def error_body(status: int, reason: str, detail: str) -> dict:
    """``{"error": {"status": ..., "reason": ..., "detail": ...}}``."""
    return {"error": {"status": int(status), "reason": reason, "detail": detail}}


def retry_after_header(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header: whole seconds, rounded up, at least 1 (RFC 9110)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def dumps(obj: object) -> bytes:
    """Compact JSON, refusing NaN and infinities (they are not JSON)."""
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
