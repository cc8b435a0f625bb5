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
* ``GET /metrics``: Prometheus text exposition (:mod:`~entroguard.serve.metrics`).

Errors are JSON ``{"error": {"status", "reason", "detail"}}`` (:mod:`~entroguard.serve.errors`);
no input produces a 5xx: bodies are size-limited before and while they are read, packets are
parsed by :func:`entroguard.packet.parse_packet`, and the codec checks coder strings before the
C++ decoder reads them (:mod:`~entroguard.codec.rans`). The model runs in worker threads
(``model_threads`` at a time), never on the event loop.

Client identity (for byte budgets, the sequential test and logs) is the ``X-Client-Id``
header when ``trust_client_id`` (put the server behind a proxy that sets it), else the peer
address.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from entroguard.models.split import SplitClassifier
from entroguard.privacy.keyed import KeyedProtection, SplitKey
from entroguard.serve.body import DEFAULT_MAX_BODY_BYTES, check_content_length, read_limited
from entroguard.serve.engine import DEFAULT_TOP_K, TailEngine, _ClientAlarm, _RateAnomaly
from entroguard.serve.errors import ServeError, dumps, error_body, retry_after_header
from entroguard.serve.framing import (
    BATCH_CONTENT_TYPE,
    DEFAULT_MAX_BATCH,
    PACKET_CONTENT_TYPE,
    decode_batch,
)
from entroguard.serve.guard import ClientBudgets, GuardConfig, GuardDecision, RateGuard
from entroguard.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from entroguard.serve.metrics import ServerMetrics
from entroguard.serve.sequential import ClientCusums

log = logging.getLogger("entroguard.serve")

ROUTES = ("/v1/infer", "/v1/health", "/v1/models", "/metrics")
CLIENT_ID_HEADER = "x-client-id"
MAX_CLIENT_ID_CHARS = 128


@dataclass(frozen=True)
class ServeLimits:
    """Resource bounds of the server.

    Attributes:
        max_body_bytes: largest request body, bytes (checked on Content-Length and while
            reading).
        max_packet_bytes: largest single packet, bytes.
        max_batch: most packets in one request.
        max_in_flight: most inference requests being handled at once; more get 503.
        model_threads: worker threads running the model at once.
        trust_client_id: identify clients by ``X-Client-Id`` (else by peer address).
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_packet_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    max_in_flight: int = 64
    model_threads: int = 1
    trust_client_id: bool = True

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_packet_bytes", "max_batch", "max_in_flight",
                     "model_threads"):  # fmt: skip
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class _State:
    """Mutable per-app state (touched only on the event loop thread)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.limiter = None  # anyio.CapacityLimiter, created inside the event loop
        self.started = time.monotonic()


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
    clock=time.monotonic,
    metrics: ServerMetrics | None = None,
) -> FastAPI:
    """Build the server app for ``model``.

    Args:
        model: the split model (coder tables built).
        guard_config: rate-guard mode, threshold, per-client sequential test and budgets
            (defaults: :class:`GuardConfig`).
        clean_stats: the model's clean payload statistics (checkpoint ``clean_payload``);
            required unless the guard mode is ``"off"``.
        setting_stats: a slimmable model's clean statistics per setting ``(members, rate)``
            (checkpoint ``settings``): each packet is judged against its own setting's;
            settings without them use ``clean_stats``.
        keyed: a keyed protection and the deployment's key
            (:mod:`entroguard.privacy.keyed`): the tail accepts only format-4 packets with
            this key's tag (400 ``bad_key`` otherwise) and undoes the protection before
            ``g_s``. Without it, format-4 packets are refused with ``bad_key``.
        model_name: shown in answers and metrics (default: the architecture and prior).
        classes: class names, index = class id.
        limits: resource bounds (:class:`ServeLimits`).
        clock: monotonic seconds, for the byte budgets and the sequential test's cool-down
            (tests inject a fake one).
        metrics: where to count (a fresh :class:`ServerMetrics` by default).

    Returns:
        A FastAPI application; ``app.state.engine``, ``app.state.metrics``,
        ``app.state.budgets``, ``app.state.cusums`` (None when the sequential test is off) are
        exposed for tests and embedding.
    """
    guard_config = guard_config or GuardConfig()
    limits = limits or ServeLimits()
    metrics = metrics or ServerMetrics()
    guard = RateGuard(clean_stats, guard_config)
    cusums = None
    if guard_config.sequential:
        cusums = ClientCusums(
            guard_config.cusum_k,
            guard_config.cusum_h,
            guard_config.cusum_clip,
            cooldown_s=guard_config.cusum_cooldown_s,
            max_clients=guard_config.max_clients,
            clock=clock,
        )
    engine = TailEngine(
        model,
        guard,
        classes=classes,
        max_packet_bytes=limits.max_packet_bytes,
        sequential=cusums,
        setting_guards={k: RateGuard(v, guard_config) for k, v in (setting_stats or {}).items()},
        keyed=keyed,
    )
    budgets = ClientBudgets(
        guard_config.budget_bytes_per_s,
        guard_config.burst_bytes,
        max_clients=guard_config.max_clients,
        clock=clock,
    )
    name = model_name or f"{model.spec.arch}-{model.spec.prior}"
    fingerprint = model.fingerprint
    short = model.fingerprint_bytes.hex()
    state = _State()
    metrics.model_info.set(
        1, model=name, fingerprint=short, arch=model.spec.arch, prior=model.spec.prior
    )
    if math.isfinite(guard.threshold_bytes):
        metrics.threshold.set(guard.threshold_bytes)

    app = FastAPI(
        title="entroguard split-inference server",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.budgets = budgets
    app.state.guard = guard
    app.state.cusums = cusums

    def json_response(obj: dict, status: int = 200, headers: dict | None = None) -> Response:
        return Response(dumps(obj), status, headers, media_type="application/json")

    def error_response(exc: ServeError) -> Response:
        metrics.rejections.inc(reason=exc.reason)
        return json_response(exc.body(), exc.status, exc.headers)

    def count_guard(decisions: list[GuardDecision], client: str) -> None:
        for d in decisions:
            metrics.guard_decisions.inc(decision=d.decision)
            if d.client_alarm:
                metrics.client_alarm_packets.inc(action=guard_config.mode)
            if d.alarm_raised:
                metrics.client_alarms.inc()
                log.warning(
                    "sequential rate test alarm client=%s cusum=%.2f h=%g k=%g payload_bytes=%d "
                    "z=%.1f action=%s",
                    client, d.cusum or 0.0, guard_config.cusum_h, guard_config.cusum_k,
                    d.payload_bytes, d.z, guard_config.mode,
                )  # fmt: skip

    def client_of(request: Request) -> str:
        if limits.trust_client_id:
            value = request.headers.get(CLIENT_ID_HEADER)
            if value is not None:
                if not (0 < len(value) <= MAX_CLIENT_ID_CHARS and value.isascii()
                        and value.isprintable()):  # fmt: skip
                    raise ServeError(
                        "bad_client_id",
                        f"X-Client-Id must be 1 to {MAX_CLIENT_ID_CHARS} printable ASCII "
                        "characters",
                    )
                return "id:" + value
        peer = request.client
        return "peer:" + (peer.host if peer else "unknown")

    @app.post("/v1/infer")
    async def infer(request: Request) -> Response:
        t0 = time.perf_counter()
        client = "unknown"
        try:
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media not in (PACKET_CONTENT_TYPE, BATCH_CONTENT_TYPE):
                raise ServeError(
                    "unsupported_media_type",
                    f"content type {media or '(none)'!r} not accepted: send one packet as "
                    f"{PACKET_CONTENT_TYPE} or length-prefixed packets as {BATCH_CONTENT_TYPE}",
                )
            top_k = _top_k(request.query_params.get("top_k"), len(engine.classes))
            client = client_of(request)
            check_content_length(request.headers.get("content-length"), limits.max_body_bytes)
            if state.in_flight >= limits.max_in_flight:
                raise ServeError(
                    "overloaded",
                    f"{state.in_flight} requests in flight, the server's limit: retry shortly",
                    retry_after_header(1),
                )
            state.in_flight += 1
            metrics.in_flight.set(state.in_flight)
            try:
                body = await read_limited(request.stream(), limits.max_body_bytes)
                metrics.received_bytes.inc(len(body))
                _charge(budgets, client, len(body))
                if media == BATCH_CONTENT_TYPE:
                    packets = decode_batch(body, max_count=limits.max_batch)
                else:
                    packets = [body]
                if state.limiter is None:
                    state.limiter = anyio.CapacityLimiter(limits.model_threads)
                outcome = await anyio.to_thread.run_sync(
                    engine.infer, packets, top_k, client, limiter=state.limiter
                )
            finally:
                state.in_flight -= 1
                metrics.in_flight.set(state.in_flight)
        except _ClientAlarm as exc:
            count_guard(exc.decisions, client)
            log.info(
                "sequential rate test refused client=%s packets=%d cusum=%.2f h=%g",
                client, len(exc.decisions), exc.decisions[exc.refused[-1]].cusum or 0.0,
                guard_config.cusum_h,
            )  # fmt: skip
            return error_response(exc)
        except _RateAnomaly as exc:
            count_guard(exc.decisions, client)
            first = exc.decisions[exc.refused[0]]
            log.warning(
                "rate guard refused client=%s packets=%d/%d payload_bytes=%d "
                "threshold_bytes=%.0f score=%.3f z=%.1f",
                client, len(exc.refused), len(exc.decisions),
                first.payload_bytes, first.threshold_bytes, first.score, first.z,
            )  # fmt: skip
            return error_response(exc)
        except ServeError as exc:
            if exc.reason == "rate_limited":
                log.info("byte budget spent client=%s", client)
            return error_response(exc)

        metrics.packets.inc(len(outcome.results))
        metrics.decode_seconds.observe(outcome.decode_s)
        metrics.tail_seconds.observe(outcome.tail_s)
        count_guard(outcome.decisions, client)
        for d in outcome.decisions:
            metrics.payload_bytes.observe(d.payload_bytes)
            if d.decision == "flag":
                log.info(
                    "rate guard flagged client=%s payload_bytes=%d threshold_bytes=%.0f "
                    "score=%.3f z=%.1f",
                    client, d.payload_bytes, d.threshold_bytes, d.score, d.z,
                )  # fmt: skip
        answer = {
            "model": name,
            "fingerprint": short,
            "bytes_received": len(body),
            "n": len(outcome.results),
            "decode_ms": round(outcome.decode_s * 1e3, 3),
            "tail_ms": round(outcome.tail_s * 1e3, 3),
            "server_ms": round((time.perf_counter() - t0) * 1e3, 3),
            "results": outcome.results,
        }
        if media == PACKET_CONTENT_TYPE:
            only = outcome.results[0]
            answer.update({k: only[k] for k in ("predicted", "label", "top_k", "guard")})
        return json_response(answer)

    @app.get("/v1/health")
    async def health() -> Response:
        return json_response(
            {
                "status": "ok",
                "model": name,
                "fingerprint": short,
                "uptime_s": round(time.monotonic() - state.started, 3),
                "in_flight": state.in_flight,
            }
        )

    models_answer = {
        "models": [
            {
                "name": name,
                "fingerprint": fingerprint,
                "packet_fingerprint": short,
                "spec": model.spec.to_dict(),
                "latent_hw": list(model.latent_hw),
                "classes": list(engine.classes),
                "clean_payload": guard.stats,
                "guard": guard.describe(),
                "limits": asdict(limits),
            }
        ]
    }

    @app.get("/v1/models")
    async def models() -> Response:
        return json_response(models_answer)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(metrics.render(), 200, media_type=METRICS_CONTENT_TYPE)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        if reason is None:
            status, reason = 400, "bad_parameter"
        else:
            status = exc.status_code
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

    app.add_middleware(_Instrument, metrics=metrics)
    return app


def _top_k(value: str | None, num_classes: int) -> int:
    if value is None:
        return min(DEFAULT_TOP_K, num_classes)
    if not (value.isascii() and value.isdigit() and 1 <= len(value) <= 6):
        raise ServeError("bad_parameter", f"top_k must be an integer >= 1, got {value[:20]!r}")
    return max(1, min(int(value), num_classes))


def _charge(budgets: ClientBudgets, client: str, n_bytes: int) -> None:
    wait = budgets.consume(client, n_bytes)
    if wait == 0.0:
        return
    if math.isinf(wait):
        raise ServeError(
            "too_large",
            f"a {n_bytes}-byte request is larger than the per-client burst of "
            f"{budgets.burst:.0f} bytes: send fewer packets per request",
        )
    raise ServeError(
        "rate_limited",
        f"byte budget of {budgets.rate:.0f} bytes/s (burst {budgets.burst:.0f}) spent: "
        f"retry in {wait:.2f} s",
        retry_after_header(wait),
    )


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
