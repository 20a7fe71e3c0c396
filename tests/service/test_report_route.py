"""``GET /v1/jobs/{id}/report``: the full report through the API (what the web page plots), per tenant."""

from __future__ import annotations

from pathlib import Path

from tests.service.stack import ServiceStack
from tests.service.test_api import Tenant, assert_error, submit


def test_the_report_of_a_succeeded_job_only_for_its_tenant(
    stack: ServiceStack, tenant: Tenant, carphone_distorted: Path, astronaut_png: Path
) -> None:
    _, client = tenant
    # A job that runs for a while: no report until it succeeds.
    job = submit(client, carphone_distorted, astronaut_png, {"prompt": "double:steps=5,step_s=0.2"}).json()
    assert_error(client.get(f"/v1/jobs/{job['id']}/report"), 404, "not_found", "id")
    done = stack.wait_job(client, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    report = client.get(f"/v1/jobs/{job['id']}/report")
    assert report.status_code == 200 and report.headers["content-type"] == "application/json"
    body = report.json()
    # the per-frame rows the job object leaves out, with what the page plots
    assert [row["index"] for row in body["frames"]] == [0] and "distance_after" in body["frames"][0]
    assert {k: v for k, v in body.items() if k != "frames"} == done["output"]["report"]
    _, other_key = stack.new_tenant()
    with stack.client(other_key) as other:
        assert_error(other.get(f"/v1/jobs/{job['id']}/report"), 404, "not_found", "id")
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert_error(client.get(f"/v1/jobs/{job['id']}/report"), 410, "job_deleted", "id")
