"""Every benchmark in bench/ in a short mode: each path it times runs, so none can rot unseen.

The figures of these runs mean nothing (a few frames, a few requests); the tests check that each
section ran to its printed result. The real runs and their tables are in the issue notes.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> str:
    """Run ``bench/<script>`` with ``args``; its stdout, after asserting that it exited 0."""
    r = subprocess.run(
        [sys.executable, f"bench/{script}", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return r.stdout


NUMBER = r"[0-9]+(?:\.[0-9]+)?"


@pytest.mark.slow
def test_pipeline_bench_compares_samplings_with_a_stage_table_and_samples_memory() -> None:
    out = run_bench(
        "pipeline_bench.py", "--seconds", "0.8", "--fps", "5", "--ratio-seconds", "0.2", "--embed-every", "1,2"
    )
    for k in (1, 2):
        assert re.search(rf"pipeline, engine excluded, k={k}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER} -> {NUMBER}", out), out
        assert re.search(rf"^\s+k={k}(\s+{NUMBER})+$", out, re.M), out  # its row of the per-stage table
    assert re.search(r"time per stage \(s\).*\bdetect\b.*\bencode\b", out), out
    assert re.search(rf"peak RSS by restore progress: 25% {NUMBER} MiB", out), out


@pytest.mark.slow
def test_engine_bench_times_both_engines_and_the_compute_bound() -> None:
    out = run_bench("engine_bench.py", "--frames", "1", "--repeats", "1")
    for clip in ("176x144", "1280x720"):
        assert re.search(rf"{clip}\s+reference / baseline engine time per face: {NUMBER}", out), out
    assert re.search(
        rf"base network .* {NUMBER} GMAC/s; one 64->64 3x3 conv .* {NUMBER} GMAC/s; ratio {NUMBER}", out
    ), out


@pytest.mark.slow
def test_service_bench_measures_creation_against_both_baselines_memory_and_start_latency() -> None:
    out = run_bench(
        "service_bench.py",
        "--requests",
        "20",
        "--concurrency",
        "2",
        "--upload-mb",
        "1",
        "--clients",
        "1",
        "--starts",
        "1",
    )
    for baseline in ("into S3", "reads the body"):
        assert re.search(rf"ratio jobs / bare \({baseline}\): throughput {NUMBER}x", out), out
    assert re.search(rf"POST /v1/jobs(\s+{NUMBER}){{5}}$", out, re.M), out  # req/s, p50, p99, CPU ms, req/s/core
    assert re.search(rf"API RSS before {NUMBER} MiB, peak {NUMBER} MiB", out), out
    assert re.search(rf"created_at -> started_at: p50 {NUMBER} ms", out), out


@pytest.mark.slow
def test_load_bench_runs_without_errors() -> None:
    out = run_bench("load_bench.py", "--clients", "1", "--duration", "1")
    assert re.search(rf"submissions\s+[1-9][0-9]* accepted = {NUMBER} /s sustained", out), out
    assert re.search(r"^\s+errors\s+0$", out, re.M), out


@pytest.mark.slow
def test_gpu_check_runs_on_tiny_shapes_with_the_training_steps(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    r = subprocess.run(
        [
            sys.executable,
            "bench/gpu_check.py",
            "--device",
            "cpu",
            "--size",
            "tiny",
            "--resolution",
            "64",
            "--frames",
            "4",
            "--steps",
            "2",
            "--half",
            "bfloat16",
            "--train",
            "--skip-unbatched",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ok"] is True
    assert set(report["training"]) == {"restore", "identity", "feedback"}
    for stage, entry in report["training"].items():
        assert math.isfinite(entry["s_per_step"]) and entry["s_per_step"] > 0, stage
        assert entry["trained_params_m"] > 0, stage
    assert report["training"]["identity"]["trained_params_m"] < report["training"]["restore"]["trained_params_m"]
