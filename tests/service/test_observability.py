"""The API's one observing middleware, on a bare Starlette app: request ids, access records, HTTP metrics."""

from __future__ import annotations

import logging
import re

import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.observability import HttpMetrics, ObservabilityMiddleware


def item(request: Request) -> PlainTextResponse:
    request.state.tenant = "acme"  # what the API key check records
    request.state.key_hint = "ipfvr_abcd"
    return PlainTextResponse(request.path_params["item_id"])


def boom(_: Request) -> PlainTextResponse:
    raise RuntimeError("a bug")


@pytest.fixture()
def observed() -> tuple[TestClient, CollectorRegistry]:
    registry = CollectorRegistry()
    app = Starlette(routes=[Route("/items/{item_id}", item), Route("/boom", boom)])
    app.add_middleware(ObservabilityMiddleware, metrics=HttpMetrics(registry))
    return TestClient(app, raise_server_exceptions=False), registry


def test_request_ids_access_records_and_metrics(
    observed: tuple[TestClient, CollectorRegistry], caplog: pytest.LogCaptureFixture
) -> None:
    client, registry = observed
    with caplog.at_level(logging.INFO, logger="ipfvr.access"):
        kept = client.get("/items/42?api_key=x", headers={"X-Request-Id": "caller-id.1"})
        made = client.get("/items/43", headers={"X-Request-Id": "not an id!"})
        assert client.get("/nothing").status_code == 404
        assert client.get("/boom").status_code == 500
    assert kept.headers["x-request-id"] == "caller-id.1"
    assert re.fullmatch(r"[0-9a-f]{16}", made.headers["x-request-id"])
    records = [r for r in caplog.records if getattr(r, "event", None) == "http_request"]
    assert [(r.path, r.route, r.status) for r in records] == [
        ("/items/42", "/items/{item_id}", 200),
        ("/items/43", "/items/{item_id}", 200),
        ("/nothing", None, 404),
        ("/boom", "/boom", 500),
    ]
    first = records[0]
    assert (first.request_id, first.method, first.query, first.tenant, first.key_hint) == (
        "caller-id.1",
        "GET",
        "api_key=x",
        "acme",
        "ipfvr_abcd",
    )
    assert records[1].request_id == made.headers["x-request-id"] and records[2].tenant is None
    assert all(r.duration_ms >= 0 for r in records)

    def requests(route: str, status: str) -> float | None:
        return registry.get_sample_value(
            "ipfvr_http_requests_total", {"method": "GET", "route": route, "status": status}
        )

    assert requests("/items/{item_id}", "200") == 2  # by route template, never by raw path
    assert requests("unmatched", "404") == 1 and requests("/boom", "500") == 1
    assert (
        registry.get_sample_value(
            "ipfvr_http_request_duration_seconds_count", {"method": "GET", "route": "/items/{item_id}"}
        )
        == 2
    )
