"""The cloud server: a FastAPI app holding the tail of one split model.

Routes:

* ``POST /v1/infer``: one packet (``application/octet-stream``) or several
  (``application/x-entroguard-batch``, see :mod:`~entroguard.serve.framing`); query
  ``top_k`` (default 5). Answers JSON: per packet the predicted class, top-k with
  probabilities, payload size and the rate guard's verdict (``guard``: the packet's
  ``decision``, ``score`` and ``threshold_bytes``, and the client's sequential test after it,
  ``client_alarm`` and ``cusum``); for the request the bytes received and the decode, tail and
  total server times (ms). For a single packet its ``predicted``, ``label``, ``top_k`` and
  ``guard`` are repeated at the top level.
* ``GET /v1/health``: liveness and the model's fingerprint.
* ``GET /v1/models``: the served model: name, fingerprints, spec, classes, clean payload
  statistics and guard settings.
* ``GET /v1/openapi.json``: this API as an OpenAPI 3.0 document
  (:mod:`~entroguard.serve.openapi`).
* ``GET /metrics``: Prometheus text exposition (:mod:`~entroguard.serve.metrics`).

Errors are JSON ``{"error": {"status", "reason", "detail"}}`` (:mod:`~entroguard.serve.errors`);
no input produces a 5xx: bodies are size-limited before and while they are read, packets are
parsed by :func:`entroguard.packet.parse_packet`, and the codec checks coder strings before the
C++ decoder reads them (:mod:`~entroguard.codec.rans`). The model runs in worker threads
(``model_threads`` at a time), never on the event loop.

Client identity (for budgets, fair sharing, the sequential test and logs) is the peer
address; the ``X-Client-Id`` header names the client only on connections from a trusted
proxy (``ConnectionLimits.trusted_proxies``). Everything the routes use lives in one
:class:`~entroguard.serve.service.Service`, built once; the connection-level defences are in
:mod:`~entroguard.serve.protocol`, which :mod:`~entroguard.serve.runner` installs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from entroguard.models.split import SplitClassifier
from entroguard.privacy.keyed import KeyedProtection, SplitKey
from entroguard.serve.body import check_content_length, read_limited
from entroguard.serve.engine import DEFAULT_TOP_K
from entroguard.serve.errors import ServeError, dumps, error_body
from entroguard.serve.framing import BATCH_CONTENT_TYPE, PACKET_CONTENT_TYPE
from entroguard.serve.guard import Clock, GuardConfig
from entroguard.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from entroguard.serve.metrics import ServerMetrics
from entroguard.serve.openapi import openapi_document
from entroguard.serve.service import CLIENT_ID_HEADER, ServeLimits, Service

__all__ = ["ROUTES", "ServeLimits", "Service", "app_for", "create_app"]

log = logging.getLogger("entroguard.serve")

ROUTES = ("/v1/infer", "/v1/health", "/v1/models", "/v1/openapi.json", "/metrics")


def create_app(
    model: SplitClassifier,
    guard_config: GuardConfig | None = None,
    *,
    clean_stats: dict | None = None,
    setting_stats: Mapping[tuple[int, int], dict] | None = None,
    keyed: tuple[KeyedProtection, SplitKey] | None = None,
    model_name: str | None = None,
    classes: Sequence[str] | None = None,
    limits: ServeLimits | None = None,
    clock: Clock = time.monotonic,
    metrics: ServerMetrics | None = None,
) -> FastAPI:
    """The server app for ``model``: :func:`app_for` a :class:`Service` built from these
    arguments (see :class:`Service` for each)."""
    service = Service(model, guard_config, limits, name=model_name, classes=classes,
                      clean_stats=clean_stats, setting_stats=setting_stats, keyed=keyed,
                      clock=clock, metrics=metrics)  # fmt: skip
    return app_for(service)


def app_for(service: Service) -> FastAPI:
    """The FastAPI app serving ``service``; ``app.state.service`` holds it (and
    ``app.state.engine``, ``.metrics``, ``.guard``, ``.cusums`` its parts, for tests)."""
    app = FastAPI(title="entroguard split-inference server", docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    state = app.state
    state.service, state.engine, state.metrics = service, service.engine, service.metrics
    state.guard, state.cusums = service.guard, service.cusums
    _add_routes(app, service)
    _add_error_handlers(app, service.metrics)
    app.add_middleware(_Instrument, metrics=service.metrics)
    return app


def json_response(obj: dict, status: int = 200, headers: dict | None = None) -> Response:
    """``obj`` as a JSON response."""
    return Response(dumps(obj), status, headers, media_type="application/json")


def _error_response(exc: ServeError, metrics: ServerMetrics) -> Response:
    metrics.rejections.inc(reason=exc.reason)
    if exc.reason == "rate_limited":
        log.info("budget spent: %s", exc.detail)
    return json_response(exc.body(), exc.status, exc.headers)


def _add_routes(app: FastAPI, service: Service) -> None:
    @app.post("/v1/infer")
    async def infer(request: Request) -> Response:
        try:
            media, top_k, client, declared = _request_terms(request, service)
            await service.check_budgets(client, declared)
            body = await read_limited(request.stream(), service.limits.max_body_bytes)
            return json_response(await service.infer(body, media, top_k, client))
        except ClientDisconnect:  # the body deadline closed it, or the client left
            raise ServeError("client_disconnected", "the client went away") from None
        except ServeError as exc:
            return _error_response(exc, service.metrics)

    @app.get("/v1/health")
    async def health() -> Response:
        return json_response(service.health())

    @app.get("/v1/models")
    async def models() -> Response:
        return json_response({"models": [service.describe()]})

    document = openapi_document()

    @app.get("/v1/openapi.json")
    async def openapi() -> Response:
        return json_response(document)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(service.metrics.render(), 200, media_type=METRICS_CONTENT_TYPE)


def _request_terms(request: Request, service: Service) -> tuple[str, int, str, int | None]:
    """The request's media type, top-k, client and declared body bytes (None: not declared);
    4xx for bad ones or a body too large."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in (PACKET_CONTENT_TYPE, BATCH_CONTENT_TYPE):
        raise ServeError(
            "unsupported_media_type",
            f"content type {media or '(none)'!r} not accepted: send one packet as "
            f"{PACKET_CONTENT_TYPE} or length-prefixed packets as {BATCH_CONTENT_TYPE}",
        )
    top_k = _top_k(request.query_params.get("top_k"), len(service.engine.classes))
    peer = request.client.host if request.client else None
    client = service.client_of(peer, request.headers.get(CLIENT_ID_HEADER))
    declared = check_content_length(request.headers.get("content-length"),
                                    service.limits.max_body_bytes)  # fmt: skip
    return media, top_k, client, declared


def _add_error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> Response:
        return _error_response(exc, metrics)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        status = exc.status_code if reason else 400
        reason = reason or "bad_parameter"
        metrics.rejections.inc(reason=reason)
        detail = f"{request.method} {request.url.path}: {exc.detail}"
        if status == 404:
            detail += f" (routes: {', '.join(ROUTES)})"
        return json_response(error_body(status, reason, detail), status, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        metrics.rejections.inc(reason="bad_parameter")
        body = error_body(400, "bad_parameter", f"{request.url.path}: invalid parameters")
        return json_response(body, 400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        metrics.rejections.inc(reason="internal")
        body = error_body(500, "internal", f"internal server error ({type(exc).__name__})")
        return json_response(body, 500)


def _top_k(value: str | None, num_classes: int) -> int:
    if value is None:
        return min(DEFAULT_TOP_K, num_classes)
    if not (value.isascii() and value.isdigit() and 1 <= len(value) <= 6):
        raise ServeError("bad_parameter", f"top_k must be an integer >= 1, got {value[:20]!r}")
    return max(1, min(int(value), num_classes))


class _Instrument:
    """ASGI middleware: counts requests by route and status, and times them."""

    def __init__(self, app, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.inc(route=route, status=str(status["code"]))
            self.metrics.request_seconds.observe(time.perf_counter() - t0, route=route)
