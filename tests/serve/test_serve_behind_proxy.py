"""The documented reverse-proxy deployment (deploy/nginx-entroguard.conf), with Debian's nginx.

nginx listens on loopback and names each client by its address in ``X-Client-Id``; the server
trusts that header from nginx's address only. A client's own ``X-Client-Id`` is overwritten
by nginx, and one sent straight to the server is ignored.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import LOOPBACK, live_app, smooth_images

from entroguard.serve.app import ServeLimits
from entroguard.serve.framing import PACKET_CONTENT_TYPE
from entroguard.serve.protocol import ConnectionLimits

pytestmark = pytest.mark.slow

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
SITE = Path(__file__).parents[2] / "deploy" / "nginx-entroguard.conf"
OCTET = {"content-type": PACKET_CONTENT_TYPE}
OUTSIDER = "127.0.0.2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _nginx(tmp: Path, upstream_port: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    site = SITE.read_text().replace("127.0.0.1:8080", f"{LOOPBACK}:{port}")
    site = site.replace("127.0.0.1:8000", f"{LOOPBACK}:{upstream_port}")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / sub).mkdir()
    temp_paths = "".join(f"{sub if sub != 'body' else 'client_body'}_temp_path {tmp / sub};\n"
                         for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    conf = tmp / "nginx.conf"
    conf.write_text(f"user root;\nworker_processes 1;\npid {tmp / 'nginx.pid'};\n"
                    f"error_log {tmp / 'error.log'};\nevents {{}}\n"
                    f"http {{\naccess_log off;\n{temp_paths}{site}\n}}\n")  # fmt: skip
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"],
                            stderr=subprocess.PIPE)  # fmt: skip
    url = f"http://{LOOPBACK}:{port}"
    for _ in range(100):
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"nginx did not start: {(tmp / 'error.log').read_text()[-2000:]}")


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (scripts/install.sh --dev "
                    "installs it from Debian where apt and root are available)")  # fmt: skip
def test_clients_are_named_by_nginx_and_never_by_themselves(tmp_path, fp_model, fp_stats):
    limits = ServeLimits(budget_packets_per_s=1000,
                         connections=ConnectionLimits(trusted_proxies=(LOOPBACK,)))  # fmt: skip
    packet = fp_model.to_packets(smooth_images(1, seed=8))[0]
    with live_app(fp_model, fp_stats, limits=limits) as (url, app):
        proc, proxied = _nginx(tmp_path, int(url.rsplit(":", 1)[1]))
        try:
            outsider = httpx.HTTPTransport(local_address=OUTSIDER)
            spoof = {**OCTET, "x-client-id": "someone-else"}
            with httpx.Client(base_url=proxied, transport=outsider, timeout=30) as client:
                r = client.post("/v1/infer", content=packet, headers=spoof)
                assert r.status_code == 200, r.text
            with httpx.Client(base_url=url, transport=httpx.HTTPTransport(
                    local_address=OUTSIDER), timeout=30) as direct:  # fmt: skip
                assert direct.post("/v1/infer", content=packet, headers=spoof).status_code == 200
            clients = app.state.service.packet_budgets.clients()
            assert clients == [f"id:{OUTSIDER}", f"peer:{OUTSIDER}"]
        finally:
            proc.terminate()
            proc.wait(10)
