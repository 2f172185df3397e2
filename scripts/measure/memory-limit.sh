#!/usr/bin/env bash
# The proxy under the manifests' memory limit with every memory-bound limit pushed at once
# (issue #20 point 6): can any input OOM-kill it?
#
# The real sigsci-proxy runs in a memory cgroup of its own limited to LIMIT (default 256M, the
# limit in manifests/base/proxy.yaml), a child of this shell's cgroup (v2, or v1's memory
# hierarchy), so the kernel OOM-kills it there as it would in the container. Against it, for
# DURATION seconds (scripts/measure/memory_limit.py has the details):
#   - 20,000 idle connections (CONNECTIONS);
#   - slow senders each holding 3.9 MB of a frame, reconnecting when reset: the partial-frame
#     budget stays full;
#   - large PreRequests (3.9 MB) to three agents that read and never answer, each sent again
#     once answered: the in-flight budget stays full. The proxy runs with --rpc-timeout 5s
#     (the most --frame-read-timeout allows) so that a few dozen senders keep it full; at the
#     default 80 ms filling it takes ~800 MB/s.
# Prints a RESULT line: alive at the end or not, OOM kills in the cgroup, the cgroup's peak
# usage and the proxy's peak RSS against the limit, what the proxy shed (metrics).
#
#   scripts/measure/memory-limit.sh [PROXY_BIN] [-- extra proxy args]
#
# Run as root (the cgroup, 20,000 descriptors) from the repository root, after
# `cargo build -p sigsci-proxy` (debug or --release). Loopback only (127.0.0.0/8), bounded:
# it stops by itself after DURATION + the time to open the connections (about a minute), and
# removes its cgroup. Examples:
#   scripts/measure/memory-limit.sh target/debug/sigsci-proxy       # the defaults, derived
#   scripts/measure/memory-limit.sh target/debug/sigsci-proxy -- \
#       --max-connections 20000 --max-partial-bytes 67108864 --max-in-flight-bytes 67108864
#   (the second is refused at start-up under the limit; the binary of an earlier release took
#   these as its defaults.)
# Not part of CI.
set -euo pipefail
PROXY=${1:-target/debug/sigsci-proxy}
shift || true
[ "${1:-}" = "--" ] && shift
LIMIT=${LIMIT:-256M}
DURATION=${DURATION:-30}
CONNECTIONS=${CONNECTIONS:-20000}
PARTIAL_SENDERS=${PARTIAL_SENDERS:-24}
BIG_SENDERS=${BIG_SENDERS:-40}

[ "$(id -u)" = 0 ] || { echo "memory-limit: run as root (cgroup, file descriptors)" >&2; exit 1; }
[ -x "$PROXY" ] || { echo "memory-limit: no proxy binary $PROXY (cargo build -p sigsci-proxy)" >&2; exit 1; }
# The proxy raises its soft descriptor limit to the hard one itself and keeps max(256, limit
# / 8) for agents and the admin port: 20,000 connections need a hard limit of about 23,000.
ulimit -n "$(ulimit -Hn)"

args=(--rpc-timeout 5s)
for a in "$@"; do args+=("$a"); done
proxy_args=()
for a in "${args[@]}"; do proxy_args+=("--proxy-arg=$a"); done

exec timeout --kill-after=10 $((DURATION + 300)) python3 "$(dirname "$0")/memory_limit.py" \
    --proxy "$PROXY" --limit "$LIMIT" --duration "$DURATION" --connections "$CONNECTIONS" \
    --partial-senders "$PARTIAL_SENDERS" --big-senders "$BIG_SENDERS" \
    "${proxy_args[@]}"
