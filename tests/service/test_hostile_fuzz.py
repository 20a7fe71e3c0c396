"""Fuzz the API from its own OpenAPI document with schemathesis: no 500, every answer as documented.

The app runs in process (ASGI) on the real Redis and ``weed`` S3, with a resolver double for
webhook hosts (no DNS). Each operation gets valid and invalid inputs (positive and negative
generation), with a valid API key and without one; every response must be a declared status with
the declared content type, body schema and headers. Bounded: a fixed number of examples per
operation, so the whole module runs in well under a minute.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from ipfvr.devstack import S3Server
from jobs.settings import Settings
from jobs.tenants.accounts import Tenants
from tests.service.stack import on_test_services

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES = 25  # per operation and generation mode (about one in ten without a valid key)


def resolver_double(host: str, port: int) -> list[str]:
    """Every webhook host "resolves" to a documentation address (refused) or a public one by its first letter."""
    return ["192.0.2.10"] if host[:1] in "abcdefghijklm" else ["93.184.216.34"]


@pytest.fixture(scope="module")
def fuzz_settings(s3_server: S3Server, redis_url: str, redis_prefix: Callable[[], str]) -> Settings:
    prefix = redis_prefix()
    values: dict[str, Any] = on_test_services(s3_server, redis_url, prefix, "ipfvr-f-") | {
        "webhook_allow_private": False,
        "rate_limit_per_s": 1000.0,
        "rate_limit_burst": 1000,
        "max_queued_per_tenant": 5,
    }
    return Settings(**{k: v for k, v in values.items() if v is not None})


@pytest.fixture(scope="module")
def fuzz_app(fuzz_settings: Settings) -> Iterator[FastAPI]:
    app = create_app(fuzz_settings, resolver=resolver_double, configure_logs=False)
    yield app
    app.state.services.close()


@pytest.fixture(scope="module")
def api_key(fuzz_settings: Settings) -> str:
    client = redis.Redis.from_url(fuzz_settings.redis_url, decode_responses=True)
    return Tenants(client, fuzz_settings.key_prefix, fuzz_settings.effective_secret_key).create_key(
        f"fuzz{secrets.token_hex(3)}"
    )


OPERATIONS = [
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{job_id}"),
    ("DELETE", "/v1/jobs/{job_id}"),
    ("POST", "/v1/jobs/{job_id}/cancel"),
    ("GET", "/v1/jobs/{job_id}/report"),
    ("POST", "/v1/identities"),
    ("GET", "/v1/identities"),
    ("GET", "/v1/identities/{identity_id}"),
    ("DELETE", "/v1/identities/{identity_id}"),
    ("POST", "/v1/uploads"),
    ("GET", "/v1/webhooks/secret"),
    ("POST", "/v1/webhooks/secret/rotate"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
]


@pytest.fixture(scope="module")
def api_schema(fuzz_app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


def test_every_operation_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    documented = {(op.method.upper(), op.path) for op in (r.ok() for r in api_schema.get_all_operations())}
    assert documented == set(OPERATIONS)


NO_INPUTS = {("GET", "/healthz"), ("GET", "/readyz")}  # nothing to make invalid: positive only
FUZZED = [
    (m, p, mode)
    for mode in GenerationMode
    for m, p in OPERATIONS
    if mode is GenerationMode.POSITIVE or (m, p) not in NO_INPUTS
]


@pytest.mark.parametrize(("method", "path", "mode"), FUZZED)
def test_every_answer_is_documented_and_none_is_a_500(
    api_schema: schemathesis.BaseSchema, api_key: str, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    authorized = {"authorization": f"Bearer {api_key}"}
    anonymous = {"authorization": "Bearer ipfvr_not-a-key"}

    @given(case=operation.as_strategy(generation_mode=mode), anonymous_call=st.integers(0, 9))
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    def fuzz(case: schemathesis.Case, anonymous_call: int) -> None:
        case.call_and_validate(headers=anonymous if anonymous_call == 0 else authorized, checks=CHECKS)

    fuzz()
