"""Hostile clients on loopback: slow headers, slow bodies, lying lengths, idle hoards, framing
tricks, batch floods and identity rotation, each with a normal client served at the same time.

The attacker connects from 127.0.0.2, the normal client from 127.0.0.1 (both loopback), so the
server tells them apart by address as it would on a network. Deadlines are short here (1 s) so
the suite stays fast; the defaults are in ``ConnectionLimits``.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
from serve_helpers import LOOPBACK, live_app, smooth_images

from entroguard.serve.app import ServeLimits
from entroguard.serve.framing import BATCH_CONTENT_TYPE, PACKET_CONTENT_TYPE, encode_batch
from entroguard.serve.protocol import ConnectionLimits

pytestmark = pytest.mark.slow

ATTACKER = "127.0.0.2"
OCTET = {"content-type": PACKET_CONTENT_TYPE}
DEADLINE_S = 1.0
CAP = 4


@pytest.fixture(scope="module")
def server(fp_model, fp_stats):
    connections = ConnectionLimits(header_timeout_s=DEADLINE_S, body_timeout_s=DEADLINE_S,
                                   max_connections_per_client=CAP)  # fmt: skip
    limits = ServeLimits(connections=connections, budget_packets_per_s=200, burst_packets=64,
                         max_in_flight_per_client=4)  # fmt: skip
    packet = fp_model.to_packets(smooth_images(1, seed=3))[0]
    with live_app(fp_model, fp_stats, limits=limits) as (url, app):
        yield url, app, packet


def _connect() -> socket.socket:
    sock = socket.socket()
    sock.bind((ATTACKER, 0))
    sock.settimeout(10)
    return sock


def _open(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = _connect()
    sock.connect((host, int(port)))
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict, float]:
    """Status, JSON error body and seconds waited for one response; then the socket is closed
    by the server (checked)."""
    t0, data = time.monotonic(), b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body) if body else {}, time.monotonic() - t0


def _normal(url: str, packet: bytes) -> int:
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.post("/v1/infer", content=packet, headers=OCTET).status_code


def _request_head(packet_len: int, extra: str = "") -> bytes:
    return (f"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: {PACKET_CONTENT_TYPE}\r\n"
            f"Content-Length: {packet_len}\r\n{extra}\r\n").encode()  # fmt: skip


def test_slow_headers_are_cut_at_the_header_deadline(server):
    url, _, packet = server
    sock = _open(url)
    sock.sendall(b"POST /v1/infer HTTP/1.1\r\nHost: x\r\n")
    assert _normal(url, packet) == 200
    for _ in range(3):  # a header line every 0.5 s never completes the headers
        time.sleep(0.5)
        try:
            sock.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
    status, body, _ = _answer(sock)
    assert (status, body["error"]["reason"]) == (408, "header_timeout")


@pytest.mark.parametrize("kind", ["trickle", "short", "huge_chunk"])
def test_slow_short_or_endless_bodies_end_at_the_body_deadline(server, kind):
    url, app, packet = server
    sock = _open(url)
    if kind == "huge_chunk":
        head = (f"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: {PACKET_CONTENT_TYPE}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        sock.sendall(head.encode() + b"ffffffffffffffff\r\nab")
    elif kind == "short":  # Content-Length 1,000 above the body sent
        sock.sendall(_request_head(len(packet) + 1000) + packet)
    else:
        sock.sendall(_request_head(len(packet)))
        for byte in packet[:8]:  # a byte every 0.1 s, and the deadline comes first
            sock.sendall(bytes([byte]))
            time.sleep(0.1)
    assert app.state.service.in_flight == 0  # a request waiting for its body holds no slot
    assert _normal(url, packet) == 200
    status, body, waited = _answer(sock)
    assert (status, body["error"]["reason"]) == (408, "body_timeout")


def test_idle_hoards_are_capped_per_client_and_closed(server):
    url, app, packet = server
    table = app.state.service.connections
    hoard = [_open(url) for _ in range(CAP + 6)]
    refused = []
    for sock in hoard[CAP:]:
        status, body, _ = _answer(sock)
        refused.append((status, body["error"]["reason"]))
    assert refused == [(503, "too_many_connections")] * 6
    assert table.open[ATTACKER] == CAP
    assert _normal(url, packet) == 200  # another address is not capped by the attacker's
    for sock in hoard[:CAP]:  # the idle ones are answered 408 and closed at the deadline
        status, body, _ = _answer(sock)
        assert (status, body["error"]["reason"]) == (408, "header_timeout")
    assert table.open.get(ATTACKER, 0) == 0


def test_content_length_with_transfer_encoding_is_refused_and_closed(server):
    url, _, packet = server
    sock = _open(url)
    sock.sendall(_request_head(len(packet), "Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n")
    status, body, _ = _answer(sock)  # _answer reads to EOF: the server closed the connection
    assert (status, body["error"]["reason"]) == (400, "bad_framing")
    assert "RFC 9112" in body["error"]["detail"]


def test_a_batch_flood_is_budgeted_and_rotating_ids_do_not_escape_it(server, fp_model):
    url, app, packet = server
    batch = encode_batch(fp_model.to_packets(smooth_images(16, seed=4)))
    statuses: list[int] = []
    stop = threading.Event()

    def flood(rotate: bool) -> None:
        transport = httpx.HTTPTransport(local_address=ATTACKER)
        with httpx.Client(base_url=url, transport=transport, timeout=30) as client:
            for i in range(200):
                if stop.is_set():
                    break
                who = f"id-{i}" if rotate else "one"
                headers = {"content-type": BATCH_CONTENT_TYPE, "x-client-id": who}
                answer = client.post("/v1/infer", content=batch, headers=headers)
                statuses.append(answer.status_code)

    threads = [threading.Thread(target=flood, args=(r,)) for r in (False, True, True)]
    for t in threads:
        t.start()
    victim = [_normal(url, packet) for _ in range(20)]
    stop.set()
    for t in threads:
        t.join(60)
    assert victim == [200] * 20
    assert 429 in statuses and statuses.count(200) < len(statuses)
    # one attacker, however it names itself
    clients = set(app.state.service.packet_budgets.clients())
    assert "peer:" + ATTACKER in clients and not any(c.startswith("id:") for c in clients)
    assert "peer:" + LOOPBACK in clients


def test_the_serve_command_takes_the_defences_options(tmp_path, fp_model, fp_stats):
    from serve_helpers import ServerProcess, save_model

    checkpoint = save_model(fp_model, tmp_path / "tiny", fp_stats)
    options = ["--trusted-proxy", "10.0.0.1", "--trusted-proxy", "10.0.0.2",
               "--header-timeout-s", "3", "--body-timeout-s", "4",
               "--max-connections-per-client", "5", "--max-in-flight-per-client", "6"]  # fmt: skip
    server = ServerProcess(checkpoint, tmp_path, *options)
    try:
        described = httpx.get(server.url + "/v1/models").json()["models"][0]
        limits = described["limits"]
        assert limits["connections"]["trusted_proxies"] == ["10.0.0.1", "10.0.0.2"]
        assert limits["connections"]["header_timeout_s"] == 3.0
        assert limits["connections"]["body_timeout_s"] == 4.0
        assert limits["connections"]["max_connections_per_client"] == 5
        assert limits["max_in_flight_per_client"] == 6
        assert described["capacity_packets_per_s"] > 0  # measured at start-up
        assert described["client_budget_packets_per_s"] == pytest.approx(
            described["capacity_packets_per_s"] / 4, rel=0.01)  # fmt: skip
        assert "measured capacity" in (tmp_path / "server.out").read_text()
    finally:
        server.stop()
