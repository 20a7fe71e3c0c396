"""Malformed requests written by hand against the real uvicorn: each gets a 4xx with a stable code, never a 500.

Schemathesis (``test_hostile_fuzz.py``) generates requests that fit the document's shapes; these
are the ones it cannot produce: broken multipart framing, non-UTF-8 or absurdly nested options,
repeated parts, too many files.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.service.stack import ServiceStack

Tenant = tuple[str, httpx.Client]
BOUNDARY = "xYzZy"


def part(name: str, content: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"


END = f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture(scope="module")
def files(carphone_distorted: Path) -> tuple[bytes, bytes]:
    """The sample video and a small PNG (so that many references still fit the body limit)."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "tan").save(buffer, "PNG")
    return carphone_distorted.read_bytes(), buffer.getvalue()


def cases(video: bytes, png: bytes) -> list[tuple[str, bytes, str, int, str]]:
    """(label, body, content type, status, code)."""
    form = f"multipart/form-data; boundary={BOUNDARY}"
    inputs = part("video", video, "v.mp4") + part("reference", png, "r.png")
    return [
        ("options not UTF-8", part("options", b"\xff\xfe{}") + inputs + END, form, 422, "invalid_options"),
        ("options nested 100000 deep", part("options", b"[" * 100_000) + inputs + END, form, 422, "invalid_option"),
        ("options not an object", part("options", b'"webhook"') + inputs + END, form, 422, "invalid_option"),
        ("unknown option", part("options", b'{"__class__": 1}') + inputs + END, form, 422, "invalid_option"),
        ("body cut before the end", inputs[: len(inputs) // 2], form, 422, "invalid_multipart"),
        ("no closing boundary", inputs, form, 422, "invalid_multipart"),
        ("other boundary", inputs.replace(BOUNDARY.encode(), b"other") + END, form, 422, "invalid_multipart"),
        ("no boundary", inputs + END, "multipart/form-data", 422, "invalid_multipart"),
        ("part without a name", part("", png) + inputs + END, form, 422, "unknown_field"),
        ("two videos", inputs + part("video", video, "again.mp4") + END, form, 422, "duplicate_field"),
        ("two options", part("options", b"{}") * 2 + inputs + END, form, 422, "duplicate_field"),
        (
            "forty references",
            part("video", video) + part("reference", png) * 40 + END,
            form,
            422,
            "too_many_references",
        ),
        ("no reference", part("video", video) + END, form, 422, "missing_field"),
        ("empty body", b"", form, 422, "invalid_multipart"),
        ("JSON that is not JSON", b"{'inputs':", "application/json", 422, "invalid_option"),
        ("JSON nested 100000 deep", b"[" * 100_000, "application/json", 422, "invalid_option"),
        ("form-urlencoded", b"video=1", "application/x-www-form-urlencoded", 415, "unsupported_content_type"),
    ]


def test_malformed_job_requests_are_4xx_with_stable_codes(
    stack: ServiceStack, tenant: Tenant, files: tuple[bytes, bytes]
) -> None:
    name, client = tenant
    for label, body, content_type, status, code in cases(*files):
        response = client.post("/v1/jobs", content=body, headers={"content-type": content_type})
        assert response.status_code == status, f"{label}: {response.status_code} {response.text[:200]}"
        assert response.json()["error"]["code"] == code, f"{label}: {response.text[:200]}"
    assert client.get("/v1/jobs").json()["data"] == []
    assert stack.objects(f"inputs/{name}/") == []  # nothing half-uploaded is left behind
