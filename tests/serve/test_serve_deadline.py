"""The deadline-aware edge: the controller's choice, its bandwidth estimate, and a simulated
link on loopback where it meets a deadline that the largest fixed setting misses."""

from __future__ import annotations

import pytest
import torch
from eg_testutil import seeded_images, slim_model
from serve_helpers import live_app, stats_of

from entroguard.serve.deadline import (
    DeadlineController,
    SettingProfile,
    ShapedTransport,
    compare_on_trace,
    measure_device_ms,
)

PROFILES = [
    SettingProfile((1, 0), device_ms=2.0, packet_bytes=50, top1=0.80),
    SettingProfile((4, 1), device_ms=8.0, packet_bytes=500, top1=0.88),
    SettingProfile((4, 3), device_ms=8.0, packet_bytes=2000, top1=0.90),
]


def test_the_most_accurate_setting_that_fits_is_chosen():
    fast = DeadlineController(PROFILES, deadline_ms=50, initial_mbps=10)  # 2000 B = 1.6 ms
    assert fast.choose().setting == (4, 3)
    slow = DeadlineController(PROFILES, deadline_ms=50, initial_mbps=0.2)  # 500 B = 20 ms
    assert slow.choose().setting == (4, 1)
    hopeless = DeadlineController(PROFILES, deadline_ms=3, initial_mbps=0.01)
    assert hopeless.choose().setting == (1, 0)  # nothing fits: the fastest


def test_the_bandwidth_estimate_is_an_ewma_with_alpha_0_4():
    c = DeadlineController(PROFILES, deadline_ms=50, initial_mbps=1.0)
    c.observe(1000, 4.0)  # 8000 bits in 4 ms = 2 Mbit/s
    assert c.bandwidth_mbps == pytest.approx(0.4 * 2 + 0.6 * 1)


@pytest.mark.parametrize("bad", [[], [1.0, 0.0]])
def test_a_bad_trace_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="bandwidth trace"):
        ShapedTransport(bad)


def test_the_controller_meets_a_deadline_the_largest_setting_misses():
    model = slim_model("mshp")  # rate 0: ~45-byte packets, rate 3: ~2 kB
    images = seeded_images(24, seed=7)
    device = measure_device_ms(model, images[:1], repeats=3)
    profiles = []
    for setting in model.settings:
        model.set_mode(*setting)
        packets = model.to_packets(images[:8])
        mean_bytes = sum(map(len, packets)) / len(packets)
        top1 = 0.5 + 0.01 * setting[1] + 0.001 * setting[0]  # larger settings: more accurate
        profiles.append(SettingProfile(setting, device[setting], mean_bytes, top1))
    model.set_mode(*model.largest)
    deadline = 100.0 + 2 * min(device.values())
    trace = [0.1]  # 2 kB take 160 ms, 45 B 4 ms; the controller starts believing 1 Mbit/s
    with live_app(model, stats_of(model, images)) as (url, _):
        rows = compare_on_trace(model, profiles, url, images, None, deadline_ms=deadline,
                                trace_mbps=trace, fixed=[(4, 3)])  # fmt: skip
    adaptive, largest = rows
    assert adaptive["policy"] == "adaptive" and largest["policy"] == "m4,r3"
    assert largest["deadline_hits"] == 0
    assert adaptive["deadline_hits"] >= 0.6
    assert adaptive["packet_bytes"] < largest["packet_bytes"]
    assert len(adaptive["settings_used"]) >= 2


def test_the_edge_command_compares_adaptive_and_fixed_settings(tmp_path):
    import json

    from PIL import Image
    from typer import Typer
    from typer.testing import CliRunner

    from entroguard.data.imageset import ImageSet
    from entroguard.serve.cli import edge_command
    from entroguard.train.checkpoint import save_checkpoint
    from entroguard.train.recipes.runs import measure_settings

    model = slim_model("mshp")
    images = seeded_images(8, seed=9)
    pixels = (images * 255).round().to(torch.uint8)
    toy = ImageSet("toy", "test", pixels, torch.zeros(8).long(), [str(i) for i in range(10)])
    rows = measure_settings(model, toy, progress=False)
    path = save_checkpoint(model, tmp_path / "toy-slim", settings=rows)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, p in enumerate(pixels[:4].permute(0, 2, 3, 1).numpy()):
        Image.fromarray(p).save(folder / f"img{i}.png")
    cli = Typer()
    cli.command("edge")(edge_command)
    cli.command("unused")(lambda: None)
    out = tmp_path / "deadline.json"
    with live_app(model, stats_of(model, images)) as (url, _):
        result = CliRunner().invoke(cli, ["edge", str(folder), "--model", str(path), "--server",
                                          url, "--deadline-ms", "80", "--link-trace", "0.2,2",
                                          "--out", str(out), "--figure",
                                          str(tmp_path / "deadline.png")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "deadline hits %" in result.output and "adaptive" in result.output
    saved = json.loads(out.read_text())
    policies = [p["policy"] for p in saved["policies"]]
    assert policies == ["adaptive", "m4,r0", "m4,r1", "m4,r2", "m4,r3", "m1,r0"]
    assert all(p["n"] == 4 for p in saved["policies"])
    assert (tmp_path / "deadline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_edge_command_refuses_a_deadline_for_a_plain_model(tmp_path):
    from typer import Typer
    from typer.testing import CliRunner

    from entroguard.serve.cli import edge_command

    cli = Typer()
    cli.command("edge")(edge_command)
    cli.command("unused")(lambda: None)
    result = CliRunner().invoke(cli, ["edge", "test", "--model", "resnet_s-mshp-beta0.01",
                                      "--deadline-ms", "50"])  # fmt: skip
    assert result.exit_code == 2 and "needs a slimmable model" in result.output
