"""The server's HTTP API as an OpenAPI 3.0 document (served at ``GET /v1/openapi.json``).

Written by hand rather than generated from the routes: the routes read raw bodies (packets are
bytes, not JSON) and answer with the error contract of :mod:`~entroguard.serve.errors`, which
FastAPI's generator cannot see. The fuzz tests drive the live server from this document
(schemathesis), so it is checked against the server on every test run.
"""

from __future__ import annotations

from entroguard.serve.errors import REASONS
from entroguard.serve.framing import BATCH_CONTENT_TYPE, PACKET_CONTENT_TYPE

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["status", "reason", "detail"],
        "properties": {
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "reason": {"type": "string", "enum": sorted(REASONS)},
            "detail": {"type": "string"},
        },
    }},
}  # fmt: skip

_GUARD = {
    "type": "object",
    "required": ["decision", "score", "threshold_bytes", "client_alarm"],
    "properties": {
        "decision": {"type": "string", "enum": ["pass", "flag", "refuse"]},
        "score": {"type": "number", "nullable": True},
        "threshold_bytes": {"type": "number", "nullable": True},
        "client_alarm": {"type": "boolean"},
        "cusum": {"type": "number", "nullable": True},
    },
}

_RESULT = {
    "type": "object",
    "required": ["index", "predicted", "label", "top_k", "payload_bytes", "guard"],
    "properties": {
        "index": {"type": "integer", "minimum": 0},
        "predicted": {"type": "integer", "minimum": 0},
        "label": {"type": "string"},
        "top_k": {"type": "array", "items": {"type": "object", "required": ["class", "prob"]}},
        "payload_bytes": {"type": "integer", "minimum": 0},
        "capped_share": {"type": "number", "minimum": 0, "maximum": 1},
        "guard": _GUARD,
    },
}

_ANSWER = {
    "type": "object",
    "required": ["model", "fingerprint", "bytes_received", "n", "server_ms", "results"],
    "properties": {
        "model": {"type": "string"},
        "fingerprint": {"type": "string"},
        "bytes_received": {"type": "integer", "minimum": 0},
        "n": {"type": "integer", "minimum": 1},
        "decode_ms": {"type": "number"},
        "tail_ms": {"type": "number"},
        "server_ms": {"type": "number"},
        "results": {"type": "array", "items": _RESULT},
    },
}


def _errors(*statuses: int) -> dict:
    return {str(s): {"description": "refused (see reason)",
                     "content": {"application/json": {"schema": _ERROR}}}
            for s in statuses}  # fmt: skip


def _json(description: str, schema: dict | None = None) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": schema or {"type": "object"}}}}  # fmt: skip


def _infer() -> dict:
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {"post": {
        "summary": "Classify one packet, or a batch of length-prefixed packets",
        "parameters": [
            {"name": "top_k", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            {"name": "X-Client-Id", "in": "header", "schema": {"type": "string"},
             "description": "The client's name; trusted only from configured proxies"},
        ],
        "requestBody": {"required": True,
                        "content": {PACKET_CONTENT_TYPE: binary, BATCH_CONTENT_TYPE: binary}},
        "responses": {"200": _json("one result per packet", _ANSWER),
                      **_errors(400, 408, 409, 413, 415, 422, 429, 503)},
    }}  # fmt: skip


def openapi_document() -> dict:
    """The OpenAPI 3.0.3 description of ``/v1/infer``, ``/v1/health``, ``/v1/models``,
    ``/metrics`` and this document."""
    from entroguard import __version__

    text = {"description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}}}  # fmt: skip
    return {
        "openapi": "3.0.3",
        "info": {"title": "entroguard split-inference server", "version": __version__},
        "paths": {
            "/v1/infer": _infer(),
            "/v1/health": {"get": {"responses": {"200": _json("liveness")}}},
            "/v1/models": {"get": {"responses": {"200": _json("the served model")}}},
            "/v1/openapi.json": {"get": {"responses": {"200": _json("this document")}}},
            "/metrics": {"get": {"responses": {"200": text}}},
        },
    }
