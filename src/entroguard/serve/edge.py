"""The edge loop: (defend,) encode with the head, send, time, and compare with plain uploads.

For every input image the edge records the packet size on the wire, the round-trip latency,
the server's prediction and guard verdict, and what the same image would cost as raw pixels,
PNG or JPEG (:mod:`~entroguard.serve.uploads`). :func:`summarize` turns the records into the
figures ``entroguard edge`` prints.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from entroguard.errors import InputError
from entroguard.models.split import SplitClassifier
from entroguard.serve.client import EdgeClient, ServerRejectedError
from entroguard.serve.inputs import InputSource
from entroguard.serve.uploads import DEFAULT_JPEG_QUALITY, upload_sizes

Defense = Callable[[SplitClassifier, Tensor], Tensor]


@dataclass
class EdgeRecord:
    """One image's trip. Sizes in bytes, times in milliseconds.

    ``packet_bytes`` is what goes on the wire (header + coder payload), ``payload_bytes`` the
    coder's part of it; ``raw_bytes`` the image uncompressed as the user has it, ``png_bytes``
    and ``jpeg_bytes`` its re-encodings (see :class:`~entroguard.serve.inputs.InputBatch`),
    ``file_bytes`` the user's own file (None for dataset images). ``predicted``/``label``/
    ``prob``/``top_k``/``guard`` are None when the server refused the packet (``error`` then
    holds its reason); ``client_alarm`` is the server's sequential test on this client.
    """

    name: str
    packet_bytes: int
    payload_bytes: int
    raw_bytes: int
    png_bytes: int
    jpeg_bytes: int
    file_bytes: int | None
    encode_ms: float
    latency_ms: float | None
    predicted: int | None
    label: str | None
    prob: float | None
    guard: str | None
    true_label: int | None
    top_k: list[dict] | None = None
    client_alarm: bool | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def check_same_model(model: SplitClassifier, client: EdgeClient) -> dict:
    """The server's model description; :class:`InputError` if it is not ``model``."""
    served = client.models()
    for entry in served:
        if entry.get("fingerprint") == model.fingerprint:
            return entry
    names = ", ".join(f"{m.get('name')} ({str(m.get('fingerprint'))[:8]})" for m in served)
    raise InputError(
        f"the server holds {names or 'no model'}, but the local head is {model.spec.arch}/"
        f"{model.spec.prior} with fingerprint {model.fingerprint[:8]}: give --model the "
        "checkpoint the server was started with"
    )


def load_defense(name: str) -> Defense:
    """The on-device defence ``name`` from :mod:`entroguard.defenses`, as ``f(model, images)``.

    A defence class is built with no arguments and called as ``defence(model, images)`` when
    its ``__call__`` takes two arguments, else as ``defence(images)``.
    """
    from entroguard import defenses

    registry = getattr(defenses, "DEFENSES", {})
    if name not in registry:
        known = ", ".join(sorted(registry)) or "none yet"
        raise InputError(f"unknown defence {name!r} (available: {known})")
    defense = registry[name]()
    params = [
        p
        for p in inspect.signature(defense.__call__).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) >= 2:
        return lambda model, images: defense(model, images)
    return lambda model, images: defense(images)


def run_edge(
    model: SplitClassifier,
    client: EdgeClient,
    source: InputSource,
    *,
    classes: list[str] | None = None,
    defense: Defense | None = None,
    encode_batch: int = 32,
    top_k: int = 1,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    progress: bool = True,
    on_record: Callable[[EdgeRecord], None] | None = None,
) -> list[EdgeRecord]:
    """Send every image of ``source`` to the server, one packet per request.

    Images are defended (optional) and encoded ``encode_batch`` at a time on the device;
    each packet is then sent on its own, so its latency is one request's round trip. Packets
    the rate guard refuses (422) are recorded with their reason; any other refusal, or an
    unreachable server, raises.
    """
    from tqdm.auto import tqdm

    model.eval()
    records: list[EdgeRecord] = []
    with tqdm(total=len(source), desc="edge", unit="img", disable=not progress) as bar:
        for batch in source.batches(encode_batch):
            for common, packet in _encode(model, batch, defense, jpeg_quality):
                record = _send(client, packet, common, top_k, classes)
                records.append(record)
                if on_record is not None:
                    on_record(record)
                bar.update(1)
    return records


def _encode(model: SplitClassifier, batch, defense: Defense | None, jpeg_quality: int):
    """Per image of ``batch``: its record's sizes and encode time, and its packet."""
    images = batch.images
    t0 = time.perf_counter()
    if defense is not None:
        with torch.no_grad():
            images = defense(model, images).detach().clamp(0, 1)
    encoded = model.compress(images)
    packets = model.packets(encoded)
    encode_ms = (time.perf_counter() - t0) * 1e3 / len(packets)
    payloads = encoded.payload_bytes()
    for i, packet in enumerate(packets):
        uploads = upload_sizes(batch.sources[i][None].expand(1, 3, -1, -1), jpeg_quality)
        common = dict(name=batch.names[i], packet_bytes=len(packet),
                      payload_bytes=payloads[i], raw_bytes=batch.raw_bytes[i],
                      png_bytes=int(uploads.png[0]), jpeg_bytes=int(uploads.jpeg[0]),
                      file_bytes=batch.file_bytes[i], encode_ms=encode_ms,
                      true_label=batch.labels[i])  # fmt: skip
        yield common, packet


def _send(client: EdgeClient, packet: bytes, common: dict, top_k: int,
          classes: list[str] | None) -> EdgeRecord:  # fmt: skip
    """One packet's round trip; a rate-guard refusal (422) is a record, anything else raises."""
    try:
        reply = client.infer(packet, top_k=top_k)
    except ServerRejectedError as exc:
        if exc.status != 422:
            raise
        return EdgeRecord(**common, latency_ms=None, predicted=None, label=None, prob=None,
                          guard="refuse", error=exc.reason,
                          client_alarm=exc.reason == "client_alarm")  # fmt: skip
    body = reply.body
    predicted = int(body["predicted"])
    guard = body.get("guard", {})
    return EdgeRecord(
        **common, latency_ms=reply.latency_s * 1e3, predicted=predicted,
        label=body.get("label") or (classes[predicted] if classes else str(predicted)),
        prob=float(body["top_k"][0]["prob"]), guard=guard.get("decision"),
        top_k=body["top_k"], client_alarm=guard.get("client_alarm"),
    )  # fmt: skip


def summarize(records: list[EdgeRecord], wall_s: float | None = None) -> dict:
    """Means per image and latency percentiles over ``records``.

    Returns sizes in bytes per image (``packet_bytes``, ``raw_bytes``, ``png_bytes``,
    ``jpeg_bytes``), how many times smaller the packet is than each (``x_smaller_than_*``),
    latency ``p50_ms``/``p99_ms``/``mean_ms`` of answered requests, ``encode_ms`` (head time
    per image), guard counts, ``accuracy`` where labels are known, and ``images_per_s`` over
    ``wall_s`` when given.
    """
    if not records:
        return {"n": 0}
    packet = np.array([r.packet_bytes for r in records], dtype=np.float64)
    out: dict = {"n": len(records), "packet_bytes": float(packet.mean()),
                 "payload_bytes": float(np.mean([r.payload_bytes for r in records]))}  # fmt: skip
    files = [r.file_bytes for r in records if r.file_bytes is not None]
    if files:  # the user's own files, against the packets of those same images
        files_packets = [r.packet_bytes for r in records if r.file_bytes is not None]
        out["file_bytes"] = float(np.mean(files))
        out["x_smaller_than_file"] = out["file_bytes"] / float(np.mean(files_packets))
    for key in ("raw_bytes", "png_bytes", "jpeg_bytes"):
        mean = float(np.mean([getattr(r, key) for r in records]))
        out[key] = mean
        out[f"x_smaller_than_{key.removesuffix('_bytes')}"] = mean / out["packet_bytes"]
    latencies = np.array([r.latency_ms for r in records if r.latency_ms is not None])
    if latencies.size:
        out["p50_ms"] = float(np.percentile(latencies, 50))
        out["p99_ms"] = float(np.percentile(latencies, 99))
        out["mean_ms"] = float(latencies.mean())
    out["encode_ms"] = float(np.mean([r.encode_ms for r in records]))
    out["answered"] = int(sum(r.predicted is not None for r in records))
    out["flagged"] = int(sum(r.guard == "flag" for r in records))
    out["refused"] = int(sum(r.guard == "refuse" for r in records))
    out["client_alarm"] = int(sum(bool(r.client_alarm) for r in records))
    labelled = [r for r in records if r.true_label is not None and r.predicted is not None]
    if labelled:
        out["labelled"] = len(labelled)
        out["accuracy"] = float(np.mean([r.predicted == r.true_label for r in labelled]))
    if wall_s:
        out["wall_s"] = wall_s
        out["images_per_s"] = len(records) / wall_s
    return out


def format_record(r: EdgeRecord) -> str:
    """One line per image: name, packet and payload bytes, latency, the top-k classes (or the
    refusal) and what the server's guard said about the packet and this client."""
    sizes = f"packet {r.packet_bytes:5d} B (payload {r.payload_bytes:5d} B)"
    alarm = "  [guard: this client is in alarm]" if r.client_alarm else ""
    if r.predicted is None:
        return f"{r.name}  {sizes}        -  refused ({r.error}){alarm}"
    flag = "  [guard: flagged]" if r.guard == "flag" else ""
    ranked = ", ".join(f"{c.get('label', c['class'])} {c['prob']:.2f}" for c in r.top_k or [])
    outcome = ranked or f"{r.label} ({r.prob:.2f})"
    return f"{r.name}  {sizes}  {r.latency_ms:7.2f} ms  {outcome}{flag}{alarm}"


def format_summary(s: dict) -> str:
    """The summary block ``entroguard edge`` prints."""
    if not s.get("n"):
        return "no images sent"
    lines = [
        f"{s['n']} images, {s['answered']} answered, {s['flagged']} flagged, "
        f"{s['refused']} refused by the rate guard, {s['client_alarm']} while this client's "
        "sequential test was in alarm",
        f"bytes per image on the wire: packet {s['packet_bytes']:.1f} (coder payload "
        f"{s['payload_bytes']:.1f}) vs {s['raw_bytes']:.0f} raw ({s['x_smaller_than_raw']:.1f}x), "
        f"{s['png_bytes']:.1f} PNG ({s['x_smaller_than_png']:.1f}x), "
        f"{s['jpeg_bytes']:.1f} JPEG ({s['x_smaller_than_jpeg']:.1f}x)",
    ]
    if "file_bytes" in s:
        lines.append(f"your files: {s['file_bytes']:.1f} bytes per image, "
                     f"{s['x_smaller_than_file']:.1f}x the packets of the same images")  # fmt: skip
    if "p50_ms" in s:
        lines.append(
            f"latency per request: p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms; "
            f"head encode {s['encode_ms']:.2f} ms/image"
        )
    if "accuracy" in s:
        lines.append(f"accuracy: {100 * s['accuracy']:.2f}% over {s['labelled']} labelled answers")
    if "images_per_s" in s:
        lines.append(f"throughput: {s['images_per_s']:.1f} images/s over {s['wall_s']:.1f} s")
    return "\n".join(lines)
