"""Hostile names and metadata (path traversal, NUL bytes, unicode) never reach an S3 key or a file path.

Checked on what the real stack writes: the keys in the real ``weed`` bucket and their metadata,
and every path under its work folder that the worker process opened, renamed, created or removed
(recorded by an audit hook, :func:`tests.service.doubles.load_auditing_restorer`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from jobs.errors import InvalidRequest
from jobs.tenants.accounts import Tenants
from tests.service.stack import ServiceStack

Tenant = tuple[str, httpx.Client]
HOSTILE_NAMES = [
    "../../../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "/abs/olute.mp4",
    "clip\x00.png.mp4",
    "ünïcødé 🎞️ \u202e4pm.exe",
    "%2e%2e%2fsecret.mp4",
    "a" * 600 + ".mp4",
    "con",
    "\r\nX-Injected: 1",
]
KEY = re.compile(
    r"^(inputs|outputs)/t[0-9a-f]{8}/job_[0-9a-hjkmnp-tv-z]{26}/(video|reference-\d|restored\.mp4|report\.json)$"
)
# boto3's download_file writes "<name>.<8 random characters>" and renames it when complete.
SCRATCH = re.compile(
    r"^job_[0-9a-hjkmnp-tv-z]{26}-[A-Za-z0-9_]+(/(input-video|reference-\d|restored\.mp4)(\.[A-Za-z0-9]{8})?)?$"
)


def multipart(boundary: str, parts: list[tuple[bytes, bytes]]) -> bytes:
    """A multipart body written by hand, so that any bytes can go into the part headers."""
    body = b""
    for headers, content in parts:
        body += f"--{boundary}\r\n".encode() + headers + b"\r\n\r\n" + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


@pytest.fixture(scope="module")
def audited(
    make_stack: Callable[..., ServiceStack], tmp_path_factory: pytest.TempPathFactory
) -> tuple[ServiceStack, Path]:
    """A stack whose restore worker logs every path it touches under its work folder, and that log."""
    log = tmp_path_factory.mktemp("audit") / "paths.log"
    stack = make_stack(
        restorer="tests.service.doubles:load_auditing_restorer", worker_env={"IPFVR_TEST_AUDIT_LOG": str(log)}
    )
    return stack, log


def test_hostile_file_names_and_part_headers_never_reach_keys_or_paths(
    audited: tuple[ServiceStack, Path], carphone_distorted: Path, astronaut_png: Path
) -> None:
    stack, audit_log = audited
    name, key = stack.new_tenant()
    client = stack.client(key)
    video, reference = carphone_distorted.read_bytes(), astronaut_png.read_bytes()
    created = []
    for hostile in HOSTILE_NAMES:
        raw = hostile.encode("utf-8")
        options = json.dumps({"prompt": "double:steps=2,step_s=0.1", "negative_prompt": hostile}).encode()
        body = multipart(
            "b0undary",
            [
                (b'Content-Disposition: form-data; name="options"\r\nContent-Type: application/json', options),
                (
                    b'Content-Disposition: form-data; name="video"; filename="'
                    + raw
                    + b"\"; filename*=UTF-8''..%2F..%2Fx"
                    b"\r\nContent-Type: ../../" + raw,
                    video,
                ),
                (b'Content-Disposition: form-data; name="reference"; filename="' + raw + b'"', reference),
            ],
        )
        response = client.post(
            "/v1/jobs",
            content=body,
            headers={
                "content-type": "multipart/form-data; boundary=b0undary",
                "idempotency-key": f"../../{len(created)}/..",
            },
        )
        assert response.status_code == 202, (hostile, response.text)
        created.append(response.json()["id"])

    for job_id in created:
        assert stack.wait_job(client, job_id, {"succeeded", "failed", "canceled"})["status"] == "succeeded"
    touched = {line.split("\t", 1)[1] for line in audit_log.read_text().splitlines()}
    for job_id in created:  # every job's inputs were written and its output read, all under fixed names
        assert {re.sub(r"^job_\w+?-[A-Za-z0-9_]+/", "", s) for s in touched if s.startswith(job_id)} >= {
            "input-video",
            "reference-0",
            "restored.mp4",
        }, job_id
    assert not [s for s in touched if not SCRATCH.match(s)], sorted(touched)

    keys = stack.objects(f"inputs/{name}/") + stack.objects(f"outputs/{name}/")
    assert len(keys) == 4 * len(created)
    assert all(KEY.match(k) for k in keys), keys
    head = stack.s3.head_object(Bucket=stack.bucket, Key=f"inputs/{name}/{created[0]}/video")
    assert head["Metadata"] == {} and head["ContentType"] == "video/mp4" and "ContentDisposition" not in head
    job = client.get(f"/v1/jobs/{created[3]}").json()
    assert job["options"]["negative_prompt"] == HOSTILE_NAMES[3]  # kept as text, used as nothing else
    client.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/..%2F..%2Fetc%2Fpasswd"),
        ("GET", "/v1/jobs/job_%00"),
        ("POST", "/v1/jobs/%2e%2e/cancel"),
        ("DELETE", "/v1/jobs/job_0123456789abcdefghjkmnpqrs%2F..%2F.."),
        ("GET", "/v1/jobs/%F0%9F%8E%9E"),
    ],
)
def test_hostile_job_ids_in_paths_are_404(tenant: Tenant, method: str, path: str) -> None:
    _, client = tenant
    response = client.request(method, path)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", response.text


def test_hostile_upload_ids_and_tenant_names_are_refused(stack: ServiceStack, tenant: Tenant) -> None:
    _, client = tenant
    for upload_id in ("upl_../../uploads/other/upl_x", "upl_\u0000", "upl_" + "a" * 26 + "/.."):
        response = client.post("/v1/jobs", json={"inputs": {"video": upload_id, "references": [upload_id]}})
        assert response.status_code == 422 and response.json()["error"]["code"] == "upload_not_found", upload_id
    tenants = Tenants(stack.redis, stack.settings.key_prefix, stack.settings.effective_secret_key)
    for bad in ("../other", "a/b", "a\x00", "Ünï", ""):
        with pytest.raises(InvalidRequest):
            tenants.create_key(bad)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("face.png", "face.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\my face.jpg", "my face.jpg"),
        ("bad\x00na\x1bme\u202e.png", "badname.png"),
        ("..", ""),
        ("/", ""),
        ("é" * 500, "é" * 120),
    ],
)
def test_display_names_keep_the_last_segment_without_control_characters(raw: str, shown: str) -> None:
    from api.multipart import display_name

    assert display_name(raw) == shown
