"""``entroguard serve`` as a subprocess on a free port: for tests, benchmarks and scripts.

A server in its own process is what clients meet in deployment: a crash shows up as a dead
process (``alive()`` is False) rather than as a dead test run, and the client's Python threads
do not share the server's interpreter lock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


class ServerProcess:
    """``python -m entroguard.serve serve --model MODEL OPTIONS...`` on ``host``, port 0.

    Its stdout and stderr go to ``WORKDIR/server.out`` and ``server.log`` (a fresh temporary
    folder by default). ``url``, ``host`` and ``port`` are set once it answers
    ``/v1/health``; RuntimeError (with the end of its log) if it exits or does not answer
    within ``timeout_s``.
    """

    def __init__(self, model: str | Path, *options: str, workdir: Path | None = None,
                 host: str = "127.0.0.1", timeout_s: float = 120.0) -> None:  # fmt: skip
        workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="eg-serve-"))
        self.out_path, self.log_path = workdir / "server.out", workdir / "server.log"
        command = [sys.executable, "-m", "entroguard.serve", "serve", "--model", str(model),
                   "--host", host, "--port", "0", *options]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.out_path, "wb") as out, open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=out, stderr=log, env=env)
        self.url = self._wait_for_url(timeout_s)
        self.host, self.port = host, int(self.url.rsplit(":", 1)[1])

    def _wait_for_url(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            for line in self.out_path.read_text().splitlines():
                if " on http://" in line and _healthy(url := line.split(" on ", 1)[1].strip()):
                    return url
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout_s} s:\n{self.log()}")

    def alive(self) -> bool:
        """Whether the server process is still running."""
        return self.proc.poll() is None

    def log(self) -> str:
        """The last 4,000 characters of its log."""
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """Terminate it (kill after 15 s)."""
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
