"""The edge's HTTP client: send packets to an entroguard server, with retries and clear errors.

* 429 (byte budget) and 503 (overloaded) are retried, waiting ``Retry-After`` when the server
  gives it (capped at ``max_wait_s``), else an exponential backoff with full jitter
  (``backoff_s * 2**attempt``, capped), up to ``retries`` times;
* connection failures are retried the same way, then raise :class:`ServerUnreachableError`
  with a message that says which URL and what to check;
* other error answers raise :class:`ServerRejectedError` carrying the server's status,
  machine-readable reason and detail.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx

from entroguard.errors import EntroguardError
from entroguard.serve.framing import BATCH_CONTENT_TYPE, PACKET_CONTENT_TYPE, encode_batch

RETRY_STATUSES = frozenset({429, 503})


class ServerUnreachableError(EntroguardError, ConnectionError):
    """The server could not be reached (refused, DNS, timeout) after the retries."""


class ServerRejectedError(EntroguardError):
    """The server answered with an error.

    Attributes:
        status: HTTP status.
        reason: the server's machine-readable reason (``"http_<status>"`` if it sent none).
        detail: the server's explanation.
    """

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"server refused the request ({status} {reason}): {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass
class Reply:
    """A successful answer: the JSON body, the round-trip time and how many tries it took.

    Attributes:
        body: the server's JSON answer.
        latency_s: time from sending the successful try to receiving its answer, seconds.
        attempts: tries made (1 = no retry).
        sent_bytes: request body size of one try, bytes.
    """

    body: dict
    latency_s: float
    attempts: int
    sent_bytes: int


class EdgeClient:
    """Talks to one entroguard server.

    Args:
        server: base URL, e.g. ``http://127.0.0.1:8000``.
        client_id: sent as ``X-Client-Id`` (the server's byte budget is per client).
        timeout_s: per-request timeout, seconds.
        retries: extra tries on 429/503 and connection failures.
        backoff_s: base of the exponential backoff, seconds.
        max_wait_s: longest single wait between tries, seconds.
        sleep: how to wait (tests pass a fake).
        seed: seed of the backoff jitter.
        transport: an httpx transport (tests pass a mock one).
    """

    def __init__(
        self,
        server: str,
        *,
        client_id: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 5,
        backoff_s: float = 0.2,
        max_wait_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = 0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not server.startswith(("http://", "https://")):
            raise ValueError(f"server URL must start with http:// or https://, got {server!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.server = server.rstrip("/")
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.max_wait_s = float(max_wait_s)
        self._sleep = sleep
        self._rng = random.Random(seed)
        headers = {"X-Client-Id": client_id} if client_id else {}
        self._http = httpx.Client(
            base_url=self.server, timeout=timeout_s, headers=headers, transport=transport
        )
        self.retried = 0
        """Retries made so far (all requests)."""

    # ------------------------------------------------------------------ API
    def health(self) -> dict:
        """``GET /v1/health``."""
        return self._request("GET", "/v1/health").body

    def models(self) -> list[dict]:
        """``GET /v1/models``: the served models."""
        return self._request("GET", "/v1/models").body["models"]

    def infer(self, packet: bytes, *, top_k: int | None = None) -> Reply:
        """Send one packet; the reply's body has ``predicted``, ``top_k``, ``guard``..."""
        return self._request(
            "POST", "/v1/infer", content=packet, content_type=PACKET_CONTENT_TYPE, top_k=top_k
        )

    def infer_batch(self, packets: Sequence[bytes], *, top_k: int | None = None) -> Reply:
        """Send several packets in one request; the reply's body has one result per packet."""
        return self._request(
            "POST",
            "/v1/infer",
            content=encode_batch(packets),
            content_type=BATCH_CONTENT_TYPE,
            top_k=top_k,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ internals
    def _request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        content_type: str | None = None,
        top_k: int | None = None,
    ) -> Reply:
        headers = {"Content-Type": content_type} if content_type else None
        params = {"top_k": str(top_k)} if top_k is not None else None
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            t0 = time.perf_counter()
            try:
                response = self._http.request(
                    method, path, content=content, headers=headers, params=params
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last:
                    raise ServerUnreachableError(self._unreachable(exc)) from None
                self._wait(None, attempt)
                continue
            except httpx.TimeoutException as exc:
                if last:
                    raise ServerUnreachableError(
                        f"the server at {self.server} did not answer in time ({exc!r}); it may "
                        "be overloaded: raise --timeout or lower the request rate"
                    ) from None
                self._wait(None, attempt)
                continue
            except httpx.TransportError as exc:  # connection dropped mid-request
                if last:
                    raise ServerUnreachableError(
                        f"the connection to the server at {self.server} broke during the "
                        f"request ({type(exc).__name__}: {exc}) after {self.retries + 1} tries: "
                        "check the server's log and the network"
                    ) from None
                self._wait(None, attempt)
                continue
            latency = time.perf_counter() - t0
            if response.status_code in RETRY_STATUSES and not last:
                self._wait(response.headers.get("Retry-After"), attempt)
                continue
            if response.status_code >= 400:
                raise _rejected(response)
            try:
                body = response.json()
            except ValueError:
                raise ServerRejectedError(
                    response.status_code, "bad_answer", "the answer is not JSON: is this an "
                    f"entroguard server at {self.server}?",
                ) from None  # fmt: skip
            return Reply(body, latency, attempt + 1, len(content or b""))
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, retry_after: str | None, attempt: int) -> None:
        self.retried += 1
        delay = parse_retry_after(retry_after)
        if delay is None:
            delay = self._rng.uniform(0, self.backoff_s * (2**attempt))
        self._sleep(min(max(delay, 0.0), self.max_wait_s))

    def _unreachable(self, exc: Exception) -> str:
        return (
            f"cannot reach the entroguard server at {self.server} ({type(exc).__name__}: "
            f"{exc}) after {self.retries + 1} tries: check that `entroguard serve` is running "
            "there and that --server has the right host and port"
        )


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        now = now or datetime.now(timezone.utc)
        return max(0.0, (when - now).total_seconds())
    return seconds if seconds >= 0 and seconds == seconds else None


def _rejected(response: httpx.Response) -> ServerRejectedError:
    try:
        error = response.json()["error"]
        return ServerRejectedError(
            int(error.get("status", response.status_code)),
            str(error.get("reason", f"http_{response.status_code}")),
            str(error.get("detail", "")),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        text = response.text[:200]
        return ServerRejectedError(response.status_code, f"http_{response.status_code}", text)
