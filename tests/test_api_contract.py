"""The API's error contract, without a running service: one table of codes feeds the handlers, the
OpenAPI document and docs/service.md, and every code the API raises is in it."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from api.error_codes import CODES
from api.main import api_document
from api.openapi import error_table

REPO = Path(__file__).resolve().parents[1]
# Modules whose errors reach HTTP answers; a job's failure codes (ErrorInfo) are not HTTP errors.
RAISING = [
    *sorted((REPO / "api").rglob("*.py")),
    *(
        REPO / "jobs" / f"{n}.py"
        for n in (
            "errors",
            "media/checks",
            "store/jobs",
            "store/cursor",
            "store/identities",
            "tenants/ratelimit",
            "storage",
            "webhooks/ssrf",
        )
    ),
]


def error_codes(response: dict[str, Any]) -> list[str]:
    return response["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"]["enum"]


def raised_codes(path: Path) -> set[str]:
    """String codes given to a call as ``code=`` (but a job failure's ErrorInfo) or set as a class's ``code``."""
    codes = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) != "ErrorInfo":
            for keyword in node.keywords:
                if keyword.arg == "code":
                    values = (
                        [keyword.value]
                        if not isinstance(keyword.value, ast.IfExp)
                        else [keyword.value.body, keyword.value.orelse]
                    )
                    codes.update(v.value for v in values if isinstance(v, ast.Constant))
        elif isinstance(node, ast.ClassDef):
            for statement in node.body:
                if (
                    isinstance(statement, ast.Assign)
                    and [getattr(t, "id", None) for t in statement.targets] == ["code"]
                    and isinstance(statement.value, ast.Constant)
                ):
                    codes.add(statement.value.value)
    return codes


def test_every_code_the_api_raises_is_in_the_table() -> None:
    raised = set().union(*(raised_codes(path) for path in RAISING))
    assert raised - set(CODES) == set()
    assert {"not_found", "idempotency_key_reused", "rate_limited", "storage_unavailable"} <= raised


def test_each_operation_declares_its_own_errors_with_enumerated_codes() -> None:
    paths = api_document()["paths"]
    get_job = paths["/v1/jobs/{job_id}"]["get"]["responses"]
    assert {s for s in get_job if int(s) >= 400} == {"401", "404", "410", "429", "503"}
    assert error_codes(get_job["404"]) == ["not_found"]
    create = paths["/v1/jobs"]["post"]["responses"]
    assert "idempotency_key_reused" in error_codes(create["422"])
    assert error_codes(create["429"]) == ["rate_limited", "too_many_queued_jobs"]
    assert "Retry-After" in create["429"]["headers"]
    assert {s for s in paths["/healthz"]["get"]["responses"] if int(s) >= 400} == set()
    for operations in paths.values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert {CODES[c].status for c in error_codes(response)} == {int(status)}
                    assert "x-error-codes" not in operation


def test_every_reference_resolves_and_the_multipart_options_have_a_schema() -> None:
    document = api_document()
    text = repr(document)
    for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert name in document["components"]["schemas"], name
    options = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert options["schema"]["properties"]["options"]["contentSchema"] == {"$ref": "#/components/schemas/JobOptions"}
    assert "faces" in document["components"]["schemas"]["JobOptions"]["properties"]


def test_the_docs_carry_the_generated_error_table() -> None:
    text = (REPO / "docs" / "service.md").read_text()
    found = re.search(r"<!-- error-table:[^\n]*-->\n(.*?)<!-- /error-table -->", text, re.S)
    assert found is not None, "docs/service.md lost its error-table markers"
    assert found.group(1) == error_table(api_document()), "regenerate: python -m api.openapi --error-table"
