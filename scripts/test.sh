#!/usr/bin/env bash
# The test command (README, .ci/run): install, make sure Redis is up, run the whole suite.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/test_video_reading.py -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
. .venv/bin/activate
# The suite uses the Redis on 127.0.0.1:6379 (this machine kind runs one); start it if it is down.
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp
  sleep 1
fi
# The web page's test drives Debian's Chromium through Playwright (its wheel brings the driver; no browser
# is downloaded at test time).
if [ ! -x /usr/bin/chromium ]; then
  [ "$(id -u)" = 0 ] || { echo "/usr/bin/chromium is missing: apt-get install chromium (as root)" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
export HF_HUB_OFFLINE=1
exec python -m pytest -q -p no:cacheprovider "$@"
