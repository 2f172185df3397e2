#!/usr/bin/env bash
# The proxy's memory under load with nothing scraping /metrics: RSS (VmRSS of
# /proc/PID/status) 2 s and 30 s after the proxy process appears, during
# `loadtest local --agents 1 --rate 2000 --duration 30s`. Acceptance: growth <= 256 KiB.
# Run from the repository root after `cargo build --release --bins`.
#
#   scripts/measure/rss.sh [LOADTEST_BIN] [-- extra loadtest args]
#
# Prints the two samples, the growth and PASS/FAIL; exits non-zero on FAIL.
set -euo pipefail
LT=${1:-target/release/loadtest}
shift || true
[ "${1:-}" = "--" ] && shift
LIMIT_KIB=256

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

"$LT" local --agents 1 --rate 2000 --duration 30s "$@" > /tmp/rss-loadtest.$$.log 2>&1 &
lt=$!
trap 'kill "$lt" 2>/dev/null || true' EXIT

# The proxy is loadtest's child process named sigsci-proxy.
proxy=
for _ in $(seq 1 500); do
    proxy=$(pgrep -P "$lt" -x sigsci-proxy || true)
    [ -n "$proxy" ] && break
    sleep 0.02
done
[ -n "$proxy" ] || { echo "rss: no sigsci-proxy child of loadtest" >&2; cat /tmp/rss-loadtest.$$.log >&2; exit 1; }
start=$(date +%s.%N)
at() { # sleep until $1 seconds after the proxy appeared
    sleep "$(awk -v s="$start" -v t="$1" -v n="$(date +%s.%N)" 'BEGIN { d = s + t - n; print (d > 0 ? d : 0) }')"
}
sample() {
    [ -r "/proc/$proxy/status" ] || { echo "rss: the proxy exited before the $1 s sample" >&2; exit 1; }
    rss_kib "$proxy"
}
at 2;  a=$(sample 2)
at 30; b=$(sample 30)
wait "$lt" || true
trap - EXIT
grep -E '^RESULT|tx/s|achieved' /tmp/rss-loadtest.$$.log | head -5 || true
rm -f /tmp/rss-loadtest.$$.log
growth=$((b - a))
echo "proxy pid $proxy: VmRSS at 2 s ${a} KiB, at 30 s ${b} KiB, growth ${growth} KiB (limit ${LIMIT_KIB} KiB)"
if [ "$growth" -le "$LIMIT_KIB" ]; then echo "RSS PASS"; else echo "RSS FAIL"; exit 1; fi
