#!/usr/bin/env bash
# How long `GET /readyz` takes while the proxy runs at its maximum rate: the
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

# The proxy is a child of this run's loadtest (itself the child of `timeout`): not any other
# sigsci-proxy on the machine.
proxy=
for _ in $(seq 1 1000); do
    for l in $(pgrep -P "$lt" || true); do
        proxy=$(pgrep -P "$l" -x sigsci-proxy || true)
    done
    [ -n "$proxy" ] && break
    sleep 0.02
done
[ -n "$proxy" ] || { echo "readyz: no sigsci-proxy started" >&2; cat "$log" >&2; exit 1; }
admin=$(tr '\0' '\n' < "/proc/$proxy/cmdline" | grep -A1 -x -- '--admin' | tail -1)
case "$admin" in
    127.*) ;;
    *) echo "readyz: the proxy's admin address $admin is not on loopback" >&2; exit 1 ;;
esac
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
    function at(q,  i) { i = int(NR * q) + 1; return v[i > NR ? NR : i] }
    { v[NR] = $1; if ($1 > 1000) over++ }
    END {
        if (NR == 0) { print "readyz: no answer"; exit 1 }
        printf "readyz: %d probes, ms p50 %.2f p90 %.2f p99 %.2f p99.9 %.2f max %.2f, over 1 s: %d\n",
            NR, at(0.5), at(0.9), at(0.99), at(0.999), v[NR], over + 0
    }'
# The last answers may be the drain's 503 (loadtest stops the proxy at the end).
echo "non-200 answers (probe number, status, seconds): $(awk '$1 != 200 { printf "#%d %s %s; ", NR, $1, $2 }' "$times")of $(wc -l < "$times")"
rm -f "$log"
