#!/bin/bash
# The proxy's overhead over talking straight to one agent, in one run.
# Paired open loop (2,000 tx/s for 10 s, transactions alternating between agent 0 and the
# proxy), then each path's maximum rate in closed loop, and the proxy's upstream connects per
# second; prints a summary and a RESULT PASS|FAIL line (exit 1 on FAIL). Arguments go to
# `loadtest local --compare` (e.g. --duration 5s --json reports/overhead.json, or
# --proxy-arg=--busy-poll=2ms for the proxy with busy polling).
# Builds the release binaries first if either is missing (in $CARGO_TARGET_DIR or target/).
# usage: scripts/measure/overhead.sh [LOADTEST LOCAL OPTIONS...]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${CARGO_TARGET_DIR:-target}/release
if [ ! -x "$bin/loadtest" ] || [ ! -x "$bin/sigsci-proxy" ]; then
  cargo build --release --bins -p sigsci-loadtest -p sigsci-proxy
fi
uptime
exec "$bin/loadtest" local --compare "$@"
