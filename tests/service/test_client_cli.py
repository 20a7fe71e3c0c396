"""The Python client and the ``ipfvr keys/submit/status/wait/dev`` commands against real services."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import httpx
import psutil
import pytest

from ipfvr.client import ApiError, Client
from ipfvr.devstack import free_port
from tests.service.stack import DOUBLE, REPO, ServiceStack


def test_client_round_trip(stack: ServiceStack, tmp_path: Path, carphone_distorted: Path, astronaut_png: Path) -> None:
    _, key = stack.new_tenant()
    with Client(stack.url, key) as client:
        job = client.submit(carphone_distorted, [astronaut_png], faces="target", idempotency_key="c-1")
        again = client.submit(carphone_distorted, [astronaut_png], idempotency_key="c-1")  # "target": the default
        assert again["id"] == job["id"]
        with pytest.raises(ApiError) as reused:
            client.submit(carphone_distorted, [astronaut_png], faces="all", idempotency_key="c-1")
        assert reused.value.status == 422 and reused.value.code == "idempotency_key_reused"
        updates: list[str] = []
        done = client.wait(job["id"], poll_s=0.1, timeout_s=30, on_update=lambda j: updates.append(j["status"]))
        assert done["status"] == "succeeded" and updates[-1] == "succeeded"
        out = client.download(done, tmp_path / "restored.mp4")
        assert out.read_bytes() == carphone_distorted.read_bytes()
        assert [j["id"] for j in client.iter_jobs()] == [job["id"]]
        assert client.cancel(job["id"])["status"] == "succeeded"  # terminal: cancel is a no-op
        assert client.webhook_secret().startswith("whsec_")
        client.delete(job["id"])
        with pytest.raises(ApiError) as gone:
            client.get(job["id"])
        assert gone.value.status == 410 and gone.value.code == "job_deleted"
        with pytest.raises(ApiError) as no_output:
            client.download(done, tmp_path / "again.mp4")
        assert no_output.value.code == "job_deleted"
    with Client(stack.url, "ipfvr_wrong") as bad, pytest.raises(ApiError) as unauthorized:
        bad.list()
    assert unauthorized.value.status == 401 and unauthorized.value.code == "unauthorized"


def _ipfvr(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ipfvr", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_wait_reports_changes_not_polls(stack: ServiceStack, carphone_distorted: Path, astronaut_png: Path) -> None:
    _, key = stack.new_tenant()
    with Client(stack.url, key) as client:
        job = client.submit(carphone_distorted, [astronaut_png], prompt="double:steps=3,step_s=0.6")
        seen: list[tuple] = []
        done = client.wait(
            job["id"],
            poll_s=0.05,
            timeout_s=60,
            on_update=lambda j: seen.append((j["status"], j.get("progress"), j.get("queue_position"))),
        )
    assert done["status"] == "succeeded" and seen[-1][0] == "succeeded"
    assert all(a != b for a, b in pairwise(seen)), seen  # ~40 polls, one line per change


def test_a_closed_output_pipe_ends_quietly(stack: ServiceStack) -> None:
    """`ipfvr ... | head` where head has already left: exit 141 (SIGPIPE's status), no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ipfvr", "keys", "create", "--tenant", "pipe-tenant"],
            env=stack.stack.env,
            cwd=REPO,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert "error" not in done.stderr and "Traceback" not in done.stderr and "Exception" not in done.stderr, done.stderr


def test_an_unreachable_service_is_named_with_a_hint(stack: ServiceStack) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = _ipfvr(
        "status",
        "job_01m8t4bqs31jheqx07tzh8y819",
        env={**stack.stack.env, "IPFVR_URL": url, "IPFVR_API_KEY": "ipfvr_x"},
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and "ipfvr dev" in lines[0], done.stderr


def test_keys_submit_status_wait_commands(
    stack: ServiceStack, tmp_path: Path, carphone_distorted: Path, astronaut_png: Path
) -> None:
    env = stack.stack.env
    created = _ipfvr("keys", "create", "--tenant", "cli-tenant", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("ipfvr_") and "shown only once" in created.stderr
    client_env = {**env, "IPFVR_URL": stack.url, "IPFVR_API_KEY": key}
    out = tmp_path / "restored.mp4"
    submitted = _ipfvr(
        "submit",
        str(carphone_distorted),
        "-r",
        str(astronaut_png),
        "--faces",
        "all",
        "--wait",
        "-o",
        str(out),
        env=client_env,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["status"] == "succeeded" and job["options"]["faces"] == "all"
    assert out.read_bytes() == carphone_distorted.read_bytes()
    status = _ipfvr("status", job["id"], env=client_env)
    assert status.returncode == 0 and json.loads(status.stdout)["id"] == job["id"]
    queued = _ipfvr("submit", str(carphone_distorted), "-r", str(astronaut_png), env=client_env)
    waited = _ipfvr("wait", json.loads(queued.stdout)["id"], "--timeout", "30", env=client_env)
    assert waited.returncode == 0 and json.loads(waited.stdout)["status"] == "succeeded"
    missing = _ipfvr("status", "job_00000000000000000000000000", env=client_env)
    assert missing.returncode == 1 and "not_found" in missing.stderr
    bad = _ipfvr("keys", "create", "--tenant", "Bad Name", env=env)
    assert bad.returncode == 1 and "invalid_tenant" in bad.stderr and bad.stdout == ""


def test_dev_fresh_forgets_only_its_own_prefix(stack: ServiceStack, redis_prefix) -> None:  # noqa: ANN001
    from ipfvr.service_cli import _forget

    mine, other = redis_prefix(), redis_prefix()
    for i in range(2500):  # more than one batch
        stack.redis.set(f"{mine}:job:{i}", "x")
    stack.redis.set(f"{mine}:celery:queue", "x")
    stack.redis.set(f"{other}:job:1", "kept")
    assert _forget(stack.redis, mine) == 2501
    assert list(stack.redis.scan_iter(match=f"{mine}:*")) == []
    assert stack.redis.get(f"{other}:job:1") in (b"kept", "kept")


def test_dev_starts_everything_and_ctrl_c_stops_it(stack: ServiceStack, redis_prefix, tmp_path: Path) -> None:  # noqa: ANN001
    db = stack.redis.connection_pool.connection_kwargs["db"]  # the test database: its prefixes are cleaned up
    port = free_port()
    prefix = redis_prefix()
    env = {**stack.stack.env, "IPFVR_RESTORER": DOUBLE}
    # As from a terminal: Ctrl-C's signal at its default. A suite started in the background by a shell
    # without job control inherits SIGINT ignored, and Python then never turns it into KeyboardInterrupt.
    dev = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ipfvr",
            "dev",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "dev"),
            "--key-prefix",
            prefix,
            "--redis-db",
            str(db),
            "--engine",
            "baseline",
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = dev.stdout.readline()
            assert line, "ipfvr dev exited early:\n" + "".join(lines)
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        output = "".join(lines)
        key = next(line.split("=", 1)[1].strip() for line in lines if "IPFVR_API_KEY=" in line)
        assert f"http://127.0.0.1:{port}" in output
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        # The web page's URL, with the printed key in its fragment (which never reaches a server).
        page = next(line.split()[1] for line in lines if line.strip().startswith("Page"))
        assert page == f"http://127.0.0.1:{port}/#key={key}"
        html = httpx.get(page.split("#")[0])
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html"), html.text
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/jobs", headers={"authorization": f"Bearer {key}"})
        assert listed.status_code == 200 and listed.json()["data"] == []
        # The printed "more keys" command works as printed, from a shell without the stack's settings.
        more = next(line.split("more keys:", 1)[1].split() for line in lines if "more keys:" in line)
        assert more[:3] == ["ipfvr", "keys", "create"]
        shell = {k: v for k, v in env.items() if k not in ("IPFVR_REDIS_URL", "IPFVR_KEY_PREFIX")}
        created = _ipfvr(*[("extra" if arg == "NAME" else arg) for arg in more[1:]], env=shell)
        assert created.returncode == 0, created.stderr
        extra = httpx.get(
            f"http://127.0.0.1:{port}/v1/jobs", headers={"authorization": f"Bearer {created.stdout.strip()}"}
        )
        assert extra.status_code == 200, extra.text
        # A second stack on the same data folder says, in one line, where the first one runs.
        second = _ipfvr("dev", "--port", str(free_port()), "--data-dir", str(tmp_path / "dev"), env=env)
        assert second.returncode == 1 and second.stderr.strip().splitlines() == [
            f"ipfvr: error: an ipfvr dev stack is already running on http://127.0.0.1:{port} "
            f"(data dir {tmp_path / 'dev'})"
        ], second.stderr
        ports = [port, int(next(line for line in lines if line.strip().startswith("S3")).rsplit(":", 1)[1])]
        children = psutil.Process(dev.pid).children(recursive=True)
        assert len(children) >= 5  # weed, api, two celery workers and their pool processes
        # keep reading its output, so that a full pipe can never hold the shutdown up
        threading.Thread(target=lambda: lines.extend(dev.stdout), daemon=True).start()
        dev.send_signal(signal.SIGINT)
        # the stack stops its children at once (10 s, then SIGKILL), then weed (the same): 30 s at worst
        assert dev.wait(timeout=120) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
    finally:
        if dev.poll() is None:
            dev.kill()
    for p in ports:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{p}/", timeout=2)
    assert os.path.exists(tmp_path / "dev" / "logs" / "api.log")
    weed_log = (tmp_path / "dev" / "s3" / "weed.log").read_text()
    assert "Reconnection attempt" not in weed_log and "stream ended" not in weed_log, weed_log[-2000:]
