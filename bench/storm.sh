#!/usr/bin/env bash
# Alert storm: one already-handled alert posted as fast as wrk can, against the same server's
# /healthz. Reports requests/s (and the ratio), p99, non-2xx count and the server's peak RSS.
#
#   cargo build --release && bench/storm.sh [seconds] [connections]
#
# Needs wrk (Debian package). Talks only to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
bin=target/release/rollbackd
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT

$bin demo --no-serve --dir "$work/demo" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ROLLBACKD_LOG=warn $bin --config "$work/demo/rollbackd.yaml" serve --listen "127.0.0.1:$port" >"$work/serve.out" 2>&1 &
server=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
export TOKEN BODY
TOKEN=$(tr -d '\n' <"$work/demo/secrets/alertmanager-tokens")
BODY="$work/demo/events/checkout-prod-alert.json"
first=$(curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' --data @"$BODY" "http://127.0.0.1:$port/webhooks/alertmanager")
echo "first delivery: $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["outcome"])' "$first")"

cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
local f = io.open(os.getenv("BODY"), "r")
wrk.body = f:read("*a")
f:close()
LUA

run() { wrk -t2 -c"$conns" -d"${secs}s" --latency "$@"; }
health=$(run "http://127.0.0.1:$port/healthz")
storm=$(run -s "$work/post.lua" "http://127.0.0.1:$port/webhooks/alertmanager")
rss=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")

rps() { awk '/Requests\/sec/ {print $2}' <<<"$1"; }
p() { awk -v q="$2" '$1 == q {print $2}' <<<"$1"; }
non2xx() { awk '/Non-2xx/ {n=$NF} END {print n+0}' <<<"$1"; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "wrk: 2 threads, $conns connections, ${secs}s each"
echo "| endpoint | req/s | p50 | p99 | non-2xx |"
echo "|---|---:|---:|---:|---:|"
echo "| /healthz | $(rps "$health") | $(p "$health" 50%) | $(p "$health" 99%) | $(non2xx "$health") |"
echo "| /webhooks/alertmanager (duplicate) | $(rps "$storm") | $(p "$storm" 50%) | $(p "$storm" 99%) | $(non2xx "$storm") |"
python3 -c "import sys; print(f'ratio alert/healthz: {float(sys.argv[1]) / float(sys.argv[2]) * 100:.0f}%')" "$(rps "$storm")" "$(rps "$health")"
echo "server peak RSS: $((rss / 1024)) MiB"
echo "rollback commits on the origin after the storm: $(git --git-dir "$work/demo/origin.git" log --format='%(trailers:key=Rollback-Id,valueonly)' main | grep -c .)"
