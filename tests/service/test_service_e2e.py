"""End to end with the real restorer: uvicorn, a Celery prefork worker running the baseline engine, Redis, weed S3.

Submits the first frames of carphone (the degraded clip) with a pristine frame as the reference,
polls until the job succeeds, downloads the result through its presigned URL, and checks the
frame count and the report; every webhook is verified with ``standardwebhooks``. The clip is cut
to a few frames because the baseline engine costs about a second per face crop on 2 CPU cores.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import av
import httpx
import pytest
from PIL import Image

from tests.media_factory import first_frames
from tests.service.receiver import WebhookReceiver
from tests.service.stack import ServiceStack

FRAMES = 6  # frames of carphone to restore (a face track needs at least 5)


def frame_at(source: Path, index: int, target: Path) -> Path:
    with av.open(str(source)) as src:
        for i, frame in enumerate(src.decode(video=0)):
            if i == index:
                Image.fromarray(frame.to_ndarray(format="rgb24")).save(target)
                return target
    raise AssertionError(f"{source} has fewer than {index + 1} frames")


def count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.slow
def test_real_restorer_end_to_end(
    make_stack,
    receiver: WebhookReceiver,
    tmp_path: Path,  # noqa: ANN001
    carphone_distorted: Path,
    carphone_pristine: Path,
) -> None:
    stack: ServiceStack = make_stack(
        restorer="worker.restorer:load_restorer",
        job_time_limit_s=540,
        job_kill_grace_s=30,
        visibility_timeout_s=600,
        ready_timeout_s=180,
    )
    clip = first_frames(carphone_distorted, tmp_path / "carphone.mp4", FRAMES)
    reference = frame_at(carphone_pristine, 60, tmp_path / "reference.png")
    _, key = stack.new_tenant()
    with stack.client(key) as client:
        inbox = receiver.inbox(client.get("/v1/webhooks/secret").json()["secret"])
        options = {"faces": "target", "webhook": inbox.url, "webhook_events_filter": ["start", "completed"]}
        created = client.post(
            "/v1/jobs",
            files=[
                ("options", (None, json.dumps(options), "application/json")),
                ("video", ("carphone.mp4", clip.read_bytes())),
                ("reference", ("pristine.png", reference.read_bytes())),
            ],
        )
        assert created.status_code == 202, created.text
        done = stack.wait_job(client, created.json()["id"], {"succeeded", "failed", "canceled"}, timeout_s=480)
    assert done["status"] == "succeeded", done["error"]
    restored = tmp_path / "restored.mp4"
    restored.write_bytes(httpx.get(done["output"]["video_url"], timeout=60).content)
    assert count_frames(restored) == FRAMES
    report = done["output"]["report"]
    assert report["frames_total"] == FRAMES and report["frames_restored"] >= 1
    assert report["versions"]["engine"] == "baseline"
    assert report["identity"]["after"] is not None
    full = httpx.get(done["output"]["report_url"], timeout=60).json()
    assert len(full["frames"]) == FRAMES
    # the public reports name the client's files, never the worker's scratch folder
    assert full["input"]["path"] == "carphone.mp4" and full["references"][0]["name"] == "pristine.png"
    for public in (json.dumps(report), json.dumps(full)):
        assert str(stack.settings.work_dir) not in public and "input-video" not in public
    received = inbox.wait_for(lambda items: any(r.webhook_id.endswith("_completed") for r in items))
    assert all(r.verified for r in received)
    assert Counter(r.webhook_id.rsplit("_", 1)[-1] for r in received) == {"start": 1, "completed": 1}
