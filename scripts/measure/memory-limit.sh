#!/usr/bin/env bash
# The proxy under the manifests' memory limit with every memory-bound limit pushed at once:
# can any input OOM-kill it?
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
# it stops by itself after DURATION plus the time the proxy takes to accept the idle
# connections (at most 180 s; about a minute in all with a release build), and removes its
# cgroup. Environment: LIMIT, DURATION, CONNECTIONS, PARTIAL_SENDERS, BIG_SENDERS, DEAF_AGENTS
# (agents that read nothing: the send queues outside every budget). Examples:
#   scripts/measure/memory-limit.sh target/release/sigsci-proxy     # the budget derived
#   CONNECTIONS=0 BIG_SENDERS=0 scripts/measure/memory-limit.sh target/debug/sigsci-proxy -- \
#       --max-partial-bytes 31457280                                 # one budget alone
# The parent commit's binary, which took 20,000 connections, 64 MiB and 64 MiB as its
# defaults whatever the limit, is the "before" (this code refuses those values under 256 MiB).
# The proxy's log: /tmp/memory-limit-proxy.PID.log.
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
DEAF_AGENTS=${DEAF_AGENTS:-0}

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
    --deaf-agents "$DEAF_AGENTS" \
    "${proxy_args[@]}"
