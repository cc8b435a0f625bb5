"""What the server does with packets: parse, guard, check and decode, run the tail, rank.

No HTTP here: :class:`TailEngine` takes packet bytes and returns plain dicts, raising
:class:`~entroguard.serve.errors.ServeError` for anything it refuses. It is synchronous and
meant to run in a worker thread; the model is only read, never changed, after construction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from entroguard.codec.rans import BitstreamError
from entroguard.errors import InputError, ModelMismatchError
from entroguard.models.latent_bounds import LatentCheck, latent_check
from entroguard.models.split import EncodedBatch, SplitClassifier
from entroguard.packet import PacketError
from entroguard.privacy.keyed import (
    KeyedProtection,
    SplitKey,
    check_protection,
    recover_batch,
    verify_tags,
)
from entroguard.serve.errors import ServeError
from entroguard.serve.guard import GuardDecision, RateGuard
from entroguard.serve.sequential import ClientCusums

DEFAULT_TOP_K = 5
CLIENT_ALARM_DETAIL = "this client's sequential rate test"
"""How the detail of a 422 for a client in alarm begins (the edge client shows it as such)."""


@dataclass
class InferOutcome:
    """One request's answer and what the server measured.

    Attributes:
        results: one dict per packet: predicted class, top-k, sizes, guard verdict.
        decisions: the guard verdict per packet.
        decode_s: checking + entropy decoding time, seconds.
        tail_s: tail (``g_s`` + backbone) time, seconds.
    """

    results: list[dict]
    decisions: list[GuardDecision]
    decode_s: float
    tail_s: float

    @staticmethod
    def join(parts: Sequence[InferOutcome]) -> InferOutcome:
        """One outcome of a request run in ``parts``, in order (times added up)."""
        results = [r for p in parts for r in p.results]
        decisions = [d for p in parts for d in p.decisions]
        decode_s, tail_s = sum(p.decode_s for p in parts), sum(p.tail_s for p in parts)
        return InferOutcome(results, decisions, decode_s, tail_s)


class TailEngine:
    """The server half of a split model, behind the rate guard.

    Args:
        model: the split model (its head is never used); put in eval mode. Its codec refuses
            coder strings that cannot be decoded (``BitstreamError``, answered 400
            ``undecodable``) before CompressAI's decoder reads them.
        guard: the rate guard scoring each packet's payload.
        sequential: the per-client sequential test fed with each packet's score (None: off).
        classes: class names, index = class id (None: names are the ids as strings).
        max_packet_bytes: largest single packet accepted, bytes.
        model_lock: if True, one request uses the model at a time (fewer, larger bursts of
            CPU; the default), else requests run the model concurrently.
    """

    def __init__(
        self,
        model: SplitClassifier,
        guard: RateGuard,
        *,
        classes: Sequence[str] | None = None,
        max_packet_bytes: int = 1 << 20,
        model_lock: bool = True,
        sequential: ClientCusums | None = None,
        setting_guards: Mapping[tuple[int, int], RateGuard] | None = None,
        keyed: tuple[KeyedProtection, SplitKey] | None = None,
    ) -> None:
        self.model = model.eval()
        self.guard = guard
        self.setting_guards = dict(setting_guards or {})
        self.keyed = keyed
        if keyed is not None:
            check_protection(model, keyed[0])
        self.sequential = sequential
        k = model.spec.num_classes
        self.classes = list(classes) if classes is not None else [str(i) for i in range(k)]
        if len(self.classes) != k:
            raise ValueError(f"{len(self.classes)} class names for a {k}-class model")
        self.max_packet_bytes = int(max_packet_bytes)
        self.latent_check = latent_check(model)  # None: this head cannot be bounded
        self._lock = threading.Lock() if model_lock else None
        _ = model.latent_hw  # computed once here, not concurrently in requests

    def parse(self, packets: Sequence[bytes]) -> EncodedBatch:
        """Parse untrusted packets and check they belong to this model (400 / 409 / 413)."""
        try:
            batch = self.model.packets_to_batch(
                packets, keyed=self.keyed is not None, max_bytes=self.max_packet_bytes
            )
            if self.keyed is not None:
                verify_tags(batch, self.keyed[1])
        except PacketError as exc:
            raise ServeError(exc.reason, _one(packets, str(exc))) from None
        except ModelMismatchError as exc:
            raise ServeError("model_mismatch", _one(packets, str(exc))) from None
        except InputError as exc:
            raise ServeError("bad_batch", _one(packets, str(exc))) from None
        return batch

    def judge(self, encoded: EncodedBatch, client: str | None = None) -> list[GuardDecision]:
        """The guard's verdict on every packet; 422 ``rate_anomaly`` if any is refused, 422
        ``client_alarm`` if the client's sequential test refuses it.

        With a sequential test and a ``client``, every packet's score is added to the
        client's statistic (refused packets too, so a client in alarm that goes back to clean
        packets leaves the alarm); in ``refuse`` mode the request is refused if the client is
        in alarm after any of its packets.
        """
        settings = encoded.settings or [None] * len(encoded.strings)
        decisions = [
            self.setting_guards.get(setting, self.guard).score(n)
            for n, setting in zip(encoded.payload_bytes(), settings, strict=True)
        ]
        if self.sequential is not None and client is not None:
            steps = self.sequential.update(client, [d.z for d in decisions])
            decisions = [
                replace(d, client_alarm=s.alarm, cusum=s.statistic, alarm_raised=s.raised)
                for d, s in zip(decisions, steps, strict=True)
            ]
        refused = [i for i, d in enumerate(decisions) if d.decision == "refuse"]
        if refused:
            d = decisions[refused[0]]
            raise _RateAnomaly(decisions, refused, d)
        alarmed = [i for i, d in enumerate(decisions) if d.client_alarm]
        if alarmed and self.sequential is not None and self.guard.config.mode == "refuse":
            raise _ClientAlarm(decisions, alarmed, self.sequential)
        return decisions

    def admit(
        self, packets: Sequence[bytes], client: str | None = None
    ) -> tuple[EncodedBatch, list[GuardDecision]]:
        """Parse and judge ``packets`` from ``client``: the batch to :meth:`run` and each
        packet's verdict; raises :class:`ServeError` for refused input."""
        if not packets:
            raise ServeError("empty", "no packet in the request")
        encoded = self.parse(packets)
        return encoded, self.judge(encoded, client)

    def run(self, encoded: EncodedBatch, decisions: list[GuardDecision],
            top_k: int = DEFAULT_TOP_K, first_index: int = 0) -> InferOutcome:  # fmt: skip
        """Decode and classify admitted packets (:meth:`admit`); results are numbered from
        ``first_index`` (a request cut into several runs)."""
        top_k = max(1, min(int(top_k), len(self.classes)))
        if self._lock is None:
            return self._run(encoded, decisions, top_k, first_index)
        with self._lock:
            return self._run(encoded, decisions, top_k, first_index)

    def infer(
        self, packets: Sequence[bytes], top_k: int = DEFAULT_TOP_K, client: str | None = None
    ) -> InferOutcome:
        """Classify ``packets`` (1 or more) from ``client`` (its sequential test; None: none);
        raises :class:`ServeError` for refused input."""
        return self.run(*self.admit(packets, client), top_k)

    def _check_possible(self, y_hat, encoded: EncodedBatch, first_index: int) -> None:
        if self.latent_check is not None:
            rates = [s[1] for s in encoded.settings] if encoded.settings else [None] * len(y_hat)
            _check_possible_latents(y_hat, self.latent_check, rates, first_index)

    @torch.no_grad()
    def _run(self, encoded: EncodedBatch, decisions: list[GuardDecision], top_k: int,
             first_index: int) -> InferOutcome:  # fmt: skip
        t0 = time.perf_counter()
        try:
            y_hat = self.model.decompress(encoded)
            if self.keyed is not None:
                protection, key = self.keyed  # tags were verified in parse()
                nonces = [nonce for nonce, _ in encoded.keyed or []]
                y_hat = recover_batch(y_hat, nonces, protection, key)
        except BitstreamError as exc:
            raise ServeError(
                exc.reason, f"the coder payload cannot be decoded by this model: {exc}"
            ) from None
        self._check_possible(y_hat, encoded, first_index)
        t1 = time.perf_counter()
        logits = self.model.classify(y_hat)
        t2 = time.perf_counter()
        if not torch.isfinite(logits).all():
            raise ServeError(
                "undecodable",
                "the payload decodes to a latent the model cannot classify (non-finite "
                "output): it was not produced by this model's head",
            )
        probs = torch.softmax(logits.double(), dim=1)
        top_p, top_i = probs.topk(top_k, dim=1)
        sizes = encoded.payload_bytes()
        capped = encoded.capped or [0] * len(sizes)
        results = []
        for row in range(len(sizes)):
            ids = top_i[row].tolist()
            ps = top_p[row].tolist()
            results.append(
                {
                    "index": first_index + row,
                    "predicted": ids[0],
                    "label": self.classes[ids[0]],
                    "top_k": [
                        {"class": c, "label": self.classes[c], "prob": round(p, 6)}
                        for c, p in zip(ids, ps, strict=True)
                    ],
                    "payload_bytes": sizes[row],
                    "capped_share": round(capped[row] / 255, 4),
                    "guard": decisions[row].to_dict(),
                }
            )
        return InferOutcome(results, decisions, t1 - t0, t2 - t1)


def _check_possible_latents(y_hat, check: LatentCheck, rates: list, first_index: int) -> None:
    """400 ``impossible_latent`` for the first decoded latent no image could make."""
    excess = check.excess(y_hat, rates)
    bad = torch.nonzero(excess > 0).flatten()
    if len(bad):
        i = int(bad[0])
        low, high = check.boxes[rates[i]]
        raise ServeError(
            "impossible_latent",
            f"packet {first_index + i} decodes to latent values {float(excess[i]):.4g} beyond "
            f"what this model's head produces from any image (within [{float(low.min()):.1f}, "
            f"{float(high.max()):.1f}]): it was crafted, not coded by this head",
        )


class _RateAnomaly(ServeError):
    """422 ``rate_anomaly``, keeping the verdicts for metrics and logs."""

    def __init__(self, decisions: list[GuardDecision], refused: list[int], first: GuardDecision):
        which = f"packet {refused[0]}" if len(decisions) > 1 else "the packet"
        more = f" ({len(refused)} of {len(decisions)} packets)" if len(refused) > 1 else ""
        super().__init__(
            "rate_anomaly",
            f"{which} carries {first.payload_bytes} payload bytes, over the rate guard's "
            f"{first.threshold_bytes:.0f}-byte threshold for this model{more}: such packets are "
            "far above clean images; check the device for tampered inputs",
        )
        self.decisions = decisions
        self.refused = refused


class _ClientAlarm(_RateAnomaly):
    """422 ``client_alarm``: the client's sequential test is in alarm (not one packet's size,
    so that metrics and clients tell the two refusals apart)."""

    def __init__(
        self, decisions: list[GuardDecision], alarmed: list[int], sequential: ClientCusums
    ):
        last = decisions[alarmed[-1]]
        ServeError.__init__(
            self,
            "client_alarm",
            f"{CLIENT_ALARM_DETAIL} (CUSUM over its packets) is in alarm: "
            f"statistic {last.cusum or 0.0:.1f} over h = {sequential.h:g} clean std; its packets "
            "have carried more payload than clean images for a while. They are refused until "
            f"the statistic falls back below h (each packet of clean size lowers it by about "
            f"{sequential.k:g}) or after {sequential.cooldown_s:g} s without packets; check the "
            "device for tampered inputs",
        )
        self.decisions = decisions
        self.refused = alarmed


def _one(packets: Sequence[bytes], message: str) -> str:
    """``message`` naming a packet by its index, without the index for a single packet."""
    if len(packets) > 1:
        return message
    if message.startswith("packet 0: "):
        return message.removeprefix("packet 0: ")
    return "the packet" + message.removeprefix("packet 0") if message.startswith("packet 0 ") \
        else message  # fmt: skip
