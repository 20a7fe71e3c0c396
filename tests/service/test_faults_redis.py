"""Redis, the job store and broker, crashes and comes back while jobs run and wait.

The test owns its Redis (AOF, fsync on every write) and a whole stack on it: the API, a restore
worker and the service worker. Redis is killed (SIGKILL) while one job runs and two wait in the
queue, left down for two seconds (longer than a lease) and started again on the same data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ipfvr.devstack import S3Server
from tests.service.fault_tools import PrivateRedis, start_stack, wait_for

DOWN_S = 2.0


@pytest.fixture()
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_redis_restarted_mid_queue_loses_no_job_and_the_api_answers_503_meanwhile(
    private_redis: PrivateRedis,
    s3_server: S3Server,
    redis_prefix: Callable[[], str],
    tmp_path: Path,
    carphone_distorted: Path,
    astronaut_png: Path,
) -> None:
    stack = start_stack(redis_url=private_redis.url, s3=s3_server, prefix=redis_prefix(), tmp=tmp_path)
    try:
        _, key = stack.new_tenant()
        client = stack.client(key)
        files = [
            ("video", ("clip.mp4", carphone_distorted.read_bytes())),
            ("reference", ("face.png", astronaut_png.read_bytes())),
        ]

        def submit(prompt: str | None = None) -> str:
            options = ("options", (None, json.dumps({"prompt": prompt} if prompt else {}), "application/json"))
            response = client.post("/v1/jobs", files=[options, *files])
            assert response.status_code == 202, response.text
            return str(response.json()["id"])

        running = submit("double:steps=40,step_s=0.1")
        stack.wait_job(client, running, {"processing"})
        queued = [submit(), submit()]
        assert [client.get(f"/v1/jobs/{j}").json()["status"] for j in queued] == ["queued", "queued"]

        new_job = {"inputs": {"video": "upl_01m8bgx6ex0w4cnbd0p85x5nnr", "references": []}}
        private_redis.kill()
        answers: list[tuple[int, str]] = []
        down_until = time.monotonic() + DOWN_S
        while time.monotonic() < down_until:
            for response in (
                client.get(f"/v1/jobs/{running}"),
                client.get("/v1/jobs"),
                client.post("/v1/jobs", json=new_job),
                client.get("/readyz"),
            ):
                answers.append((response.status_code, response.json()["error"]["code"]))
            time.sleep(0.1)
        assert {status for status, _ in answers} == {503}, answers
        assert {code for _, code in answers} <= {"store_unavailable", "redis_unavailable"}, answers

        private_redis.start()
        restarted = time.monotonic()
        wait_for(lambda: client.get(f"/v1/jobs/{running}").status_code == 200, timeout_s=10, what="the API")
        print(f"\nAPI answering again {time.monotonic() - restarted:.2f} s after Redis restarted")

        done = stack.wait_job(client, running, {"succeeded", "failed"}, timeout_s=30)
        assert done["status"] == "succeeded" and done["attempts"] == 1, done  # the run survived, not redone
        for job_id in queued:
            later = stack.wait_job(client, job_id, {"succeeded", "failed"}, timeout_s=30)
            assert later["status"] == "succeeded" and later["attempts"] == 1, later
        dead = [child for child in stack.stack.children if not child.alive()]
        assert not dead, "\n".join(f"{child.name} exited:\n{child.log_tail()}" for child in dead)
    finally:
        stack.stack.stop()
