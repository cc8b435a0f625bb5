"""Run an ASGI app with uvicorn on a socket we bind ourselves (port 0 = any free port).

Binding first means the address is known (and already accepting connections into the backlog)
before uvicorn starts, with no race for a "free" port: tests and benchmarks ask for port 0 and
read the real one back.
"""

from __future__ import annotations

import socket
import threading
import time

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def bind_socket(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, backlog: int = 2048):
    """A listening TCP socket on ``(host, port)``; port 0 picks a free port.

    Raises ValueError for a port outside 0-65535 (the OS would silently take it modulo
    65536)."""
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port} is outside 0-65535")
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, socktype, proto, _, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def socket_url(sock) -> str:
    """``http://host:port`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def connection_limits(app):
    """The app's :class:`~entroguard.serve.protocol.ConnectionLimits` (defaults for an app
    without a :class:`~entroguard.serve.service.Service`)."""
    from entroguard.serve.protocol import ConnectionLimits

    service = getattr(app.state, "service", None)
    return service.limits.connections if service is not None else ConnectionLimits()


def uvicorn_config(app, *, log_level: str = "warning", access_log: bool = False):
    """A uvicorn config for ``app``: h11 with the connection-level defences of
    :mod:`~entroguard.serve.protocol`, no lifespan, our own logging."""
    import uvicorn

    from entroguard.serve.protocol import ConnectionTable, guarded_protocol

    limits = connection_limits(app)
    service = getattr(app.state, "service", None)
    table = service.connections if service is not None else ConnectionTable()
    return uvicorn.Config(
        app,
        http=guarded_protocol(limits, table),
        log_level=log_level,
        access_log=access_log,
        lifespan="off",
        timeout_keep_alive=limits.idle_timeout_s,
        timeout_graceful_shutdown=5,
        server_header=False,
        backlog=limits.backlog,
    )


def serve_forever(app, sock, *, log_level: str = "info", access_log: bool = False) -> None:
    """Serve ``app`` on ``sock`` in this thread until interrupted (Ctrl-C / SIGTERM)."""
    import uvicorn

    uvicorn.Server(uvicorn_config(app, log_level=log_level, access_log=access_log)).run(
        sockets=[sock]
    )


class ServerThread:
    """``app`` served by uvicorn in a background thread; a context manager.

    Example::

        with ServerThread(app) as server:
            httpx.get(server.url + "/v1/health")
    """

    def __init__(
        self, app, host: str = DEFAULT_HOST, port: int = 0, *, log_level: str = "warning"
    ) -> None:
        import uvicorn

        self.sock = bind_socket(host, port, backlog=connection_limits(app).backlog)
        self.url = socket_url(self.sock)
        self.server = uvicorn.Server(uvicorn_config(app, log_level=log_level))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self, timeout: float = 30.0) -> ServerThread:
        """Start serving; returns once uvicorn has started (RuntimeError after ``timeout`` s)."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
