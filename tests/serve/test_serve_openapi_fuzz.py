"""Schema-driven fuzzing of the live server from its own OpenAPI document (schemathesis).

Every operation is called with generated parameters, headers and bodies, valid and invalid;
the server must never answer 5xx, and every answer must match the document (status codes,
content types, JSON schemas, including the error contract). One check is left out: a body the
document allows (any bytes) is not a packet, and refusing it with 400 is right.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from serve_helpers import ServerProcess, save_model

from entroguard.serve.framing import BATCH_CONTENT_TYPE
from entroguard.serve.openapi import openapi_document

pytestmark = pytest.mark.slow

schemathesis.serializer.alias(BATCH_CONTENT_TYPE, "application/octet-stream")  # raw bytes
schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def server(tmp_path_factory, fp_model, fp_stats):
    workdir = tmp_path_factory.mktemp("openapi")
    process = ServerProcess(save_model(fp_model, workdir / "tiny-fp", fp_stats), workdir,
                            "--client-budget-packets-per-s", "0")  # fmt: skip
    yield process
    process.stop()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_matches_the_document_and_none_is_5xx(case, server):
    case.call_and_validate(base_url=server.url, excluded_checks=[positive_data_acceptance])
    assert server.alive(), server.log()


def test_the_server_serves_the_document(server):
    import httpx

    assert httpx.get(server.url + "/v1/openapi.json").json() == openapi_document()
