#!/usr/bin/env bash
# HAProxy baseline: what a connection-level balancer (kube-proxy, HAProxy/NGINX in TCP mode) does
# to the module protocol. N simulated agents behind HAProxy `mode tcp` + `balance roundrobin` on
# loopback, driven like real modules (a connection per RPC) at 2,000 transactions/s with 20% of
# them flagged; prints the fraction of UpdateRequests that reached an agent that never issued
# their RequestID (expected ≈ (N-1)/N: 0.5 with 2 agents, 0.67 with 3).
#
# Usage: scripts/haproxy-baseline.sh [AGENT_COUNT...]      (default: 2)
# Env:   RATE (2000), DURATION (10s), ATTACK_FRACTION (0.2), LOADTEST (path to the binary;
#        default: build it with cargo --release), JSON_DIR (keep the JSON reports there).
set -euo pipefail

RATE=${RATE:-2000}
DURATION=${DURATION:-10s}
ATTACK_FRACTION=${ATTACK_FRACTION:-0.2}
COUNTS=("${@:-2}")

if ! command -v haproxy >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    echo "haproxy not found: installing Debian's package" >&2
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y haproxy
fi

cd "$(dirname "$0")/.."
if [ -z "${LOADTEST:-}" ]; then
    cargo build --release -p sigsci-loadtest >&2
    LOADTEST="${CARGO_TARGET_DIR:-target}/release/loadtest"
fi
JSON_DIR=${JSON_DIR:-$(mktemp -d)}

for n in "${COUNTS[@]}"; do
    json="$JSON_DIR/haproxy-$n-agents.json"
    echo "== $n agents behind HAProxy (tcp, roundrobin): $RATE tx/s for $DURATION, $ATTACK_FRACTION flagged" >&2
    # Orphaned updates are the point of this run, so they do not fail it; errors still do.
    "$LOADTEST" local --via haproxy --agents "$n" --rate "$RATE" --duration "$DURATION" \
        --attack-fraction "$ATTACK_FRACTION" --json "$json" || status=$?
    frac=$(sed -n 's/.*"orphaned_fraction": \([0-9.]*\).*/\1/p' "$json" | head -n1)
    echo "haproxy agents=$n orphaned_fraction=${frac:-n/a} (expected ≈ $(awk -v n="$n" 'BEGIN{printf "%.2f", (n-1)/n}'))"
done
exit "${status:-0}"
