"""Load run of the job service: N concurrent clients submitting jobs and polling their status for a fixed time.

Each client, on its own keep-alive connection, submits a job (multipart: a 7 KB MP4 and a small
PNG), then polls the status of its recent jobs ``--polls`` times, and repeats until the time is up.
At the end it prints the sustained submissions per second, the status latency (p50/p99/max), the
submission latency, and the errors by kind (zero expected).

    python bench/load_bench.py [--clients 8] [--duration 20] [--polls 4]
    python bench/load_bench.py --url http://127.0.0.1:8000 --api-key ipfvr_... [--engine baseline]

Without ``--url`` it starts its own stack like ``ipfvr dev`` does (Redis on 127.0.0.1:6379 or a
private redis-server, ``weed`` S3, the API) with a fresh key prefix that is removed afterwards.
Its jobs go to an engine no worker consumes, so they stay queued: the run measures the API, the
store and the broker, not the model. Each client gets its own tenant and key, and the stack's rate
limit and per-tenant quota are raised so that they do not cap the run. With ``--url``, all clients
share the given key, the deployment's limits apply (429s are counted as errors), and the jobs are
canceled at the end. Only loopback URLs are accepted, and clients and duration are bounded.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from local_stack import local_stack  # noqa: E402

from ipfvr_core.samples import sample_video  # noqa: E402

SAMPLE_VIDEO = sample_video("carphone_distorted.mp4")
PARKED_ENGINE = "ipfvr"  # the self-started stack runs no worker for this engine: its jobs stay queued
MAX_CLIENTS = 64  # bounds of one run
MAX_DURATION_S = 300.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def small_png() -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (64, 64), (180, 140, 120)).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Tally:
    """What one client measured."""

    submitted: list[str] = field(default_factory=list)  # ids of accepted jobs
    submit_latency: list[float] = field(default_factory=list)  # seconds per accepted submission
    status_latency: list[float] = field(default_factory=list)  # seconds per successful status read
    errors: Counter[str] = field(default_factory=Counter)  # kind -> count


def run_client(url: str, key: str, files: list, options: dict, polls: int, stop_at: float, tally: Tally) -> None:
    form = [("options", (None, json.dumps(options), "application/json")), *files] if options else files
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as client:
        while time.monotonic() < stop_at:
            try:
                start = time.perf_counter()
                response = client.post("/v1/jobs", files=form)
                if response.status_code != 202:
                    tally.errors[f"submit HTTP {response.status_code}"] += 1
                    continue
                tally.submit_latency.append(time.perf_counter() - start)
                tally.submitted.append(response.json()["id"])
                recent = tally.submitted[-4:]
                for i in range(polls):
                    if time.monotonic() >= stop_at:
                        break
                    start = time.perf_counter()
                    status = client.get(f"/v1/jobs/{recent[i % len(recent)]}")
                    if status.status_code == 200:
                        tally.status_latency.append(time.perf_counter() - start)
                    else:
                        tally.errors[f"status HTTP {status.status_code}"] += 1
            except httpx.HTTPError as exc:
                tally.errors[type(exc).__name__] += 1


def load(url: str, keys: list[str], clients: int, duration_s: float, polls: int, engine: str | None) -> list[Tally]:
    files = [("video", ("clip.mp4", SAMPLE_VIDEO.read_bytes())), ("reference", ("face.png", small_png()))]
    options = {"engine": engine} if engine else {}
    tallies = [Tally() for _ in range(clients)]
    stop_at = time.monotonic() + duration_s
    threads = [
        threading.Thread(target=run_client, args=(url, keys[i % len(keys)], files, options, polls, stop_at, tallies[i]))
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tallies


def report(tallies: list[Tally], clients: int, duration_s: float, polls: int, where: str) -> int:
    submitted = sum(len(t.submitted) for t in tallies)
    submits = [s for t in tallies for s in t.submit_latency]
    statuses = [s for t in tallies for s in t.status_latency]
    errors: Counter[str] = sum((t.errors for t in tallies), Counter())
    print(
        f"IP-FVR load run: {clients} clients x {duration_s:.0f} s, {polls} status reads per submission, "
        f"{os.cpu_count()} CPUs, {where}"
    )
    print(
        f"  submissions   {submitted} accepted = {submitted / duration_s:.1f} /s sustained; "
        f"latency p50 {percentile(submits, 50) * 1000:.0f} ms, p99 {percentile(submits, 99) * 1000:.0f} ms"
    )
    print(
        f"  status reads  {len(statuses)} = {len(statuses) / duration_s:.1f} /s; "
        f"latency p50 {percentile(statuses, 50) * 1000:.1f} ms, p99 {percentile(statuses, 99) * 1000:.1f} ms, "
        f"max {max(statuses, default=float('nan')) * 1000:.1f} ms"
    )
    print(f"  errors        {sum(errors.values())}" + (f" ({dict(errors)})" if errors else ""))
    return 1 if errors else 0


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise SystemExit(f"--url must be a loopback address (127.0.0.1, [::1], localhost), not {host!r}")


def cancel_all(url: str, key: str, tallies: list[Tally]) -> None:
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as client:
        for job_id in (j for t in tallies for j in t.submitted):
            client.post(f"/v1/jobs/{job_id}/cancel")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help=f"concurrent clients (1-{MAX_CLIENTS})")
    parser.add_argument("--duration", type=float, default=20.0, help=f"seconds of load (1-{MAX_DURATION_S:.0f})")
    parser.add_argument("--polls", type=int, default=4, help="status reads after each submission")
    parser.add_argument("--url", help="an already running API on loopback (default: start a stack)")
    parser.add_argument("--api-key", default=os.environ.get("IPFVR_API_KEY"), help="key for --url")
    parser.add_argument("--engine", help="engine of the submitted jobs (default: parked, or the server's default)")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 1 <= args.duration <= MAX_DURATION_S or args.polls < 0:
        parser.error(f"--clients must be 1-{MAX_CLIENTS}, --duration 1-{MAX_DURATION_S:.0f}, --polls >= 0")

    if args.url:
        check_loopback(args.url)
        if not args.api_key:
            parser.error("--url needs --api-key (or IPFVR_API_KEY)")
        tallies = load(args.url, [args.api_key], args.clients, args.duration, args.polls, args.engine)
        cancel_all(args.url, args.api_key, tallies)
        return report(tallies, args.clients, args.duration, args.polls, f"against {args.url}")

    quiet = {"IPFVR_RATE_LIMIT_PER_S": "100000", "IPFVR_RATE_LIMIT_BURST": "100000", "IPFVR_LOG_LEVEL": "WARNING"}
    with local_stack("load", quiet) as local:
        local.stack.start_api()
        keys = [local.new_key(f"load{i}") for i in range(args.clients)]
        tallies = load(local.stack.api_url, keys, args.clients, args.duration, args.polls, args.engine or PARKED_ENGINE)
        return report(
            tallies,
            args.clients,
            args.duration,
            args.polls,
            f"self-started stack (one uvicorn worker, logs in {local.tmp / 'logs'})",
        )


if __name__ == "__main__":
    sys.exit(main())
