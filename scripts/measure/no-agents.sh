#!/bin/bash
# Acceptance 7: the proxy with no usable agent answers an error frame at once.
# Open loop at 1,000 tx/s (empty agents file; a dead address), then closed loop (latency from
# each call's real start). Run from the repository root after `cargo build --release --bins`.
# usage: scripts/measure/no-agents.sh [LOADTEST [PROXY [OUTDIR]]]
set -u
LT=${1:-target/release/loadtest}; PX=${2:-target/release/sigsci-proxy}; OUT=${3:-reports/no-agents}
mkdir -p "$OUT"
d=$(mktemp -d)
echo '[]' > $d/agents.json
for mode in empty-file dead-address; do
  if [ $mode = empty-file ]; then src=(--agents-file $d/agents.json); else src=(--agents 127.0.0.1:1); fi
  $PX --listen 127.0.0.1:19981 --admin 127.0.0.1:19982 "${src[@]}" > $d/proxy-$mode.log 2>&1 &
  pid=$!
  sleep 1
  echo "== $mode: $PX --listen 127.0.0.1:19981 --admin 127.0.0.1:19982 ${src[*]}"; uptime
  echo "cmd: $LT drive --target 127.0.0.1:19981 --rate 1000 --duration 10s --no-progress --json $OUT/a7-$mode.json"
  $LT drive --target 127.0.0.1:19981 --rate 1000 --duration 10s --no-progress --json $OUT/a7-$mode.json
  kill -TERM $pid; wait $pid; echo "proxy exit $?"
done
rm -rf $d
# Closed loop (latency from each call's real start, no open-loop timer slop):
d=$(mktemp -d); echo '[]' > $d/agents.json
$PX --listen 127.0.0.1:19981 --admin 127.0.0.1:19982 --agents-file $d/agents.json > $d/proxy.log 2>&1 &
pid=$!; sleep 1
echo "== empty-file closed loop"; uptime
echo "cmd: $LT drive --target 127.0.0.1:19981 --concurrency 2 --duration 10s --no-progress --json $OUT/a7-empty-file-closed.json"
$LT drive --target 127.0.0.1:19981 --concurrency 2 --duration 10s --no-progress --json $OUT/a7-empty-file-closed.json
kill -TERM $pid; wait $pid; echo "proxy exit $?"; rm -rf $d
