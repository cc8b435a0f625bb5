"""The server's one object: the served model with its guard, budgets, scheduler and limits.

:class:`Service` is built once (by :func:`~entroguard.serve.app.create_app` or the ``serve``
command) and holds everything a request needs; the HTTP routes
(:mod:`~entroguard.serve.app`) only translate between HTTP and its methods. A request to
:meth:`Service.infer` goes: byte budget, packet budget, admission (parse, checks and rate
guard, in the client's turn), then decode and tail in units of at most
``limits.chunk_packets`` packets, each in the client's turn (:mod:`~entroguard.serve.fair`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from entroguard.models.split import SplitClassifier
from entroguard.privacy.keyed import KeyedProtection, SplitKey
from entroguard.serve.body import DEFAULT_MAX_BODY_BYTES
from entroguard.serve.capacity import measure_packets_per_s
from entroguard.serve.engine import InferOutcome, TailEngine, _ClientAlarm, _RateAnomaly
from entroguard.serve.errors import ServeError, retry_after_header
from entroguard.serve.fair import FairScheduler
from entroguard.serve.framing import BATCH_CONTENT_TYPE, DEFAULT_MAX_BATCH, decode_batch
from entroguard.serve.guard import ClientBudgets, Clock, GuardConfig, GuardDecision, RateGuard
from entroguard.serve.metrics import ServerMetrics
from entroguard.serve.protocol import ConnectionLimits, ConnectionTable
from entroguard.serve.sequential import ClientCusums

log = logging.getLogger("entroguard.serve")

CLIENT_ID_HEADER = "x-client-id"
MAX_CLIENT_ID_CHARS = 128
TARPIT_S = 2.0
"""Longest a request over budget is held before its 429, seconds."""
CLIENT_SHARE = 0.25
"""Default per-client packet budget: this share of the server's measured capacity."""


@dataclass(frozen=True)
class ServeLimits:
    """Resource bounds of the server.

    Attributes:
        max_body_bytes: largest request body, bytes (checked on Content-Length and while
            reading).
        max_packet_bytes: largest single packet, bytes.
        max_batch: most packets in one request.
        max_in_flight: most inference requests whose body has arrived being handled at once;
            more get 503.
        max_in_flight_per_client: most such requests of one client; more get 429 (so a few
            clients cannot fill ``max_in_flight`` and lock the others out).
        model_threads: worker threads running the model at once.
        chunk_packets: most packets decoded in one turn of the fair scheduler.
        budget_packets_per_s: per-client packet budget, packets/s (None: ``CLIENT_SHARE``
            of the capacity measured at start-up; 0: off).
        burst_packets: per-client packet burst (None: two full batches).
        connections: per-connection limits (:class:`ConnectionLimits`), including which
            proxies' ``X-Client-Id`` is trusted.
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_packet_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    max_in_flight: int = 256
    max_in_flight_per_client: int = 16
    model_threads: int = 1
    chunk_packets: int = 8
    budget_packets_per_s: float | None = None
    burst_packets: float | None = None
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_packet_bytes", "max_batch", "max_in_flight",
                     "max_in_flight_per_client", "model_threads", "chunk_packets"):  # fmt: skip
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("budget_packets_per_s", "burst_packets"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0, got {value}")


class Service:
    """Everything the server holds, built once; see the module docstring.

    Args:
        model: the split model (coder tables built).
        guard_config: rate guard, sequential test and byte budgets (:class:`GuardConfig`).
        limits: resource bounds (:class:`ServeLimits`).
        name: shown in answers and metrics (default: the architecture and prior).
        classes: class names, index = class id.
        clean_stats: the model's clean payload statistics (checkpoint ``clean_payload``);
            required unless the guard mode is ``"off"``.
        setting_stats: a slimmable model's clean statistics per setting ``(members, rate)``.
        keyed: a keyed protection and the deployment's key (:mod:`entroguard.privacy.keyed`).
        clock: monotonic seconds for budgets and the sequential test (tests inject one).
        metrics: where to count (a fresh :class:`ServerMetrics` by default).
    """

    def __init__(self, model: SplitClassifier, guard_config: GuardConfig | None = None,
                 limits: ServeLimits | None = None, *, name: str | None = None,
                 classes: Sequence[str] | None = None, clean_stats: dict | None = None,
                 setting_stats: Mapping[tuple[int, int], dict] | None = None,
                 keyed: tuple[KeyedProtection, SplitKey] | None = None,
                 clock: Clock = time.monotonic,
                 metrics: ServerMetrics | None = None) -> None:  # fmt: skip
        self.config = guard_config or GuardConfig()
        self.limits = limits or ServeLimits()
        self.metrics = metrics or ServerMetrics()
        self.model = model
        self.name = name or f"{model.spec.arch}-{model.spec.prior}"
        self.short = model.fingerprint_bytes.hex()
        self.guard = RateGuard(clean_stats, self.config)
        self.cusums = self._cusums(clock)
        self.engine = TailEngine(
            model, self.guard, classes=classes, max_packet_bytes=self.limits.max_packet_bytes,
            sequential=self.cusums, keyed=keyed,
            setting_guards={k: RateGuard(v, self.config)
                            for k, v in (setting_stats or {}).items()},
        )  # fmt: skip
        c = self.config
        self.byte_budgets = ClientBudgets(c.budget_bytes_per_s, c.burst_bytes,
                                          max_clients=c.max_clients, clock=clock)  # fmt: skip
        self.capacity_packets_per_s = self._capacity()
        self.packet_budgets = self._packet_budgets(clock)
        self.scheduler = FairScheduler(self.limits.model_threads)
        self.connections = ConnectionTable(self.metrics)
        self.in_flight = 0
        self._client_in_flight: Counter[str] = Counter()
        self.started = time.monotonic()
        self.metrics.model_info.set(1, model=self.name, fingerprint=self.short,
                                    arch=model.spec.arch, prior=model.spec.prior)  # fmt: skip
        if math.isfinite(self.guard.threshold_bytes):
            self.metrics.threshold.set(self.guard.threshold_bytes)

    def _cusums(self, clock) -> ClientCusums | None:
        c = self.config
        if not c.sequential:
            return None
        return ClientCusums(c.cusum_k, c.cusum_h, c.cusum_clip, cooldown_s=c.cusum_cooldown_s,
                            max_clients=c.max_clients, clock=clock)  # fmt: skip

    def _capacity(self) -> float | None:
        if self.limits.budget_packets_per_s is not None:
            return None
        return measure_packets_per_s(self.model) * self.limits.model_threads

    def _packet_budgets(self, clock) -> ClientBudgets:
        rate = self.limits.budget_packets_per_s
        if rate is None:
            rate = CLIENT_SHARE * (self.capacity_packets_per_s or 0.0)
        burst = self.limits.burst_packets or 2.0 * self.limits.max_batch
        return ClientBudgets(rate, burst, max_clients=self.config.max_clients, clock=clock)

    # -- identity -----------------------------------------------------------------------------

    def client_of(self, peer: str | None, header: str | None) -> str:
        """The client a request counts against: its ``X-Client-Id`` when it comes through a
        trusted proxy, else its peer address (a header from anyone else is ignored)."""
        if header is not None and peer in self.limits.connections.trusted_proxies:
            if not (0 < len(header) <= MAX_CLIENT_ID_CHARS and header.isascii()
                    and header.isprintable()):  # fmt: skip
                raise ServeError("bad_client_id", f"X-Client-Id must be 1 to "
                                 f"{MAX_CLIENT_ID_CHARS} printable ASCII characters")  # fmt: skip
            return "id:" + header
        return "peer:" + (peer or "unknown")

    # -- inference ----------------------------------------------------------------------------

    async def check_budgets(self, client: str, declared_bytes: int | None = None) -> None:
        """429 before the body is read when ``client``'s packet budget is in debt or its byte
        budget lacks the ``declared_bytes`` (Content-Length; 1 when unknown), so a flooding
        client costs the server a header parse per request, not a body; the answer
        comes only after the wait its ``Retry-After`` names (at most ``TARPIT_S``), so a client
        that ignores ``Retry-After`` gains nothing by asking again at once."""
        declared = float(declared_bytes or 1)
        if self.byte_budgets.enabled and declared > self.byte_budgets.burst:
            raise _over_burst(int(declared), "bytes", self.byte_budgets.burst)
        wait = max(self.packet_budgets.wait_for(client, 0.0),  # until its debt is repaid
                   self.byte_budgets.wait_for(client, declared))  # fmt: skip
        if wait > 0:
            await asyncio.sleep(min(wait, TARPIT_S))
            raise ServeError("rate_limited", f"this client's budget is spent: retry in "
                             f"{max(wait, 0.01):.2f} s",
                             retry_after_header(wait) | {"Connection": "close"})  # fmt: skip

    async def infer(self, body: bytes, media: str, top_k: int, client: str) -> dict:
        """The answer to one ``/v1/infer`` request whose ``body`` has arrived (JSON-ready);
        raises :class:`ServeError` for anything refused."""
        t0 = time.perf_counter()
        self._enter(client)
        try:
            self.metrics.received_bytes.inc(len(body))
            _charge(self.byte_budgets, client, len(body), "byte", "bytes")
            packets = (decode_batch(body, max_count=self.limits.max_batch)
                       if media == BATCH_CONTENT_TYPE else [body])  # fmt: skip
            self._charge_packets(client, len(packets))
            outcome = await self._run(packets, top_k, client)
        except (_ClientAlarm, _RateAnomaly) as exc:
            self._log_refusal(exc, client)
            raise
        except ServeError as exc:
            if exc.reason == "impossible_latent":
                self._count_impossible(client)
            raise
        finally:
            self._leave(client)
        self._record(outcome, client)
        return self._answer(outcome, len(body), t0, single=media != BATCH_CONTENT_TYPE)

    def _charge_packets(self, client: str, n: int) -> None:
        """Charge ``n`` packets to ``client``'s budget, into debt if need be (413 over its
        burst): its next requests wait in :meth:`check_budgets` until the debt is repaid."""
        budgets = self.packet_budgets
        if budgets.enabled and n > budgets.burst:
            raise _over_burst(n, "packets", budgets.burst)
        budgets.charge(client, n)

    def _enter(self, client: str) -> None:
        """Count a request in flight: 503 when the server is full, 429 when its client is."""
        if self.in_flight >= self.limits.max_in_flight:
            raise ServeError("overloaded", f"{self.in_flight} requests in flight, the server's "
                             "limit: retry shortly", retry_after_header(1))  # fmt: skip
        mine = self._client_in_flight[client]
        if mine >= self.limits.max_in_flight_per_client:
            raise ServeError("client_queue_full", f"this client has {mine} requests in flight, "
                             "the per-client limit: wait for answers before sending more",
                             retry_after_header(1))  # fmt: skip
        self._client_in_flight[client] += 1
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)

    def _leave(self, client: str) -> None:
        self._client_in_flight[client] -= 1
        if self._client_in_flight[client] <= 0:
            del self._client_in_flight[client]
        self.in_flight -= 1
        self.metrics.in_flight.set(self.in_flight)

    async def _run(self, packets: list[bytes], top_k: int, client: str) -> InferOutcome:
        """Admission, then decoding and the tail in chunks, each in the client's turn (a
        request of one chunk or less is one turn)."""
        step, parts = self.limits.chunk_packets, []
        if len(packets) <= step:
            return await self.scheduler.run(client, self.engine.infer, packets, top_k, client)
        encoded, decisions = await self.scheduler.run(client, self.engine.admit, packets, client)
        for start in range(0, len(packets), step):
            stop = min(start + step, len(packets))
            parts.append(await self.scheduler.run(
                client, self.engine.run, encoded.take(start, stop), decisions[start:stop], top_k,
                start))  # fmt: skip
        return InferOutcome.join(parts)

    def _answer(self, outcome: InferOutcome, n_bytes: int, t0: float, single: bool) -> dict:
        answer = {
            "model": self.name, "fingerprint": self.short, "bytes_received": n_bytes,
            "n": len(outcome.results), "decode_ms": round(outcome.decode_s * 1e3, 3),
            "tail_ms": round(outcome.tail_s * 1e3, 3),
            "server_ms": round((time.perf_counter() - t0) * 1e3, 3), "results": outcome.results,
        }  # fmt: skip
        if single:
            only = outcome.results[0]
            answer.update({k: only[k] for k in ("predicted", "label", "top_k", "guard")})
        return answer

    # -- accounting ---------------------------------------------------------------------------

    def _record(self, outcome: InferOutcome, client: str) -> None:
        self.metrics.packets.inc(len(outcome.results))
        self.metrics.decode_seconds.observe(outcome.decode_s)
        self.metrics.tail_seconds.observe(outcome.tail_s)
        self.count_guard(outcome.decisions, client)
        for d in outcome.decisions:
            self.metrics.payload_bytes.observe(d.payload_bytes)
            if d.decision == "flag":
                log.info("rate guard flagged client=%s payload_bytes=%d threshold_bytes=%.0f "
                         "score=%.3f z=%.1f", client, d.payload_bytes, d.threshold_bytes,
                         d.score, d.z)  # fmt: skip

    def _count_impossible(self, client: str) -> None:
        """A crafted latent counts against its client: the guard's decision
        ``impossible_latent``, and the largest score its sequential test takes."""
        self.metrics.guard_decisions.inc(decision="impossible_latent")
        log.warning("impossible latent refused client=%s", client)
        if self.cusums is not None:
            self.cusums.update(client, [self.config.cusum_clip])

    def count_guard(self, decisions: list[GuardDecision], client: str) -> None:
        """Count the guard's verdicts; log a client's sequential alarm when it is raised."""
        for d in decisions:
            self.metrics.guard_decisions.inc(decision=d.decision)
            if d.client_alarm:
                self.metrics.client_alarm_packets.inc(action=self.config.mode)
            if d.alarm_raised:
                self.metrics.client_alarms.inc()
                log.warning("sequential rate test alarm client=%s cusum=%.2f h=%g k=%g "
                            "payload_bytes=%d z=%.1f action=%s", client, d.cusum or 0.0,
                            self.config.cusum_h, self.config.cusum_k, d.payload_bytes, d.z,
                            self.config.mode)  # fmt: skip

    def _log_refusal(self, exc: _RateAnomaly, client: str) -> None:
        self.count_guard(exc.decisions, client)
        if isinstance(exc, _ClientAlarm):
            log.info("sequential rate test refused client=%s packets=%d cusum=%.2f h=%g",
                     client, len(exc.decisions), exc.decisions[exc.refused[-1]].cusum or 0.0,
                     self.config.cusum_h)  # fmt: skip
            return
        first = exc.decisions[exc.refused[0]]
        log.warning("rate guard refused client=%s packets=%d/%d payload_bytes=%d "
                    "threshold_bytes=%.0f score=%.3f z=%.1f", client, len(exc.refused),
                    len(exc.decisions), first.payload_bytes, first.threshold_bytes,
                    first.score, first.z)  # fmt: skip

    # -- descriptions -------------------------------------------------------------------------

    def health(self) -> dict:
        """``/v1/health``'s answer."""
        return {"status": "ok", "model": self.name, "fingerprint": self.short,
                "uptime_s": round(time.monotonic() - self.started, 3),
                "in_flight": self.in_flight}  # fmt: skip

    def describe(self) -> dict:
        """``/v1/models``'s entry for the served model."""
        return {
            "name": self.name, "fingerprint": self.model.fingerprint,
            "packet_fingerprint": self.short, "spec": self.model.spec.to_dict(),
            "latent_hw": list(self.model.latent_hw), "classes": list(self.engine.classes),
            "clean_payload": self.guard.stats, "guard": self.guard.describe(),
            "limits": asdict(self.limits),
            "capacity_packets_per_s": _rounded(self.capacity_packets_per_s),
            "client_budget_packets_per_s": _rounded(self.packet_budgets.rate),
        }  # fmt: skip


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _charge(budgets: ClientBudgets, client: str, amount: int, what: str, unit: str) -> None:
    """Take ``amount`` from ``client``'s ``what`` budget: 413 over the burst, 429 when short."""
    wait = budgets.consume(client, amount)
    if wait == 0.0:
        return
    if math.isinf(wait):
        raise _over_burst(amount, unit, budgets.burst)
    raise ServeError("rate_limited", f"{what} budget of {budgets.rate:.0f} {unit}/s (burst "
                     f"{budgets.burst:.0f}) spent: retry in {max(wait, 0.01):.2f} s",
                     retry_after_header(wait))  # fmt: skip


def _over_burst(amount: int, unit: str, burst: float) -> ServeError:
    """413 for a request that can never fit its client's budget."""
    return ServeError("too_large", f"a request of {amount} {unit} is larger than the "
                      f"per-client burst of {burst:.0f} {unit}: send fewer packets per "
                      "request")  # fmt: skip
