"""Every error the service tests provoke must be one that the OpenAPI document declares.

:class:`ErrorContract` is an httpx response hook: for an error answer (status >= 400) on a
documented operation it checks that the status is declared and that the body's ``code`` is in that
status's enum. A test that meets an undeclared error fails at the call that got it.
"""

from __future__ import annotations

import re
from typing import Any

import httpx


class ErrorContract:
    def __init__(self, document: dict[str, Any]) -> None:
        self.operations: list[tuple[str, re.Pattern[str], dict[str, Any]]] = []
        for path, operations in document["paths"].items():
            pattern = re.compile("^" + re.sub(r"\{[^/}]+\}", "[^/]+", path) + "$")
            for method, operation in operations.items():
                self.operations.append((method.upper(), pattern, operation))

    def operation(self, method: str, path: str) -> dict[str, Any] | None:
        for known_method, pattern, operation in self.operations:
            if known_method == method and pattern.match(path):
                return operation
        return None

    def declared_codes(self, method: str, path: str, status: int) -> list[str] | None:
        """The codes ``status`` may carry on this operation; None when the operation is not documented."""
        operation = self.operation(method, path)
        if operation is None:
            return None
        response = operation["responses"].get(str(status))
        if response is None:
            return []
        return response["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"]["enum"]

    def __call__(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        request = response.request
        declared = self.declared_codes(request.method, request.url.path.rstrip("/") or "/", response.status_code)
        if declared is None:
            return  # not an operation of the API (an unknown path): nothing is declared for it
        response.read()
        code = response.json()["error"]["code"]
        assert code in declared, (
            f"{request.method} {request.url.path} answered {response.status_code} {code!r}, "
            f"which the OpenAPI document does not declare (declared: {declared})"
        )
