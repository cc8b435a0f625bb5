"""Connection-level defences, in the HTTP/1.1 protocol the server speaks (uvicorn's h11 one).

uvicorn times out only idle keep-alive connections: a client that sends its headers or its
body a byte at a time, or declares more body than it sends, holds a connection (and, before
this module, an in-flight slot) for as long as it likes. :class:`GuardedH11Protocol` adds,
per connection:

* a **header deadline**: the request line and headers must arrive within ``header_timeout_s``
  of the connection opening or of the previous response (408, then closed);
* a **body deadline**: the whole body within ``body_timeout_s`` of the headers (408, closed):
  a Content-Length above the body sent, a trickled body or an absurd chunk size end there;
* **connection caps**: at most ``max_connections_per_client`` open connections per peer
  address (trusted proxies exempt) and ``max_connections`` in all; one more is answered 503
  and closed at once;
* **RFC 9112 framing**: a request with both Content-Length and Transfer-Encoding (section 6.3,
  a request-smuggling vector behind a proxy) is answered 400 and the connection closed.

Refusals here are written straight to the socket (the request may not even be parsed yet) in
the server's error format (:mod:`~entroguard.serve.errors`), and counted in
:class:`ConnectionTable`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from entroguard.serve.errors import dumps, error_body

STATUS_TEXT = {400: "Bad Request", 408: "Request Timeout", 503: "Service Unavailable"}


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection bounds of the server (seconds and counts).

    Attributes:
        header_timeout_s: request line and headers must arrive within this, s.
        body_timeout_s: the whole request body must arrive within this after the headers, s.
        idle_timeout_s: a keep-alive connection with no new request is closed after this, s.
        max_connections: open connections in all; more are refused (503) at once.
        max_connections_per_client: open connections per peer address.
        backlog: connections the OS queues before the server accepts them.
        trusted_proxies: peer addresses whose ``X-Client-Id`` names the client and which are
            exempt from the per-client connection cap (a reverse proxy's).
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    idle_timeout_s: float = 5.0
    max_connections: int = 1024
    max_connections_per_client: int = 16
    backlog: int = 128
    trusted_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "idle_timeout_s"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        for name in ("max_connections", "max_connections_per_client", "backlog"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class ConnectionTable:
    """Open connections per peer address, and what the protocol refused (by reason, also
    counted in ``metrics``' rejections when given)."""

    def __init__(self, metrics=None) -> None:
        self.open: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.metrics = metrics

    def count_refusal(self, reason: str) -> None:
        self.refused[reason] += 1
        if self.metrics is not None:
            self.metrics.rejections.inc(reason=reason)

    @property
    def total(self) -> int:
        return sum(self.open.values())


def raw_error(status: int, reason: str, detail: str) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection, as bytes."""
    body = dumps(error_body(status, reason, detail))
    head = (f"HTTP/1.1 {status} {STATUS_TEXT[status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")  # fmt: skip
    return head.encode("ascii") + body


def guarded_protocol(limits: ConnectionLimits, table: ConnectionTable) -> type[H11Protocol]:
    """A :class:`GuardedH11Protocol` class bound to ``limits`` and ``table`` (uvicorn's
    ``http=`` setting takes a class)."""
    return type("BoundGuardedH11Protocol", (GuardedH11Protocol,),
                {"limits": limits, "table": table})  # fmt: skip


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines, connection caps and strict
    framing (module docstring). Bind it with :func:`guarded_protocol`."""

    limits: ConnectionLimits = ConnectionLimits()
    table: ConnectionTable = ConnectionTable()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._peer = "unknown"
        self._counted = False
        self._deadline: asyncio.TimerHandle | None = None
        self._body_bytes = 0
        watched = self.conn.next_event
        self.conn.next_event = lambda: self._watch(watched())  # every parsed event passes here

    # -- connections ------------------------------------------------------------------------

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer = self.client[0] if self.client else "unknown"
        refusal = self._over_cap()
        if refusal:
            self._refuse(503, "too_many_connections", refusal)
            return
        self.table.open[self._peer] += 1
        self._counted = True
        self._arm(self.limits.header_timeout_s, self._header_timeout)

    def _over_cap(self) -> str | None:
        if self.table.total >= self.limits.max_connections:
            return f"the server holds {self.limits.max_connections} connections: retry shortly"
        cap = self.limits.max_connections_per_client
        if self._peer not in self.limits.trusted_proxies and self.table.open[self._peer] >= cap:
            return (f"{cap} connections from {self._peer} are open, the per-client limit: "
                    "reuse them (keep-alive) instead of opening more")  # fmt: skip
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self.table.open[self._peer] -= 1
            if self.table.open[self._peer] <= 0:
                del self.table.open[self._peer]
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._waiting_for_request():
            self._arm(self.limits.header_timeout_s, self._header_timeout)

    # -- requests ---------------------------------------------------------------------------

    def _watch(self, event):
        """Deadlines and framing rules on each h11 event, before uvicorn acts on it."""
        if isinstance(event, h11.Request):
            names = {name.lower() for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                self._framing_error = True
                raise h11.RemoteProtocolError("Content-Length with Transfer-Encoding")
            self._body_bytes = 0
            self._arm(self.limits.body_timeout_s, self._body_timeout)
        elif isinstance(event, h11.EndOfMessage):
            self._disarm()
        return event

    _framing_error = False

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 cannot parse, in the server's error format."""
        if self._framing_error:
            detail = ("the request has both Content-Length and Transfer-Encoding (RFC 9112 "
                      "section 6.3): send one of them")  # fmt: skip
            self._refuse(400, "bad_framing", detail)
        else:
            self._refuse(400, "bad_request", f"malformed HTTP/1.1 request: {msg}")

    def _waiting_for_request(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _header_timeout(self) -> None:
        self._deadline = None
        if self._waiting_for_request():
            self._refuse(408, "header_timeout", f"the request headers did not arrive within "
                         f"{self.limits.header_timeout_s:g} s: send them at once")  # fmt: skip

    def _body_timeout(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is None or cycle.response_started:  # answered without the body: just close
            self.table.count_refusal("body_timeout")
            self.transport.close()
            return
        cycle.disconnected = True  # the app's reads now end; anything it sends is dropped
        cycle.message_event.set()
        self._refuse(408, "body_timeout", f"the request body did not arrive within "
                     f"{self.limits.body_timeout_s:g} s of its headers: send it at once, and "
                     "exactly the Content-Length declared")  # fmt: skip

    # -- helpers ----------------------------------------------------------------------------

    def _arm(self, seconds: float, callback) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        self.table.count_refusal(reason)
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(raw_error(status, reason, detail))
            self.transport.close()
