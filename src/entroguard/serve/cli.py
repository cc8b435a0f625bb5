"""``entroguard serve`` and ``entroguard edge``: typer command functions.

Register them in the main CLI with::

    from entroguard.serve.cli import edge_command, serve_command

    app.command("serve")(serve_command)
    app.command("edge")(edge_command)

Heavy imports (torch, FastAPI, uvicorn) happen inside the functions, so ``entroguard --help``
stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from entroguard.device import DEVICE_HELP
from entroguard.errors import EntroguardError, InputError
from entroguard.serve.body import DEFAULT_MAX_BODY_BYTES
from entroguard.serve.framing import DEFAULT_MAX_BATCH
from entroguard.serve.guard import (
    DEFAULT_BUDGET_BYTES_PER_S,
    DEFAULT_BURST_BYTES,
    DEFAULT_GUARD_MULTIPLE,
    DEFAULT_GUARD_QUANTILE,
)
from entroguard.serve.runner import DEFAULT_HOST, DEFAULT_PORT
from entroguard.serve.sequential import (
    DEFAULT_CUSUM_CLIP,
    DEFAULT_CUSUM_COOLDOWN_S,
    DEFAULT_CUSUM_H,
    DEFAULT_CUSUM_K,
)
from entroguard.serve.uploads import DEFAULT_JPEG_QUALITY

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def serve_command(
    model: Annotated[
        str, typer.Option(help="Zoo model name (entroguard zoo lists them) or checkpoint path.")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option(help="TCP port (0: any free port, printed).", min=0, max=65535)
    ] = DEFAULT_PORT,
    zoo_dir: Annotated[
        Path | None, typer.Option(help="Folder of zoo checkpoints (default: the shipped zoo).")
    ] = None,
    guard_mode: Annotated[
        Literal["flag", "refuse", "off"],
        typer.Option(help="Rate guard: flag (answer and mark), refuse (422) or off."),
    ] = "flag",
    guard_quantile: Annotated[
        float,
        typer.Option(
            help="Clean payload quantile the threshold starts from (0.5, 0.9, "
            "0.99, 0.999; 1 = the clean max)."
        ),
    ] = DEFAULT_GUARD_QUANTILE,
    guard_multiple: Annotated[
        float, typer.Option(help="Threshold = clean quantile x this multiple (bytes).")
    ] = DEFAULT_GUARD_MULTIPLE,
    guard_cusum: Annotated[
        bool,
        typer.Option(
            help="Per-client sequential test (CUSUM over each client's packet sizes): flags or "
            "refuses, per --guard-mode, clients whose packets stay larger than clean ones."
        ),
    ] = True,
    guard_cusum_k: Annotated[
        float,
        typer.Option(
            help="CUSUM reference value, clean payload std per packet: packets more than k std "
            "above the clean mean raise the statistic."
        ),
    ] = DEFAULT_CUSUM_K,
    guard_cusum_h: Annotated[
        float, typer.Option(help="CUSUM alarm threshold, clean payload std.")
    ] = DEFAULT_CUSUM_H,
    guard_cusum_clip: Annotated[
        float, typer.Option(help="Each packet's score is clipped to +-this, clean payload std.")
    ] = DEFAULT_CUSUM_CLIP,
    guard_cusum_cooldown_s: Annotated[
        float, typer.Option(help="A client silent this long starts its CUSUM again, seconds.")
    ] = DEFAULT_CUSUM_COOLDOWN_S,
    client_budget_bytes_per_s: Annotated[
        float, typer.Option(help="Per-client byte budget refill rate, bytes/s (0: no budget).")
    ] = DEFAULT_BUDGET_BYTES_PER_S,
    client_burst_bytes: Annotated[
        float, typer.Option(help="Per-client byte budget bucket size, bytes.")
    ] = DEFAULT_BURST_BYTES,
    max_body_bytes: Annotated[
        int, typer.Option(help="Largest request body, bytes.")
    ] = DEFAULT_MAX_BODY_BYTES,
    max_batch: Annotated[int, typer.Option(help="Most packets per request.")] = DEFAULT_MAX_BATCH,
    max_in_flight: Annotated[
        int, typer.Option(help="Most inference requests at once (more get 503).")
    ] = 256,
    max_in_flight_per_client: Annotated[
        int, typer.Option(help="Most inference requests of one client at once (more get 429).")
    ] = 16,
    torch_threads: Annotated[int, typer.Option(help="torch intra-op threads.")] = 1,
    model_threads: Annotated[
        int, typer.Option(help="Worker threads running the tail at once.")
    ] = 1,
    client_budget_packets_per_s: Annotated[
        float | None,
        typer.Option(
            help="Per-client packet budget, packets/s (default: half the capacity "
            "measured at start-up; 0: no budget)."
        ),
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            help="Address of a reverse proxy whose X-Client-Id header names the "
            "client (repeatable); other clients are their peer address.",
            metavar="ADDRESS",
        ),
    ] = None,
    header_timeout_s: Annotated[
        float, typer.Option(help="Request headers must arrive within this, seconds.")
    ] = 10.0,
    body_timeout_s: Annotated[
        float, typer.Option(help="A request body must arrive within this, seconds.")
    ] = 10.0,
    max_connections_per_client: Annotated[
        int, typer.Option(help="Open connections per client address (proxies exempt).")
    ] = 16,
    dataset: Annotated[
        str | None,
        typer.Option(help="Dataset to measure clean payload sizes on if the checkpoint has none."),
    ] = None,
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"], typer.Option(help="Server log level.")
    ] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
    device: Annotated[str, typer.Option(help="Where the tail runs: " + DEVICE_HELP)] = "cpu",
) -> None:
    """Serve a split model's tail over HTTP (POST /v1/infer), behind a rate guard."""
    import logging

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = dict(locals())
    try:
        import torch

        from entroguard.serve.runner import bind_socket, socket_url

        torch.set_num_threads(max(1, torch_threads))
        service = _build_service(options)
        sock = bind_socket(host, port, backlog=service.limits.connections.backlog)
    except (EntroguardError, ValueError, OSError) as exc:
        _fail(exc)
        return
    _print_banner(service, socket_url(sock), host)
    from entroguard.serve.app import app_for
    from entroguard.serve.runner import serve_forever

    serve_forever(app_for(service), sock, log_level=log_level.lower(), access_log=access_log)


def _build_service(o: dict):
    """The :class:`~entroguard.serve.service.Service` the ``serve`` options describe."""
    from entroguard.models.slimmable import setting_clean_stats
    from entroguard.serve.guard import GuardConfig
    from entroguard.serve.protocol import ConnectionLimits
    from entroguard.serve.resolve import clean_stats_for, load_served_model
    from entroguard.serve.service import ServeLimits, Service

    guard_config = GuardConfig(
        mode=o["guard_mode"], quantile=o["guard_quantile"], multiple=o["guard_multiple"],
        budget_bytes_per_s=o["client_budget_bytes_per_s"], burst_bytes=o["client_burst_bytes"],
        cusum=o["guard_cusum"], cusum_k=o["guard_cusum_k"], cusum_h=o["guard_cusum_h"],
        cusum_clip=o["guard_cusum_clip"], cusum_cooldown_s=o["guard_cusum_cooldown_s"],
    )  # fmt: skip
    connections = ConnectionLimits(
        header_timeout_s=o["header_timeout_s"], body_timeout_s=o["body_timeout_s"],
        max_connections_per_client=o["max_connections_per_client"],
        trusted_proxies=tuple(o["trusted_proxy"] or ()),
    )  # fmt: skip
    limits = ServeLimits(
        max_body_bytes=o["max_body_bytes"], max_packet_bytes=o["max_body_bytes"],
        max_batch=o["max_batch"], max_in_flight=o["max_in_flight"],
        max_in_flight_per_client=o["max_in_flight_per_client"],
        model_threads=o["model_threads"], budget_packets_per_s=o["client_budget_packets_per_s"],
        connections=connections,
    )  # fmt: skip
    served = load_served_model(o["model"], o["zoo_dir"], o["device"])
    stats = None if o["guard_mode"] == "off" else clean_stats_for(served, dataset=o["dataset"])
    per_setting = setting_clean_stats(served.metadata) if stats else None
    return Service(served.model, guard_config, limits, name=served.name, classes=served.classes,
                   clean_stats=stats, setting_stats=per_setting)  # fmt: skip


def _print_banner(service, url: str, host: str) -> None:
    """What is served where, and behind which guard and budgets."""
    c = service.config
    if c.mode == "off":
        guard_text = "rate guard off"
    else:
        guard_text = (f"rate guard: {c.mode} packets over {service.guard.threshold_bytes:.0f} "
                      f"payload bytes (clean q{c.quantile:g} x {c.multiple:g})")  # fmt: skip
        guard_text += (f"; per-client CUSUM k {c.cusum_k:g}, h {c.cusum_h:g} (clean std), "
                       f"cool-down {c.cusum_cooldown_s:g} s" if c.cusum
                       else "; per-client CUSUM off")  # fmt: skip
    budgets = [f"{b.rate:.0f} {unit}/s, burst {b.burst:.0f}"
               for b, unit in ((service.byte_budgets, "B"), (service.packet_budgets, "packets"))
               if b.enabled]  # fmt: skip
    budget_text = "client budgets " + " and ".join(budgets) if budgets else "no client budget"
    if service.capacity_packets_per_s:
        budget_text += f" (measured capacity {service.capacity_packets_per_s:.0f} packets/s)"
    typer.echo(f"entroguard serve: {service.name} (fingerprint {service.model.fingerprint[:8]}) "
               f"on {url}\n  {guard_text}; {budget_text}")  # fmt: skip
    if host not in LOOPBACK:
        typer.secho(
            f"  listening on {host}: reachable from other machines; there is no TLS or "
            "authentication, put it behind a proxy that provides them",
            fg=typer.colors.YELLOW,
            err=True,
        )
    sys.stdout.flush()


def edge_command(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders of images, or 'test' (the model's test set).",
            metavar="INPUTS",
        ),
    ],
    model: Annotated[
        str, typer.Option(help="Zoo model name or checkpoint path (the same as the server's).")
    ],
    server: Annotated[str, typer.Option(help="Server base URL.")] = (
        f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
    ),
    zoo_dir: Annotated[
        Path | None, typer.Option(help="Folder of zoo checkpoints (default: the shipped zoo).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Send only the first N images.")] = None,
    defense: Annotated[
        str | None, typer.Option(help="On-device defence applied before encoding.")
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="X-Client-Id sent to the server (its byte budget key).")
    ] = None,
    top_k: Annotated[int, typer.Option(help="Classes to ask the server for.")] = 1,
    encode_batch: Annotated[int, typer.Option(help="Images the head encodes at once.")] = 32,
    jpeg_quality: Annotated[
        int, typer.Option(help="JPEG quality of the upload baseline.")
    ] = DEFAULT_JPEG_QUALITY,
    retries: Annotated[int, typer.Option(help="Retries on 429/503 and connection errors.")] = 5,
    timeout: Annotated[float, typer.Option(help="Per-request timeout, seconds.")] = 30.0,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print only the summary.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every record and the summary as JSON, only.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Also write every record and the summary as JSON here.")
    ] = None,
    deadline_ms: Annotated[
        float | None,
        typer.Option(
            help="Slimmable heads: pick the setting per request to meet this deadline "
            "(ms), and compare with fixed settings."
        ),  # fmt: skip
    ] = None,
    link_trace: Annotated[
        str | None,
        typer.Option(
            help="With --deadline-ms: simulate the uplink, Mbit/s per request, "
            "comma-separated and cycled (default: the real network)."
        ),  # fmt: skip
    ] = None,
    rtt_ms: Annotated[float, typer.Option(help="With --link-trace: round-trip time, ms.")] = 0.0,
    figure: Annotated[
        Path | None, typer.Option(help="With --deadline-ms: write the run as a PNG figure.")
    ] = None,
    device: Annotated[str, typer.Option(help="Where the head runs: " + DEVICE_HELP)] = "cpu",
    byte_cap: Annotated[
        int | None,
        typer.Option(
            help="Hard cap on every payload, bytes: the head resets the latent's "
            "costliest symbols of a packet over it (format-5 packets)."
        ),
    ] = None,
) -> None:
    """Encode images with the head on this device, send them to a server, and report.

    With --deadline-ms and a slimmable model the edge chooses each request's setting from an
    EWMA of the measured bandwidth (see entroguard.serve.deadline) and compares deadline hits,
    accuracy and bytes with fixed settings over the same link.
    """
    import time

    if deadline_ms is not None:
        _deadline_edge(inputs, model, server, zoo_dir, limit, deadline_ms, link_trace, rtt_ms,
                       (as_json, out), figure, device)  # fmt: skip
        return
    try:
        from tqdm.auto import tqdm

        from entroguard.serve.client import EdgeClient
        from entroguard.serve.edge import (
            check_same_model,
            format_record,
            format_summary,
            load_defense,
            run_edge,
            summarize,
        )
        from entroguard.serve.inputs import InputSource
        from entroguard.serve.resolve import load_served_model

        served = load_served_model(model, zoo_dir, device)
        served.model.set_byte_cap(byte_cap)
        source = InputSource(
            inputs,
            served.model.spec.input_size,
            default_dataset=served.metadata.get("dataset"),
            limit=limit,
        )
        defend = load_defense(defense) if defense else None
        with EdgeClient(server, client_id=client_id, timeout_s=timeout, retries=retries) as client:
            check_same_model(served.model, client)
            on_record = None if quiet or as_json else (lambda r: tqdm.write(format_record(r)))
            t0 = time.perf_counter()
            records = run_edge(
                served.model,
                client,
                source,
                classes=served.classes,
                defense=defend,
                encode_batch=encode_batch,
                top_k=top_k,
                jpeg_quality=jpeg_quality,
                progress=progress,
                on_record=on_record,
            )
            summary = summarize(records, time.perf_counter() - t0)
            summary["retries"] = client.retried
    except (EntroguardError, ValueError) as exc:
        _fail(exc)
        return
    payload = {"model": served.name, "server": server, "summary": summary,
               "records": [r.to_dict() for r in records]}  # fmt: skip
    _emit(payload, format_summary(summary), as_json, out)


def _emit(payload: dict, text: str, as_json: bool, out: Path | None) -> None:
    """``text`` (or, with ``--json``, ``payload`` as JSON instead) on stdout; ``payload`` as
    JSON into ``out`` when given."""
    typer.echo(json.dumps(payload, indent=2) if as_json else text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2) + "\n")
        if not as_json:
            typer.echo(f"wrote {out}")


def _deadline_edge(inputs, model, server, zoo_dir, limit, deadline_ms, link_trace, rtt_ms,
                   outputs: tuple[bool, Path | None], figure, device: str) -> None:  # fmt: skip
    """``entroguard edge --deadline-ms``: adaptive against fixed settings, one table."""

    try:
        from entroguard.models.slimmable import SlimmableSplitClassifier
        from entroguard.serve.client import EdgeClient
        from entroguard.serve.deadline import (
            compare_on_trace,
            measure_device_ms,
            setting_profiles,
        )
        from entroguard.serve.edge import check_same_model
        from entroguard.serve.inputs import InputSource
        from entroguard.serve.resolve import load_served_model

        served = load_served_model(model, zoo_dir, device)
        head = served.model
        if not isinstance(head, SlimmableSplitClassifier):
            raise InputError(f"--deadline-ms needs a slimmable model; {served.name} has one "
                             "setting (entroguard zoo lists the -slim- models)")  # fmt: skip
        trace = [float(v) for v in link_trace.split(",")] if link_trace else None
        dataset = served.metadata.get("dataset")
        source = InputSource(inputs, head.spec.input_size, default_dataset=dataset, limit=limit)
        batches = list(source.batches(len(source)))
        images, labels = batches[0].images, batches[0].labels
        with EdgeClient(server, retries=0) as client:
            check_same_model(head, client)
        profiles = setting_profiles(head, served.metadata, measure_device_ms(head, images[:1]))
        members = head.largest[0]
        fixed = [(members, r) for r in range(head.codec.settings)] + [head.settings[0]]
        rows = compare_on_trace(head, profiles, server, images,
                                None if any(v is None for v in labels) else labels,
                                deadline_ms=deadline_ms, trace_mbps=trace, rtt_ms=rtt_ms,
                                fixed=fixed)  # fmt: skip
    except (EntroguardError, ValueError) as exc:
        _fail(exc)
        return
    from entroguard.report.table import format_table

    table = [{"policy": r["policy"], "deadline hits %": round(100 * r["deadline_hits"], 1),
              "accuracy %": None if r["accuracy"] is None else round(100 * r["accuracy"], 2),
              "packet B": round(r["packet_bytes"], 1), "mean ms": round(r["mean_total_ms"], 1)}
             for r in rows]  # fmt: skip
    text = (format_table(table, list(table[0]))
            + f"\nadaptive settings used: {rows[0]['settings_used']}")  # fmt: skip
    if figure is not None:
        from entroguard.serve.deadline_figure import write_deadline_figure

        text += f"\nwrote {write_deadline_figure(rows, deadline_ms, figure)}"
    payload = {"model": served.name, "deadline_ms": deadline_ms, "trace_mbps": trace,
               "rtt_ms": rtt_ms, "policies": rows}  # fmt: skip
    _emit(payload, text, *outputs)
