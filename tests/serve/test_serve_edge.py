"""The edge side end to end: inputs, uploads baselines, the edge loop and the two commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from serve_helpers import live_app, save_model, smooth_images
from typer import Typer
from typer.testing import CliRunner

from entroguard.errors import InputError
from entroguard.serve.cli import edge_command, serve_command
from entroguard.serve.client import EdgeClient
from entroguard.serve.edge import check_same_model, format_record, run_edge, summarize
from entroguard.serve.inputs import InputSource
from entroguard.serve.uploads import upload_sizes

cli = Typer()
cli.command("serve")(serve_command)
cli.command("edge")(edge_command)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    pixels = (smooth_images(5, seed=21) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    for i, p in enumerate(pixels):
        Image.fromarray(p).resize((48, 40)).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, fp_model, fp_stats):
    return save_model(fp_model, tmp_path_factory.mktemp("ckpt") / "tiny-fp", fp_stats)


def test_upload_sizes_count_grey_images_as_one_channel():
    grey = torch.rand(2, 1, 32, 32).expand(-1, 3, -1, -1)
    colour = torch.rand(2, 3, 32, 32)
    g, c = upload_sizes(grey), upload_sizes(colour)
    assert g.raw.tolist() == [1024, 1024] and c.raw.tolist() == [3072, 3072]
    assert (g.png > 0).all() and (g.jpeg > 0).all() and (c.jpeg > 0).all()
    assert upload_sizes(torch.zeros(1, 3, 32, 32)).jpeg[0] < upload_sizes(colour).jpeg[0]
    assert set(c.means()) == {"raw_bytes", "png_bytes", "jpeg_bytes"}


def test_input_source_files_folders_and_errors(image_dir):
    source = InputSource([str(image_dir)], (32, 32), limit=3)
    (batch,) = list(source.batches(8))
    assert batch.images.shape == (3, 3, 32, 32) and batch.labels == [None] * 3
    assert 0 <= float(batch.images.min()) and float(batch.images.max()) <= 1
    assert len(InputSource([str(image_dir / "img0.png")], (32, 32))) == 1
    with pytest.raises(InputError, match="neither"):
        InputSource(["does/not/exist.png"], (32, 32))
    with pytest.raises(InputError, match="cannot read"):
        list(InputSource([str(image_dir / "notes.txt")], (32, 32)).batches(1))
    with pytest.raises(InputError, match="no inputs"):
        InputSource([], (32, 32))


def test_edge_loop_against_a_live_server(fp_model, fp_stats, image_dir):
    with live_app(fp_model, fp_stats) as (url, _), EdgeClient(url) as client:
        check_same_model(fp_model, client)
        source = InputSource([str(image_dir)], (32, 32))
        records = run_edge(fp_model, client, source, progress=False, encode_batch=2)
        batch = torch.cat([b.images for b in source.batches(8)])
        expected = fp_model.from_packets(fp_model.to_packets(batch)).argmax(1).tolist()
    assert [r.predicted for r in records] == expected
    summary = summarize(records, wall_s=1.0)
    assert summary["n"] == 5 and summary["answered"] == 5
    assert summary["packet_bytes"] == pytest.approx(np.mean([r.packet_bytes for r in records]))
    # the user's 48x40 RGB files, not the 32x32 model input
    assert summary["raw_bytes"] == 48 * 40 * 3 and summary["p99_ms"] >= summary["p50_ms"] > 0
    assert summary["x_smaller_than_raw"] == pytest.approx(5760 / summary["packet_bytes"])
    sizes = [(image_dir / f"img{i}.png").stat().st_size for i in range(5)]
    assert summary["file_bytes"] == pytest.approx(np.mean(sizes))
    assert all(0 < r.payload_bytes < r.packet_bytes for r in records)


def test_dataset_images_are_compared_as_the_dataset_has_them(fp_model, fp_stats):
    source = InputSource(["test:fashion-mnist"], (32, 32), limit=3)
    (batch,) = list(source.batches(3))
    assert batch.raw_bytes == [784] * 3 and batch.file_bytes == [None] * 3
    assert batch.sources[0].shape == (1, 28, 28) and batch.images.shape == (3, 3, 32, 32)
    with live_app(fp_model, fp_stats) as (url, _), EdgeClient(url) as client:
        records = run_edge(fp_model, client, source, progress=False, top_k=3)
    assert all(len(r.top_k) == 3 and r.client_alarm is False for r in records)
    line = format_record(records[0])
    assert "packet" in line and "payload" in line and line.count(", ") >= 2  # three classes


def test_edge_refuses_a_server_with_another_model(fp_model, fp_stats, mshp_model):
    with live_app(fp_model, fp_stats) as (url, _), EdgeClient(url) as client:
        with pytest.raises(InputError, match="fingerprint"):
            check_same_model(mshp_model, client)


def test_edge_command(fp_model, fp_stats, checkpoint, image_dir, tmp_path):
    out = tmp_path / "edge.json"
    with live_app(fp_model, fp_stats) as (url, _):
        result = CliRunner().invoke(
            cli,
            ["edge", str(image_dir), "--model", str(checkpoint), "--server", url,
             "--no-progress", "--out", str(out), "--client-id", "cli-test"],
        )  # fmt: skip
        as_json = CliRunner().invoke(cli, ["edge", str(image_dir), "--model", str(checkpoint),
                                           "--server", url, "--no-progress", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "bytes per image on the wire" in result.output
    assert "img0.png" in result.output and "latency per request" in result.output
    saved = json.loads(out.read_text())
    assert saved["summary"]["n"] == 5 and len(saved["records"]) == 5
    assert as_json.exit_code == 0, as_json.output
    printed = json.loads(as_json.stdout)  # JSON only, like every --json
    assert printed["summary"]["n"] == 5 and len(printed["records"]) == 5


def test_edge_command_unreachable_server(checkpoint, image_dir):
    result = CliRunner().invoke(
        cli,
        ["edge", str(image_dir), "--model", str(checkpoint), "--server", "http://127.0.0.1:9",
         "--retries", "0", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "cannot reach the entroguard server at http://127.0.0.1:9" in result.output


def test_serve_command_unknown_model(tmp_path):
    result = CliRunner().invoke(
        cli, ["serve", "--model", "no-such-model", "--zoo-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "no-such-model" in result.output
