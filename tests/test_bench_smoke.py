"""The GPU benchmark in its CPU smoke mode: every path it times runs (so it cannot rot unseen)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_tiny_shapes_with_the_training_steps(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    r = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--size", "tiny", "--resolution", "64",
                        "--frames", "4", "--steps", "2", "--half", "bfloat16", "--train", "--skip-unbatched",
                        "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ok"] is True
    assert set(report["training"]) == {"restore", "identity", "feedback"}
    for stage, entry in report["training"].items():
        assert math.isfinite(entry["s_per_step"]) and entry["s_per_step"] > 0, stage
        assert entry["trained_params_m"] > 0, stage
    assert report["training"]["identity"]["trained_params_m"] < report["training"]["restore"]["trained_params_m"]
