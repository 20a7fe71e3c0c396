"""What the training tests share: the ``ipfvr`` CLI in a subprocess and the data preparation flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREPARE = [
    "--face-backend",
    "dlib",
    "--resolution",
    "64",
    "--clip-frames",
    "8",
    "--min-face-px",
    "20",
    "--min-sharpness",
    "0",
    "--max-clips-per-track",
    "3",
]


def ipfvr(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ipfvr", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
