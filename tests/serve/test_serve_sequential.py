"""The per-client sequential test (CUSUM): the recursion, per-client state, and the server.

The HTTP tests use the shipped zoo model resnet_s-fp-beta0.01 (the harder of the two
calibrated models: rate PGD adds only +14 % to its packets, ~2.4 clean std) with real clean
Fashion-MNIST test packets and real rate-PGD (eps 8/255, paper settings) packets of 32 images,
attacked once and cycled.
"""

from __future__ import annotations

import math
import sys
import threading

import httpx
import numpy as np
import pytest
import torch
from serve_helpers import ServerProcess, live_app, save_model
from typer import Typer
from typer.testing import CliRunner

from entroguard.packet import parse_packet
from entroguard.serve.cli import serve_command
from entroguard.serve.framing import BATCH_CONTENT_TYPE, PACKET_CONTENT_TYPE, encode_batch
from entroguard.serve.guard import GuardConfig, RateGuard
from entroguard.serve.sequential import (
    CAP_MULTIPLE,
    DEFAULT_CUSUM_H,
    DEFAULT_CUSUM_K,
    ClientCusums,
    Cusum,
    check_cusum_params,
)

OCTET = {"content-type": PACKET_CONTENT_TYPE}
BATCH = {"content-type": BATCH_CONTENT_TYPE}
ZOO_MODEL = "resnet_s-fp-beta0.01"
ATTACK_DELAY_LIMIT = 60
"""Most attacked packets before the alarm: benchmarks/guard.py measures at most ~40 at the
defaults on this model (median ~20) over 1,000 random orders of 500 attacked images."""


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ------------------------------------------------------------------------ the recursion
def test_cusum_follows_the_one_sided_recursion():
    cusum = Cusum(k=1.0, h=3.0, clip=4.0)
    steps = [cusum.update(z) for z in (2.0, 2.0, 2.0, 2.0, 2.0)]
    assert [s.statistic for s in steps] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [s.alarm for s in steps] == [False, False, False, True, True]  # S > h, not >=
    assert [s.raised for s in steps] == [False, False, False, True, False]
    assert cusum.update(-2.0).statistic == 2.0 and not cusum.alarm  # back below h
    assert cusum.update(-50.0).statistic == 0.0  # never below 0
    assert cusum.update(100.0).statistic == 3.0  # one packet adds at most clip - k
    assert cusum.update(float("nan")).statistic == 2.0  # NaN scores count as 0
    for _ in range(10):
        cusum.update(100.0)
    assert cusum.statistic == CAP_MULTIPLE * 3.0  # capped at 2 h


def test_cusum_matches_a_plain_reference():
    rng = np.random.default_rng(0)
    z = rng.normal(0.8, 1.5, size=2000)
    k, h, clip = 0.5, 6.0, 3.0
    cusum = Cusum(k, h, clip)
    s, alarms = 0.0, 0
    for value in z:
        before = s > h
        s = min(2 * h, max(0.0, s + min(max(value, -clip), clip) - k))
        alarms += (s > h) and not before
        step = cusum.update(float(value))
        assert step.statistic == pytest.approx(s, abs=1e-12)
    assert alarms > 0  # the shifted stream does alarm, so the comparison means something


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0.0}, "k must be > 0"),
        ({"k": -1.0}, "k must be > 0"),
        ({"h": 0.0}, "h must be > 0"),
        ({"h": math.inf}, "h must be finite"),
        ({"k": math.nan}, "k must be finite"),
        ({"clip": 1.0}, r"clip \(1\) must be larger than k \(1.5\)"),
        ({"cooldown_s": 0.0}, "cooldown must be > 0"),
        ({"h": True}, "h must be a number"),
    ],
)
def test_cusum_parameters_are_validated_with_clear_errors(kwargs, match):
    params = {"k": 1.5, "h": 15.0, "clip": 4.0, "cooldown_s": 60.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        check_cusum_params(**params)
    with pytest.raises(ValueError, match=match):
        GuardConfig(**{f"cusum_{n}" if n != "cooldown_s" else "cusum_cooldown_s": v
                       for n, v in params.items()})  # fmt: skip


def test_guard_config_sequential_switch():
    assert GuardConfig().sequential
    assert GuardConfig().cusum_k == DEFAULT_CUSUM_K and GuardConfig().cusum_h == DEFAULT_CUSUM_H
    assert not GuardConfig(cusum=False).sequential
    assert not GuardConfig(mode="off").sequential


# ---------------------------------------------------------------------- per-client state
def test_client_cusums_are_per_client():
    cusums = ClientCusums(k=1.0, h=3.0, clip=4.0, clock=FakeClock())
    steps = cusums.update("a", [3.0, 3.0])
    assert [s.statistic for s in steps] == [2.0, 4.0] and steps[-1].alarm
    assert cusums.update("b", [0.0])[0].statistic == 0.0  # b does not see a's packets
    assert cusums.statistic("a") == 4.0 and cusums.statistic("b") == 0.0
    assert cusums.statistic("nobody") == 0.0 and "nobody" not in cusums


def test_client_cusums_memory_is_bounded_lru():
    cusums = ClientCusums(k=1.0, h=3.0, max_clients=3, clock=FakeClock())
    for i in range(100):
        cusums.update(f"c{i}", [2.0])
    assert len(cusums) == 3
    assert "c0" not in cusums and "c99" in cusums
    cusums.update("c97", [2.0])  # used: c97 becomes the most recent
    cusums.update("new", [2.0])  # evicts the least recently used, c98
    assert "c97" in cusums and "c98" not in cusums and "c99" in cusums
    assert cusums.update("c0", [2.0])[0].statistic == 1.0  # an evicted client starts over
    with pytest.raises(ValueError, match="max_clients"):
        ClientCusums(max_clients=0)


def test_client_cusums_reset_after_the_cool_down():
    clock = FakeClock()
    cusums = ClientCusums(k=1.0, h=3.0, cooldown_s=60.0, clock=clock)
    assert cusums.update("a", [4.0, 4.0])[-1].alarm  # S = 6
    clock.t += 59.0
    assert cusums.update("a", [0.0])[0].statistic == 5.0  # not idle long enough: kept
    clock.t += 60.0
    assert cusums.statistic("a") == 0.0
    assert cusums.update("a", [0.0])[0].statistic == 0.0  # idle 60 s: reset


def test_client_cusums_are_thread_safe():
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:
        cusums = ClientCusums(k=0.5, h=1e6, clip=4.0, clock=FakeClock())
        clients = [f"c{i}" for i in range(4)]

        def hammer() -> None:
            for i in range(2000):
                cusums.update(clients[i % 4], [1.5] * 3)  # +1 per packet

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    for c in clients:
        assert cusums.statistic(c) == 8 * 500 * 3  # every +1 counted once


# ----------------------------------------------------------------------- real packets
@pytest.fixture(scope="module")
def zoo():
    """The zoo model, its clean statistics, clean test packets in a seeded random order and
    rate-PGD eps 8 packets of 32 test images (all under the per-packet threshold)."""
    from entroguard.data import load_dataset
    from entroguard.serve.resolve import load_served_model
    from entroguard.threats.attacks import RatePGD

    torch.set_num_threads(1)
    served = load_served_model(ZOO_MODEL)
    model, stats = served.model, served.metadata["clean_payload"]
    test = load_dataset("fashion-mnist", "test")
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(test))[:1500])
    clean = model.to_packets(test.to_float(order))
    images = test.to_float(order[:32])
    adv = RatePGD(eps=8 / 255)(model, images, generator=torch.Generator().manual_seed(0))
    threshold = RateGuard(stats).threshold_bytes
    attacked = [p for p in model.to_packets(adv) if parse_packet(p).payload_bytes <= threshold]
    assert len(attacked) >= 24
    z = [RateGuard(stats).score(parse_packet(p).payload_bytes).z for p in attacked]
    assert np.mean(z) > DEFAULT_CUSUM_K + 0.5  # the attack shifts the mean well past k
    return model, stats, clean, attacked


def _post(client, packet: bytes, who: str) -> httpx.Response:
    return client.post("/v1/infer", content=packet, headers={**OCTET, "x-client-id": who})


def _metric(text: str, series: str) -> float:
    """The value of one series (name and labels, as rendered) in a Prometheus text, else 0."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_flag_mode_clean_stream_passes_attacked_stream_alarms_and_clients_are_isolated(zoo):
    model, stats, clean, attacked = zoo
    with live_app(model, stats) as (url, app), httpx.Client(base_url=url, timeout=60) as client:
        # a clean client: 1,500 real test packets in random order, in batches of 16
        for start in range(0, len(clean), 16):
            body = encode_batch(clean[start : start + 16])
            r = client.post("/v1/infer", content=body, headers={**BATCH, "x-client-id": "clean"})
            assert r.status_code == 200, r.text
            guards = [res["guard"] for res in r.json()["results"]]
            assert not any(g["client_alarm"] for g in guards), (start, guards)
            assert all(0 <= g["cusum"] <= DEFAULT_CUSUM_H for g in guards)
        # an attacker interleaved with another clean client, packet by packet
        alarm_at = None
        for i in range(ATTACK_DELAY_LIMIT):
            a = _post(client, attacked[i % len(attacked)], "attacker")
            assert a.status_code == 200  # flag mode answers
            b = _post(client, clean[i], "bystander")
            assert b.status_code == 200 and b.json()["guard"]["client_alarm"] is False
            guard = a.json()["guard"]
            assert guard["decision"] == "pass"  # no single packet is over the threshold
            if guard["client_alarm"]:
                alarm_at = i + 1
                assert a.json()["results"][0]["guard"]["client_alarm"] is True
                break
        assert alarm_at is not None, f"no alarm in {ATTACK_DELAY_LIMIT} attacked packets"
        assert alarm_at > 1  # one packet alone never alarms (clip - k < h)
        assert guard["cusum"] > DEFAULT_CUSUM_H
        for _ in range(3):  # still flagged while the statistic stays over h
            assert _post(client, attacked[0], "attacker").json()["guard"]["client_alarm"]
        text = client.get("/metrics").text
        assert "entroguard_guard_client_alarms_total 1" in text
        assert 'entroguard_guard_client_alarm_packets_total{action="flag"} 4' in text
        assert app.state.cusums.statistic("id:clean") <= DEFAULT_CUSUM_H
        settings = client.get("/v1/models").json()["models"][0]["guard"]
        assert settings["cusum"] is True and settings["cusum_k"] == DEFAULT_CUSUM_K
        assert settings["cusum_h"] == DEFAULT_CUSUM_H


def test_refuse_mode_refuses_an_alarmed_client_until_it_recovers(zoo):
    model, stats, clean, attacked = zoo
    clock = FakeClock()
    config = GuardConfig(mode="refuse", cusum_cooldown_s=30.0)
    with live_app(model, stats, config, clock=clock) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            sent = 0
            while True:
                r = _post(client, attacked[sent % len(attacked)], "attacker")
                sent += 1
                if r.status_code != 200:
                    break
                assert not r.json()["guard"]["client_alarm"]
                assert sent < ATTACK_DELAY_LIMIT, "no refusal"
            assert r.status_code == 422, r.text
            error = r.json()["error"]
            assert error["reason"] == "client_alarm"
            assert "sequential rate test" in error["detail"] and "CUSUM" in error["detail"]
            # another client is served meanwhile
            assert _post(client, clean[0], "bystander").status_code == 200
            # refused packets still count: the statistic climbs to its cap (2 h)
            for i in range(40):
                assert _post(client, attacked[i % len(attacked)], "attacker").status_code == 422
            cap = CAP_MULTIPLE * DEFAULT_CUSUM_H
            assert app.state.cusums.statistic("id:attacker") == pytest.approx(cap)
            # the attacker's clean packets are refused until its statistic falls below h
            recovered = None
            for i in range(60):
                r = _post(client, clean[1 + i], "attacker")
                if r.status_code == 200:
                    recovered = i + 1
                    break
                assert r.status_code == 422
            assert recovered is not None and recovered >= 5, recovered  # ~ h / k packets
            assert r.json()["guard"]["cusum"] <= DEFAULT_CUSUM_H
            # alarmed again; after the cool-down without packets it starts over
            while _post(client, attacked[sent % len(attacked)], "attacker").status_code == 200:
                sent += 1
            clock.t += 30.0
            r = _post(client, attacked[0], "attacker")
            assert r.status_code == 200 and r.json()["guard"]["cusum"] < DEFAULT_CUSUM_H
            text = client.get("/metrics").text
            assert "entroguard_guard_client_alarms_total 2" in text
            refused = _metric(text, 'entroguard_rejections_total{reason="client_alarm"}')
            assert 'entroguard_rejections_total{reason="rate_anomaly"}' not in text
            alarm_packets = _metric(
                text, 'entroguard_guard_client_alarm_packets_total{action="refuse"}'
            )
            # 1st alarm, 40 more, the clean packets refused while recovering, 2nd alarm
            assert refused == alarm_packets == 1 + 40 + (recovered - 1) + 1


def test_sequential_test_off_never_alarms(zoo):
    model, stats, _, attacked = zoo
    config = GuardConfig(mode="refuse", cusum=False)
    with live_app(model, stats, config) as (url, app), httpx.Client(base_url=url) as client:
        assert app.state.cusums is None
        for i in range(2 * ATTACK_DELAY_LIMIT):
            r = _post(client, attacked[i % len(attacked)], "attacker")
            assert r.status_code == 200
            assert r.json()["guard"]["client_alarm"] is False
            assert r.json()["guard"]["cusum"] is None


def test_server_state_is_bounded_by_max_clients(zoo):
    model, stats, clean, _ = zoo
    with live_app(model, stats, GuardConfig(max_clients=3)) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in range(10):
                assert _post(client, clean[i], f"device-{i}").status_code == 200
        assert len(app.state.cusums) == 3 and "id:device-9" in app.state.cusums


# ---------------------------------------------------------------------------- options
cli = Typer()
cli.command("serve")(serve_command)
cli.command("noop")(lambda: None)  # two commands, so "serve" is parsed as a sub-command


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--guard-cusum-k", "0"], "CUSUM k must be > 0"),
        (["--guard-cusum-h", "-1"], "CUSUM h must be > 0"),
        (["--guard-cusum-k", "5"], "clip (4) must be larger than k (5)"),
        (["--guard-cusum-cooldown-s", "0"], "cooldown must be > 0"),
    ],
)
def test_serve_command_rejects_bad_cusum_options(args, match, tmp_path, fp_model, fp_stats):
    checkpoint = save_model(fp_model, tmp_path / "tiny", fp_stats)
    result = CliRunner().invoke(cli, ["serve", "--model", str(checkpoint), *args])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and match in result.output


def test_serve_command_passes_cusum_options(tmp_path, fp_model, fp_stats):
    checkpoint = save_model(fp_model, tmp_path / "tiny", fp_stats)
    server = ServerProcess(
        checkpoint, tmp_path, "--no-guard-cusum", "--guard-cusum-h", "7.5",
        "--guard-cusum-cooldown-s", "5",
    )  # fmt: skip
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            guard = client.get("/v1/models").json()["models"][0]["guard"]
            assert guard["cusum"] is False and guard["cusum_h"] == 7.5
            assert guard["cusum_cooldown_s"] == 5.0
            packet = fp_model.to_packets(torch.rand(1, 3, 32, 32))[0]
            assert _post(client, packet, "x").json()["guard"]["cusum"] is None
        assert "per-client CUSUM off" in server.out_path.read_text()
    finally:
        server.stop()
