#!/usr/bin/env bash
# The README's first command: start a worker on an embedded NATS server,
# submit the demo jobs with eryx-submit, stop the worker.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${ERYX_DEMO_PORT:-14222}
MPORT=$((PORT + 1))
DATA=$(mktemp -d)
LOG="$DATA/worker.log"
cleanup() {
  if [ -n "${WORKER:-}" ]; then kill "$WORKER" 2>/dev/null || true; wait "$WORKER" 2>/dev/null || true; fi
  rm -rf "$DATA"
}
trap cleanup EXIT

echo "==> starting eryx-worker (embedded NATS on 127.0.0.1:$PORT, data in $DATA)"
ERYX_EMBEDDED_LISTEN=127.0.0.1:$PORT ERYX_METRICS_LISTEN=127.0.0.1:$MPORT ERYX_DATA_DIR="$DATA/js" ERYX_CACHE_DIR="${ERYX_CACHE_DIR:-$HOME/.cache/eryx/wazero}" \
  bin/eryx-worker >"$LOG" 2>&1 &
WORKER=$!
# Ready means: NATS up, streams created, pool warm (GET /readyz answers 200).
ready() {
  exec 3<>/dev/tcp/127.0.0.1/"$MPORT" || return 1
  printf 'GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  local status
  read -r _ status _ <&3
  exec 3>&-
  [ "$status" = 200 ]
}
for i in $(seq 1 300); do
  if ready 2>/dev/null; then break; fi
  if ! kill -0 "$WORKER" 2>/dev/null; then echo "worker exited:"; cat "$LOG"; exit 1; fi
  if [ "$i" = 300 ]; then echo "worker not ready after 30 s:"; cat "$LOG"; exit 1; fi
  sleep 0.1
done
NATS=nats://127.0.0.1:$PORT

echo "==> eryx-submit examples/jobs/hello.py"
bin/eryx-submit --nats "$NATS" examples/jobs/hello.py
echo "==> eryx-submit --json examples/jobs/primes.py"
bin/eryx-submit --nats "$NATS" --json examples/jobs/primes.py
echo "==> a session across two jobs"
bin/eryx-submit --nats "$NATS" --session demo -c 'x = 42'
bin/eryx-submit --nats "$NATS" --session demo -c 'print("x * 2 =", x * 2)'
echo "==> a runaway job, stopped by its time limit (exit code 124 expected)"
set +e
bin/eryx-submit --nats "$NATS" --timeout 1s -c 'sum(range(10**15))'
echo "exit code: $?"
set -e
echo "==> done; worker log in the last lines:"
tail -5 "$LOG"
