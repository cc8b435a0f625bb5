"""Helpers for the server tests: seeded models, their checkpoints, live servers on loopback.

Live servers bind 127.0.0.1 on a free port, either in a thread of the test process
(``live_app``) or as a subprocess started with ``python -m entroguard.serve serve``
(``ServerProcess``): the subprocess is what the fuzz and load tests hit, so a crash of the
server shows up as a failed test rather than a dead test run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from entroguard.models.split import SplitClassifier
from entroguard.serve.guard import clean_payload_stats

LOOPBACK = "127.0.0.1"


def smooth_images(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    """``n`` smooth random images (B, 3, size, size) in [0, 1] (the 'clean' images here)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear").clamp(0, 1)


def noise_images(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    """``n`` uniform-noise images: far more high-frequency content than ``smooth_images``."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def stats_of(model: SplitClassifier, images: torch.Tensor) -> dict:
    """Clean payload statistics of ``model`` on ``images``."""
    return clean_payload_stats(np.asarray(model.compress(images).payload_bytes()))


def save_model(model: SplitClassifier, path: Path, stats: dict | None) -> Path:
    """Save ``model`` as a checkpoint like the zoo's (``clean_payload`` when given)."""
    from entroguard.train.checkpoint import save_checkpoint

    extra = {"clean_payload": stats} if stats is not None else {}
    return save_checkpoint(
        model,
        path,
        beta=0.01,
        dataset="fashion-mnist",
        metrics={"n": 1, "top1": 0.1, "est_bytes": 0.0, "payload_bytes": 0.0,
                 "packet_bytes": 0.0},
        **extra,
    )  # fmt: skip


@contextlib.contextmanager
def live_app(model: SplitClassifier, stats: dict | None, guard_config=None, **kwargs):
    """A server for ``model`` in a background thread; yields ``(url, app)``. Unless ``limits``
    are given, the test process is a trusted proxy: its ``X-Client-Id`` names the client."""
    from entroguard.serve.app import create_app
    from entroguard.serve.runner import ServerThread

    kwargs.setdefault("limits", trusting_loopback())
    app = create_app(model, guard_config, clean_stats=stats, **kwargs)
    with ServerThread(app, LOOPBACK, 0) as server:
        yield server.url, app


def trusting_loopback(**limits):
    """:class:`ServeLimits` (``limits``) under which loopback is a trusted proxy, without a
    packet budget unless one is given (the tests that flood test other things)."""
    from entroguard.serve.app import ServeLimits
    from entroguard.serve.protocol import ConnectionLimits

    limits.setdefault("budget_packets_per_s", 0)
    return ServeLimits(connections=ConnectionLimits(trusted_proxies=(LOOPBACK,)), **limits)


class ServerProcess:
    """``python -m entroguard.serve serve`` on a free loopback port, as a subprocess."""

    def __init__(self, checkpoint: Path, workdir: Path, *args: str) -> None:
        self.log_path = workdir / "server.log"
        self.out_path = workdir / "server.out"
        command = [
            sys.executable, "-m", "entroguard.serve", "serve", "--model", str(checkpoint),
            "--host", LOOPBACK, "--port", "0", "--log-level", "warning", "--torch-threads", "1",
            *args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.out_path, "wb") as out, open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=out, stderr=log, env=env)
        self.url = self._wait_for_url()

    def _wait_for_url(self, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            for line in self.out_path.read_text().splitlines():
                if " on http://" in line:
                    url = line.split(" on ", 1)[1].strip()
                    if _healthy(url):
                        return url
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout} s:\n{self.log()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/v1/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False
