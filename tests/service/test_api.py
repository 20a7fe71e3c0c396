"""The HTTP API against a real uvicorn, Redis and S3: auth, validation codes, limits, idempotency, listing, delete."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from api.main import api_document
from jobs.metrics import COUNTERS, HISTOGRAMS
from jobs.store.workers import WorkerState
from tests.service.http_raw import read_http_response
from tests.service.stack import ServiceStack

Tenant = tuple[str, httpx.Client]


def submit(
    client: httpx.Client,
    video: Path,
    reference: Path,
    options: dict | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    files = [("video", ("clip.mp4", video.read_bytes())), ("reference", ("face.png", reference.read_bytes()))]
    if options is not None:
        files.insert(0, ("options", (None, json.dumps(options), "application/json")))
    return client.post("/v1/jobs", files=files, headers=headers or {})


def assert_error(response: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    if field is not None:
        assert error.get("field") == field, error


def test_a_missing_or_bad_key_is_401(stack: ServiceStack, carphone_distorted: Path, astronaut_png: Path) -> None:
    with stack.client() as anonymous:
        response = submit(anonymous, carphone_distorted, astronaut_png)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        assert_error(anonymous.get("/v1/jobs"), 401, "unauthorized")
    with stack.client("ipfvr_not-a-real-key") as bad:
        assert_error(bad.get("/v1/jobs"), 401, "unauthorized")
    with httpx.Client(base_url=stack.url, headers={"authorization": "Basic dTpw"}) as basic:
        assert_error(basic.get("/v1/webhooks/secret"), 401, "unauthorized")


def test_create_returns_202_and_the_job_object(tenant: Tenant, carphone_distorted: Path, astronaut_png: Path) -> None:
    _, client = tenant
    response = submit(client, carphone_distorted, astronaut_png, {"faces": "all", "seed": 7})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "starting", "processing", "succeeded")
    assert job["engine"] == "baseline" and job["options"]["faces"] == "all" and job["options"]["seed"] == 7
    assert job["urls"]["get"].endswith(f"/v1/jobs/{job['id']}")
    assert client.get(urlsplit(job["urls"]["get"]).path).json()["id"] == job["id"]


def test_another_tenants_job_is_404(
    stack: ServiceStack, tenant: Tenant, carphone_distorted: Path, astronaut_png: Path
) -> None:
    _, client = tenant
    job = submit(client, carphone_distorted, astronaut_png).json()
    _, other_key = stack.new_tenant()
    with stack.client(other_key) as other:
        assert_error(other.get(f"/v1/jobs/{job['id']}"), 404, "not_found", "id")
        assert_error(other.post(f"/v1/jobs/{job['id']}/cancel"), 404, "not_found")
        assert_error(other.delete(f"/v1/jobs/{job['id']}"), 404, "not_found")
        assert other.get("/v1/jobs").json()["data"] == []
    assert_error(client.get("/v1/jobs/job_0000000000000000000000000z"), 404, "not_found")


def test_idempotent_create(
    stack: ServiceStack, tenant: Tenant, tmp_path: Path, carphone_distorted: Path, astronaut_png: Path
) -> None:
    name, client = tenant
    first = submit(client, carphone_distorted, astronaut_png, headers={"idempotency-key": "order-42"})
    again = submit(client, carphone_distorted, astronaut_png, headers={"idempotency-key": "order-42"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert [j["id"] for j in client.get("/v1/jobs").json()["data"]] == [first.json()["id"]]
    assert len(stack.objects(f"inputs/{name}/")) == 2  # the replay's copies are removed
    # the same content with the defaults spelled out is the same request
    spelled = submit(
        client, carphone_distorted, astronaut_png, {"faces": "target"}, headers={"idempotency-key": "order-42"}
    )
    assert spelled.status_code == 202 and spelled.json()["id"] == first.json()["id"]
    # the same key with other options, another file or another file name is refused; nothing is left behind
    key = {"idempotency-key": "order-42"}
    other_options = submit(client, carphone_distorted, astronaut_png, {"faces": "all"}, headers=key)
    mirrored = tmp_path / "face.png"
    Image.fromarray(np.asarray(Image.open(astronaut_png))[:, ::-1]).save(mirrored)
    other_file = submit(client, carphone_distorted, mirrored, headers=key)
    renamed = client.post(
        "/v1/jobs",
        headers=key,
        files=[
            ("video", ("other-name.mp4", carphone_distorted.read_bytes())),
            ("reference", ("face.png", astronaut_png.read_bytes())),
        ],
    )
    for refused in (other_options, other_file, renamed):
        assert_error(refused, 422, "idempotency_key_reused", "idempotency-key")
        assert first.json()["id"] in refused.json()["error"]["message"]
    assert [j["id"] for j in client.get("/v1/jobs").json()["data"]] == [first.json()["id"]]
    assert len(stack.objects(f"inputs/{name}/")) == 2
    other = submit(client, carphone_distorted, astronaut_png, headers={"idempotency-key": "order-43"})
    assert other.json()["id"] != first.json()["id"]


def test_oversize_body_is_refused_before_it_is_read(stack: ServiceStack, tenant: Tenant) -> None:
    _, client = tenant
    key = client.headers["authorization"]
    declared = stack.settings.max_request_bytes + 1
    with socket.create_connection(("127.0.0.1", urlsplit(stack.url).port)) as s:
        s.sendall(
            (
                f"POST /v1/jobs HTTP/1.1\r\nHost: api\r\nAuthorization: {key}\r\n"
                f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {declared}\r\n\r\n"
            ).encode()
        )
        s.sendall(b"--x\r\n")  # a few bytes of a body that would be far too large
        status, headers, body = read_http_response(s, timeout=10)
    assert status == 413, (status, headers, body)
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_oversize_files_without_content_length_are_stopped_while_streaming(
    stack: ServiceStack, tenant: Tenant, carphone_distorted: Path, astronaut_png: Path
) -> None:
    name, client = tenant
    big_video = carphone_distorted.read_bytes() + bytes(stack.settings.max_video_bytes)
    boundary = "b0undary"

    def chunked_body():  # noqa: ANN202 (generator: httpx sends it chunked, without Content-Length)
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="reference"; filename="f.png"\r\n\r\n'.encode()
        yield astronaut_png.read_bytes()
        yield f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n\r\n'.encode()
        for i in range(0, len(big_video), 256 * 1024):
            yield big_video[i : i + 256 * 1024]
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/v1/jobs", content=chunked_body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert_error(response, 413, "video_too_large", "video")
    assert stack.objects(f"inputs/{name}/") == []  # the reference already stored was removed again


@pytest.mark.parametrize(
    ("field", "payload", "code"),
    [
        ("video", b"<html>not a video</html>" * 10, "unsupported_media_type"),
        ("video", b"\x89PNG\r\n\x1a\n" + bytes(100), "unsupported_media_type"),  # an image is not a video
        ("reference", b"GIF89a" + bytes(100), "unsupported_media_type"),
    ],
)
def test_content_is_sniffed_not_trusted(
    tenant: Tenant, carphone_distorted: Path, astronaut_png: Path, field: str, payload: bytes, code: str
) -> None:
    _, client = tenant
    parts = {
        "video": ("clip.mp4", carphone_distorted.read_bytes(), "video/mp4"),
        "reference": ("face.png", astronaut_png.read_bytes(), "image/png"),
    }
    parts[field] = (parts[field][0], payload, parts[field][2])  # right name and declared type, wrong content
    response = client.post("/v1/jobs", files=list(parts.items()))
    assert_error(response, 415, code, field if field == "video" else "reference[0]")


def test_wrong_content_type_is_415(tenant: Tenant) -> None:
    _, client = tenant
    assert_error(
        client.post("/v1/jobs", content=b"x", headers={"content-type": "text/plain"}),
        415,
        "unsupported_content_type",
        "content-type",
    )


@pytest.mark.parametrize(
    ("options", "code", "field"),
    [
        ({"engine": "nope"}, "invalid_option", "options.engine"),
        ({"faces": "some"}, "invalid_option", "options.faces"),
        ({"seed": -1}, "invalid_option", "options.seed"),
        ({"upscale": 3}, "invalid_option", "options.upscale"),
        ({"background": "lanczos"}, "invalid_option", "options.background"),
        ({"surprise": 1}, "invalid_option", "options.surprise"),
        ({"webhook": "http://169.254.169.254/latest"}, "webhook_url_forbidden", "options.webhook"),
        ({"webhook": "ftp://example.com/x"}, "invalid_option", "options.webhook"),
    ],
)
def test_invalid_options_are_422(
    tenant: Tenant, carphone_distorted: Path, astronaut_png: Path, options: dict, code: str, field: str
) -> None:
    _, client = tenant
    assert_error(submit(client, carphone_distorted, astronaut_png, options), 422, code, field)


def test_missing_parts_and_bad_json_are_422(
    stack: ServiceStack, tenant: Tenant, carphone_distorted: Path, astronaut_png: Path
) -> None:
    name, client = tenant
    video_only = client.post("/v1/jobs", files=[("video", ("v.mp4", carphone_distorted.read_bytes()))])
    assert_error(video_only, 422, "missing_field", "reference")
    ref_only = client.post("/v1/jobs", files=[("reference", ("r.png", astronaut_png.read_bytes()))])
    assert_error(ref_only, 422, "missing_field", "video")
    bad_json = client.post(
        "/v1/jobs",
        files=[
            ("options", (None, b"{not json")),
            ("video", ("v.mp4", carphone_distorted.read_bytes())),
            ("reference", ("r.png", astronaut_png.read_bytes())),
        ],
    )
    assert_error(bad_json, 422, "invalid_option", "options")
    unknown = client.post("/v1/jobs", files=[("extra", ("x", b"1"))])
    assert_error(unknown, 422, "unknown_field", "extra")
    too_many = [("reference", ("r.png", astronaut_png.read_bytes()))] * (stack.settings.max_references + 1)
    assert_error(client.post("/v1/jobs", files=too_many), 422, "too_many_references", "reference")
    assert_error(client.get("/v1/jobs", params={"limit": 0}), 422, "invalid_request", "limit")
    assert_error(client.get("/v1/jobs", params={"status": "sleeping"}), 422, "invalid_request", "status")
    assert stack.objects(f"inputs/{name}/") == []  # nothing stored by refused requests


def test_list_is_paginated_and_filtered(tenant: Tenant, carphone_distorted: Path, astronaut_png: Path) -> None:
    _, client = tenant
    slow = {"prompt": "double:steps=40,step_s=0.05"}  # keeps the worker busy so the rest stay queued
    created = [submit(client, carphone_distorted, astronaut_png, slow).json()["id"] for _ in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        page = client.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [j["id"] for j in page["data"]]
        pages += 1
        assert page["has_more"] == (page["next_cursor"] is not None)
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == list(reversed(created)) and pages == 3
    client.post(f"/v1/jobs/{created[-1]}/cancel")
    canceled = client.get("/v1/jobs", params={"status": "canceled"}).json()["data"]
    assert [j["id"] for j in canceled] == [created[-1]]
    assert_error(client.get("/v1/jobs", params={"cursor": "garbage!"}), 422, "invalid_cursor", "cursor")
    for job_id in created:
        client.post(f"/v1/jobs/{job_id}/cancel")


def test_delete_removes_the_objects_and_leaves_a_tombstone(
    stack: ServiceStack, tenant: Tenant, carphone_distorted: Path, astronaut_png: Path
) -> None:
    name, client = tenant
    job = submit(client, carphone_distorted, astronaut_png).json()
    done = stack.wait_job(client, job["id"], {"succeeded"})
    assert len(stack.objects(f"inputs/{name}/{job['id']}/")) == 2
    assert len(stack.objects(f"outputs/{name}/{job['id']}/")) == 2  # video and report
    assert httpx.get(done["output"]["video_url"]).status_code == 200
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert stack.objects(f"inputs/{name}/") == [] and stack.objects(f"outputs/{name}/") == []
    assert_error(client.get(f"/v1/jobs/{job['id']}"), 410, "job_deleted")
    assert_error(client.delete(f"/v1/jobs/{job['id']}"), 410, "job_deleted")
    assert client.get("/v1/jobs").json()["data"] == []


def test_delete_of_an_unfinished_job_is_409(tenant: Tenant, carphone_distorted: Path, astronaut_png: Path) -> None:
    _, client = tenant
    job = submit(client, carphone_distorted, astronaut_png, {"prompt": "double:steps=30,step_s=0.05"}).json()
    assert_error(client.delete(f"/v1/jobs/{job['id']}"), 409, "job_not_terminal", "id")
    client.post(f"/v1/jobs/{job['id']}/cancel")


def test_presigned_upload_then_json_job(
    stack: ServiceStack, tenant: Tenant, carphone_distorted: Path, astronaut_png: Path
) -> None:
    _, client = tenant
    video = client.post("/v1/uploads", json={"purpose": "video", "size": carphone_distorted.stat().st_size}).json()
    reference = client.post("/v1/uploads", json={"purpose": "reference", "size": astronaut_png.stat().st_size}).json()
    assert video["size"] == carphone_distorted.stat().st_size
    # the store (real weed) refuses any other length than the declared one, and a body without a length
    data = carphone_distorted.read_bytes()
    for wrong in (data[:-1], data + b"\0", iter([data])):
        refused = httpx.put(video["url"], content=wrong)
        assert refused.status_code == 403 and b"SignatureDoesNotMatch" in refused.content, refused.text
    assert not [k for k in stack.objects("uploads/") if k.endswith(video["id"])]  # nothing was stored
    assert httpx.put(video["url"], content=carphone_distorted.read_bytes()).status_code == 200
    assert httpx.put(reference["url"], content=astronaut_png.read_bytes()).status_code == 200
    body = {"inputs": {"video": video["id"], "references": [reference["id"]]}, "faces": "all"}
    created = client.post("/v1/jobs", json=body, headers={"idempotency-key": "presigned-1"})
    assert created.status_code == 202, created.text
    done = stack.wait_job(client, created.json()["id"], {"succeeded"})
    assert httpx.get(done["output"]["video_url"]).content == carphone_distorted.read_bytes()
    # a retry (other spacing and key order) replays; other options under the same key are refused
    retry = client.post(
        "/v1/jobs",
        content=json.dumps(dict(reversed(body.items())), indent=2),
        headers={"idempotency-key": "presigned-1", "content-type": "application/json"},
    )
    assert retry.status_code == 202 and retry.json()["id"] == created.json()["id"], retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    changed = client.post("/v1/jobs", json=body | {"faces": "target"}, headers={"idempotency-key": "presigned-1"})
    assert body["faces"] == "all"
    assert_error(changed, 422, "idempotency_key_reused", "idempotency-key")
    assert_error(client.post("/v1/jobs", json=body), 409, "upload_unavailable", "inputs")  # used once only
    swapped = client.post("/v1/uploads", json={"purpose": "video", "size": astronaut_png.stat().st_size}).json()
    httpx.put(swapped["url"], content=astronaut_png.read_bytes())  # an image uploaded as the video
    wrong = client.post("/v1/jobs", json={"inputs": {"video": swapped["id"], "references": [reference["id"]]}})
    assert_error(wrong, 415, "unsupported_media_type", "inputs.video")
    missing = client.post("/v1/uploads", json={"purpose": "video", "size": 10}).json()
    never = client.post("/v1/jobs", json={"inputs": {"video": missing["id"], "references": [reference["id"]]}})
    assert_error(never, 422, "upload_not_found", "inputs.video")
    too_big = client.post("/v1/uploads", json={"purpose": "video", "size": stack.settings.max_video_bytes + 1})
    assert_error(too_big, 413, "video_too_large", "size")


def test_webhook_secret_and_rotation(tenant: Tenant) -> None:
    _, client = tenant
    first = client.get("/v1/webhooks/secret").json()
    assert first["secret"].startswith("whsec_") and first["previous_expires_at"] is None
    assert client.get("/v1/webhooks/secret").json()["secret"] == first["secret"]
    rotated = client.post("/v1/webhooks/secret/rotate").json()
    assert rotated["secret"] != first["secret"] and rotated["previous_expires_at"] is not None


def test_health_readiness_metrics_and_openapi(stack: ServiceStack) -> None:
    # The shared worker may still be busy with an earlier test's job: wait until it is idle (a condition), then
    # ask readiness, which counts it as live whether or not a queued job has taken it again meanwhile.
    stack.wait_worker("restore", WorkerState.READY)
    with stack.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz").json()
        assert ready["checks"] == {"redis": "ok", "storage": "ok"}
        assert set(ready["workers"]) == {state.value for state in WorkerState}
        assert ready["workers"]["ready"] + ready["workers"]["busy"] >= 1, ready["workers"]
        metrics = client.get("/metrics").text
        # Every declared family is exported before its first observation (this test may run first).
        families = [f"# TYPE ipfvr_{name}_total counter" for name in COUNTERS] + [
            f"# TYPE ipfvr_{name} histogram" for name in HISTOGRAMS
        ]
        for name in (
            *families,
            "ipfvr_queue_waiting_jobs",
            "ipfvr_queue_active_jobs",
            'ipfvr_model_load_seconds_count{engine="baseline"}',  # the shared worker's load
            'ipfvr_workers{state="ready"}',
            "ipfvr_http_requests_total",
        ):
            assert name in metrics, name
        assert 'route="/healthz",status="200"' in metrics  # route templates, never raw paths
        schema = client.get("/openapi.json").json()
        body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
        assert set(body) == {"multipart/form-data", "application/json"}
        assert "JobCreate" in schema["components"]["schemas"]
        assert schema == api_document()  # what docs/service.md's error table is generated from
        assert_error(client.get("/v1/nothing-here"), 404, "not_found")


def test_docs_pages_load_every_file_from_the_service(stack: ServiceStack) -> None:
    with stack.client() as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page)
            assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
            urls = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']|url: ?["']([^"']+)["']""", html.text)
            loaded = [u for pair in urls for u in pair if u]
            assert loaded and all(u.startswith("/") for u in loaded), (page, loaded)  # nothing from a CDN
            assert "/openapi.json" in loaded
            for url in loaded:
                assert client.get(url).status_code == 200, url
        script = client.get("/docs/assets/swagger-ui-bundle.js")
        assert "javascript" in script.headers["content-type"] and "SwaggerUIBundle" in script.text


def test_json_bodies_have_their_own_small_limit(stack: ServiceStack, tenant: Tenant) -> None:
    _, client = tenant
    padding = "x" * (stack.settings.max_json_bytes + 1)
    response = client.post(
        "/v1/jobs", content=json.dumps({"prompt": padding}), headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")
