"""The edge's HTTP client: retries, backoff, Retry-After, clear errors (no server needed)."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from entroguard.serve.client import (
    EdgeClient,
    ServerRejectedError,
    ServerUnreachableError,
    parse_retry_after,
)


def _mock(responses: list):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        item = responses[min(len(calls) - 1, len(responses) - 1)]
        if isinstance(item, Exception):
            raise item
        return item

    return httpx.MockTransport(handler), calls


def _client(transport, sleeps, **kwargs):
    return EdgeClient("http://edge.test", transport=transport, sleep=sleeps.append, **kwargs)


OK = httpx.Response(200, json={"predicted": 3, "top_k": [{"class": 3, "prob": 0.9}]})


def test_retries_429_honouring_retry_after():
    busy = httpx.Response(
        429, headers={"Retry-After": "2"}, json={"error": {"reason": "rate_limited"}}
    )
    transport, calls = _mock([busy, busy, OK])
    sleeps: list[float] = []
    with _client(transport, sleeps, client_id="dev-1") as client:
        reply = client.infer(b"EG...")
    assert reply.body["predicted"] == 3 and reply.attempts == 3
    assert sleeps == [2.0, 2.0] and client.retried == 2
    assert calls[0].headers["x-client-id"] == "dev-1"
    assert calls[0].headers["content-type"] == "application/octet-stream"


def test_retries_503_with_capped_exponential_backoff():
    transport, _ = _mock([httpx.Response(503)] * 4 + [OK])
    sleeps: list[float] = []
    with _client(transport, sleeps, retries=5, backoff_s=1.0, max_wait_s=3.0) as client:
        client.infer(b"x")
    assert len(sleeps) == 4
    assert all(0 <= s <= min(3.0, 2**i) for i, s in enumerate(sleeps))


def test_gives_up_after_the_retries_with_the_servers_reason():
    busy = httpx.Response(429, json={"error": {"status": 429, "reason": "rate_limited",
                                               "detail": "spent"}})  # fmt: skip
    transport, calls = _mock([busy])
    with _client(transport, [], retries=2) as client, pytest.raises(ServerRejectedError) as info:
        client.infer(b"x")
    assert len(calls) == 3
    assert info.value.status == 429 and info.value.reason == "rate_limited"


def test_4xx_is_not_retried():
    bad = httpx.Response(400, json={"error": {"status": 400, "reason": "checksum", "detail": "d"}})
    transport, calls = _mock([bad])
    with _client(transport, []) as client, pytest.raises(ServerRejectedError, match="checksum"):
        client.infer(b"x")
    assert len(calls) == 1


def test_connection_errors_are_retried_then_reported_clearly():
    transport, calls = _mock([httpx.ConnectError("refused")])
    sleeps: list[float] = []
    with _client(transport, sleeps, retries=3) as client:
        with pytest.raises(ServerUnreachableError, match="cannot reach .*http://edge.test"):
            client.health()
    assert len(calls) == 4 and len(sleeps) == 3


def test_unreachable_real_port_on_loopback():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with EdgeClient(f"http://127.0.0.1:{port}", retries=1, sleep=lambda s: None) as client:
        with pytest.raises(ServerUnreachableError, match="entroguard serve"):
            client.infer(b"x")


def test_non_json_answer():
    transport, _ = _mock([httpx.Response(200, text="<html>")])
    with _client(transport, []) as client, pytest.raises(ServerRejectedError, match="not JSON"):
        client.health()


def test_parse_retry_after():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    date = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(date, now=now) == pytest.approx(30.0)
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-3") is None


def test_server_url_is_checked():
    with pytest.raises(ValueError, match="http://"):
        EdgeClient("127.0.0.1:8000")
