"""The server over real HTTP on loopback: round trips, every error code, guard, budgets, metrics."""

from __future__ import annotations

import struct
import zlib

import httpx
import pytest
import torch
from eg_testutil import seeded_model
from serve_helpers import live_app, noise_images, smooth_images, trusting_loopback

from entroguard.packet import Packet, parse_packet
from entroguard.serve.app import ServeLimits
from entroguard.serve.errors import REASONS
from entroguard.serve.framing import BATCH_CONTENT_TYPE, PACKET_CONTENT_TYPE, encode_batch
from entroguard.serve.guard import GuardConfig

OCTET = {"content-type": PACKET_CONTENT_TYPE}
BATCH = {"content-type": BATCH_CONTENT_TYPE}


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def fp_server(fp_model, fp_stats):
    limits = trusting_loopback(max_body_bytes=64 * 1024, max_packet_bytes=64 * 1024, max_batch=16)
    with live_app(fp_model, fp_stats, model_name="fp-test", limits=limits) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client, app


def _reseal(data: bytes) -> bytes:
    return data[:7] + struct.pack(">I", zlib.crc32(data[11:])) + data[11:]


def _assert_error(response: httpx.Response, status: int, reason: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == status and error["reason"] == reason
    assert REASONS[reason] == status
    assert isinstance(error["detail"], str) and error["detail"]
    return error


@pytest.mark.parametrize("prior", ["fp", "mshp"])
def test_round_trip_prediction_equals_in_process(prior, request):
    model = request.getfixturevalue(f"{prior}_model")
    stats = request.getfixturevalue(f"{prior}_stats")
    images = torch.cat([smooth_images(4, seed=7), noise_images(2, seed=8)])
    packets = model.to_packets(images)
    logits = model.from_packets(packets)
    probs = torch.softmax(logits.double(), dim=1)
    with live_app(model, stats, model_name=prior) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            for i, packet in enumerate(packets):
                r = client.post("/v1/infer", content=packet, headers=OCTET, params={"top_k": 3})
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["predicted"] == int(logits[i].argmax())
                assert body["bytes_received"] == len(packet)
                assert body["n"] == 1 and len(body["top_k"]) == 3
                assert body["top_k"][0]["prob"] == pytest.approx(float(probs[i].max()), abs=1e-6)
                assert body["decode_ms"] >= 0 and body["tail_ms"] >= 0
                assert body["results"][0]["payload_bytes"] == parse_packet(packet).payload_bytes
            r = client.post("/v1/infer", content=encode_batch(packets), headers=BATCH)
            assert r.status_code == 200, r.text
            batch = r.json()
            assert [x["predicted"] for x in batch["results"]] == logits.argmax(1).tolist()
            assert batch["bytes_received"] == len(encode_batch(packets))


def test_health_and_models(fp_server, fp_model, fp_stats):
    client, _ = fp_server
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["fingerprint"] == fp_model.fingerprint[:8]
    (entry,) = client.get("/v1/models").json()["models"]
    assert entry["name"] == "fp-test"
    assert entry["fingerprint"] == fp_model.fingerprint
    assert entry["packet_fingerprint"] == fp_model.fingerprint_bytes.hex()
    assert entry["clean_payload"] == fp_stats
    assert entry["guard"]["mode"] == "flag"
    assert entry["guard"]["threshold_bytes"] == pytest.approx(fp_stats["quantiles"]["0.999"] * 1.10)
    assert entry["latent_hw"] == list(fp_model.latent_hw)


def _bad_bodies(fp_model, mshp_model):
    good = fp_model.to_packets(smooth_images(1, seed=11))[0]
    p = parse_packet(good)
    crafted = Packet(p.prior, p.fingerprint, p.latent_hw, (b"\xff" * len(p.strings[0]),))
    other = seeded_model("resnet_s", "fp", seed=1).to_packets(smooth_images(1, seed=11))[0]
    flipped = bytearray(good)
    flipped[-1] ^= 0x55
    return [
        ("bad_magic", b"hello world", OCTET, 400, "bad_magic"),
        ("empty", b"", OCTET, 400, "empty"),
        ("checksum", bytes(flipped), OCTET, 400, "checksum"),
        ("cut", good[:-3], OCTET, 400, "length_mismatch"),
        ("header_only", good[:9], OCTET, 400, "truncated"),
        ("version", good[:2] + b"\x70" + good[3:], OCTET, 400, "bad_version"),
        ("ff_strings", crafted.to_bytes(), OCTET, 400, "undecodable"),
        ("resealed_noise", _reseal(good[:15] + bytes(range(256)) * 2 + good[527:]), OCTET,
         400, "undecodable"),
        ("other_model", other, OCTET, 409, "model_mismatch"),
        ("other_prior", mshp_model.to_packets(smooth_images(1))[0], OCTET, 409,
         "model_mismatch"),
        ("text_plain", good, {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        ("no_type", good, {}, 415, "unsupported_media_type"),
        ("bad_frame", b"\x00\x00\x01", BATCH, 400, "bad_batch"),
        ("empty_frame", encode_batch([good, b""]), BATCH, 400, "empty"),
        ("too_many", encode_batch([good] * 17), BATCH, 413, "too_many_packets"),
        ("too_large", b"EG" + b"\x00" * (64 * 1024), OCTET, 413, "too_large"),
    ]  # fmt: skip


def test_every_bad_input_gets_its_4xx_and_the_server_keeps_serving(fp_server, fp_model, mshp_model):
    client, app = fp_server
    good = fp_model.to_packets(smooth_images(1, seed=11))[0]
    for name, body, headers, status, reason in _bad_bodies(fp_model, mshp_model):
        r = client.post("/v1/infer", content=body, headers=headers)
        error = _assert_error(r, status, reason)
        if name == "empty_frame":
            assert error["detail"].startswith("packet 1:")
        assert error["detail"].count("packet 0") + error["detail"].count("packet 1") <= 1, name
        assert client.post("/v1/infer", content=good, headers=OCTET).status_code == 200, name
    other_prior = mshp_model.to_packets(smooth_images(1))[0]
    r = client.post("/v1/infer", content=encode_batch([good] * 12 + [other_prior]), headers=BATCH)
    detail = _assert_error(r, 409, "model_mismatch")["detail"]
    assert detail.startswith("packet 12 was coded with prior") and "packet 0" not in detail
    r = client.post("/v1/infer?top_k=x", content=good, headers=OCTET)
    _assert_error(r, 400, "bad_parameter")
    r = client.post("/v1/infer", content=good, headers={**OCTET, "x-client-id": "a" * 200})
    _assert_error(r, 400, "bad_client_id")
    _assert_error(client.get("/v1/nope"), 404, "not_found")
    _assert_error(client.get("/v1/infer"), 405, "method_not_allowed")
    _assert_error(client.delete("/metrics"), 405, "method_not_allowed")


def test_body_over_the_limit_without_content_length_is_cut_short(fp_server):
    client, _ = fp_server
    sent = {"chunks": 0}

    def chunks():
        for _ in range(64):  # 64 x 8 KiB = 512 KiB, 8x the limit
            sent["chunks"] += 1
            yield b"\x00" * 8192

    r = client.post("/v1/infer", content=chunks(), headers=OCTET)  # chunked: no Content-Length
    _assert_error(r, 413, "too_large")
    assert client.get("/v1/health").status_code == 200


def test_metrics_count_requests_rejections_and_latency(fp_server, fp_model):
    client, _ = fp_server
    good = fp_model.to_packets(smooth_images(1, seed=12))[0]
    client.post("/v1/infer", content=good, headers=OCTET)
    client.post("/v1/infer", content=b"junk", headers=OCTET)
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert 'entroguard_http_requests_total{route="/v1/infer",status="200"}' in text
    assert 'entroguard_rejections_total{reason="bad_magic"}' in text
    assert 'entroguard_guard_decisions_total{decision="pass"}' in text
    assert 'entroguard_http_request_duration_seconds_bucket{route="/v1/infer",le="+Inf"}' in text
    assert "entroguard_decode_duration_seconds_count" in text
    assert "entroguard_tail_duration_seconds_sum" in text
    assert "entroguard_received_bytes_total" in text
    assert f'fingerprint="{fp_model.fingerprint[:8]}"' in text


def _inflated(model, stats):
    """Noise-image packets whose payload exceeds the default threshold, and clean ones."""
    threshold = stats["quantiles"]["0.999"] * 1.10
    noisy = model.to_packets(noise_images(32, seed=3))
    over = [p for p in noisy if parse_packet(p).payload_bytes > threshold]
    assert over, "noise images should inflate the payload past the clean threshold"
    return over, model.to_packets(smooth_images(4, seed=1))


def test_guard_flags_inflated_packets(mshp_model, mshp_stats):
    over, clean = _inflated(mshp_model, mshp_stats)
    with live_app(mshp_model, mshp_stats) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            r = client.post("/v1/infer", content=over[0], headers=OCTET)
            assert r.status_code == 200
            assert r.json()["guard"]["decision"] == "flag" and r.json()["guard"]["score"] > 1
            r = client.post("/v1/infer", content=clean[0], headers=OCTET)
            assert r.json()["guard"]["decision"] == "pass"
            text = client.get("/metrics").text
            assert 'entroguard_guard_decisions_total{decision="flag"} 1' in text


def test_guard_refuses_inflated_packets_with_422(mshp_model, mshp_stats):
    over, clean = _inflated(mshp_model, mshp_stats)
    with live_app(mshp_model, mshp_stats, GuardConfig(mode="refuse")) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            error = _assert_error(
                client.post("/v1/infer", content=over[0], headers=OCTET), 422, "rate_anomaly"
            )
            assert "threshold" in error["detail"]
            r = client.post("/v1/infer", content=encode_batch([clean[0], over[0]]), headers=BATCH)
            assert _assert_error(r, 422, "rate_anomaly")["detail"].startswith("packet 1")
            assert client.post("/v1/infer", content=clean[0], headers=OCTET).status_code == 200
            text = client.get("/metrics").text
            assert 'entroguard_guard_decisions_total{decision="refuse"} 2' in text
            assert 'entroguard_rejections_total{reason="rate_anomaly"} 2' in text


def test_byte_budget_429_with_retry_after(fp_model, fp_stats):
    clock = FakeClock()
    packet = fp_model.to_packets(smooth_images(1, seed=2))[0]
    config = GuardConfig(budget_bytes_per_s=100.0, burst_bytes=3 * len(packet))
    with live_app(fp_model, fp_stats, config, clock=clock) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            a = {**OCTET, "x-client-id": "device-a"}
            for _ in range(3):
                assert client.post("/v1/infer", content=packet, headers=a).status_code == 200
            r = client.post("/v1/infer", content=packet, headers=a)
            _assert_error(r, 429, "rate_limited")
            wait = len(packet) / 100.0
            assert int(r.headers["retry-after"]) == -(-wait // 1)  # whole seconds, rounded up
            b = {**OCTET, "x-client-id": "device-b"}
            assert client.post("/v1/infer", content=packet, headers=b).status_code == 200
            clock.t += wait + 0.01
            assert client.post("/v1/infer", content=packet, headers=a).status_code == 200
            big = encode_batch([packet] * 4)  # larger than the burst: can never fit
            r = client.post("/v1/infer", content=big, headers={**BATCH, **a})
            _assert_error(r, 413, "too_large")
            assert (
                'entroguard_rejections_total{reason="rate_limited"} 1'
                in client.get("/metrics").text
            )


def test_503_with_retry_after_when_too_many_requests_are_in_flight(fp_model, fp_stats):
    import threading

    packet = fp_model.to_packets(smooth_images(1, seed=5))[0]
    gate = threading.Event()
    with live_app(fp_model, fp_stats, limits=ServeLimits(max_in_flight=1)) as (url, app):
        engine = app.state.engine
        real_admit = engine.admit

        def held(*args):
            gate.wait(30)
            return real_admit(*args)

        engine.admit = held
        first: dict = {}

        def send_first():
            with httpx.Client(base_url=url, timeout=60) as c:
                first["r"] = c.post("/v1/infer", content=packet, headers=OCTET)

        thread = threading.Thread(target=send_first)
        thread.start()
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(500):  # wait until the first request is inside the engine
                if client.get("/v1/health").json()["in_flight"] == 1:
                    break
                threading.Event().wait(0.01)
            r = client.post("/v1/infer", content=packet, headers=OCTET)
            _assert_error(r, 503, "overloaded")
            assert r.headers["retry-after"] == "1"
            gate.set()
            thread.join(30)
            assert first["r"].status_code == 200
            assert client.post("/v1/infer", content=packet, headers=OCTET).status_code == 200
