"""Helpers for the server tests: seeded models, their checkpoints, live servers on loopback.

Live servers bind 127.0.0.1 on a free port, either in a thread of the test process
(``live_app``) or as a subprocess started with ``python -m entroguard.serve serve``
(``ServerProcess``): the subprocess is what the fuzz and load tests hit, so a crash of the
server shows up as a failed test rather than a dead test run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from entroguard.models.split import SplitClassifier
from entroguard.serve.guard import clean_payload_stats
from entroguard.serve.process import ServerProcess as _ServerProcess

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


class ServerProcess(_ServerProcess):
    """``entroguard serve`` on a free loopback port for ``checkpoint``, logging into
    ``workdir``, at warning level on one torch thread, with ``args``."""

    def __init__(self, checkpoint: Path, workdir: Path, *args: str) -> None:
        super().__init__(checkpoint, "--log-level", "warning", "--torch-threads", "1", *args,
                         workdir=workdir, host=LOOPBACK)  # fmt: skip
