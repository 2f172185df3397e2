#!/usr/bin/env bash
# How long `GET /readyz` takes while the proxy runs at its maximum rate (issue #20 point 6): the
# readiness probe in manifests/base/proxy.yaml is set from it. /readyz is served on the proxy's
# runtime, the thread that serves the RPCs (one by default), so it waits behind them.
#
# Runs `loadtest local --agents 3 --concurrency 16` (closed loop: as many transactions as the
# proxy answers) for DURATION, and meanwhile asks the proxy's /readyz every INTERVAL seconds
# over a new connection each time, as the kubelet does (curl, 5 s timeout). Prints the number
# of probes, p50, p90, p99, p99.9 and max in milliseconds, how many took over 1 s (the
# kubelet's default timeoutSeconds), and loadtest's result line.
#
#   scripts/measure/readyz.sh [LOADTEST_BIN] [-- extra loadtest args]
#
# From the repository root after `cargo build --release -p sigsci-proxy -p sigsci-loadtest
# --bins`. Loopback only; stops by itself after DURATION (default 60s) and ~15 s of set-up.
set -euo pipefail
LT=${1:-target/release/loadtest}
shift || true
[ "${1:-}" = "--" ] && shift
DURATION=${DURATION:-60s}
INTERVAL=${INTERVAL:-0.1}
CONCURRENCY=${CONCURRENCY:-16}
log=/tmp/readyz-loadtest.$$.log
times=/tmp/readyz-times.$$.txt

timeout --kill-after=10 600 "$LT" local --agents 3 --concurrency "$CONCURRENCY" \
    --duration "$DURATION" "$@" > "$log" 2>&1 &
lt=$!
trap 'kill "$lt" 2>/dev/null || true; rm -f "$times"' EXIT

proxy=
for _ in $(seq 1 1000); do
    proxy=$(pgrep -f -n '/sigsci-proxy .*--agents-file' || true)
    [ -n "$proxy" ] && break
    sleep 0.02
done
[ -n "$proxy" ] || { echo "readyz: no sigsci-proxy started" >&2; cat "$log" >&2; exit 1; }
admin=$(tr '\0' '\n' < "/proc/$proxy/cmdline" | grep -A1 -x -- '--admin' | tail -1)
echo "proxy pid $proxy, admin $admin"
: > "$times"
while kill -0 "$proxy" 2>/dev/null && kill -0 "$lt" 2>/dev/null; do
    curl -s -o /dev/null --max-time 5 -w '%{http_code} %{time_total}\n' \
        "http://$admin/readyz" >> "$times" || echo "000 5" >> "$times"
    sleep "$INTERVAL"
done
wait "$lt" || true
grep -E '^RESULT|tx/s|achieved' "$log" | head -5 || true
# Only the probes answered 200 while the load ran (the drain at the end answers 503).
awk '$1 == 200 { print $2 * 1000 }' "$times" | sort -n | awk '
    { v[NR] = $1 }
    END {
        if (NR == 0) { print "readyz: no answer"; exit 1 }
        n = NR; over = 0
        for (i = 1; i <= n; i++) if (v[i] > 1000) over++
        printf "readyz: %d probes, ms p50 %.2f p90 %.2f p99 %.2f p99.9 %.2f max %.2f, over 1 s: %d\n",
            n, v[int(n*0.5)+1 > n ? n : int(n*0.5)+1], v[int(n*0.9)+1 > n ? n : int(n*0.9)+1],
            v[int(n*0.99)+1 > n ? n : int(n*0.99)+1], v[int(n*0.999)+1 > n ? n : int(n*0.999)+1],
            v[n], over
    }'
echo "non-200 answers: $(awk '$1 != 200' "$times" | wc -l)"
rm -f "$log"
