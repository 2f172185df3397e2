#!/bin/bash
# /hints follows load up and down at once (no proxy-side window: the HPA's is the one).
# Three simulated agents behind the proxy; 1,500 tx/s for 30 s, doubled to 3,000 tx/s from 5 s
# to 15 s; prints /hints every second. Run from the repository root after
# `cargo build --release --bins`. The smoothing is shortened to 2 s (default 10 s) so the
# whole cycle fits in half a minute.
# usage: scripts/measure/hints.sh [LOADTEST [PROXY]]
set -u
LT=${1:-target/release/loadtest}; PX=${2:-target/release/sigsci-proxy}
PROXY_ARGS=${PROXY_ARGS:---hints-smoothing 2s}
d=$(mktemp -d)
admins=()
agents=()
for i in 0 1 2; do
  $LT agent --listen 127.0.0.1:0 --admin 127.0.0.1:0 > $d/agent$i.out 2>&1 &
  sleep 0.3
done
sleep 1
for i in 0 1 2; do
  line=$(head -1 $d/agent$i.out)
  agents+=($(echo "$line" | sed -E 's/.*rpc=([^ ]+).*/\1/'))
  admins+=($(echo "$line" | sed -E 's/.*admin=([^ ]+).*/\1/'))
done
# shellcheck disable=SC2086 # PROXY_ARGS is a list of flags
$PX --listen 127.0.0.1:19971 --admin 127.0.0.1:19972 --agents "$(IFS=,; echo "${agents[*]}")" $PROXY_ARGS > $d/proxy.log 2>&1 &
px=$!
sleep 1
uptime
echo "proxy args: $PROXY_ARGS"
echo "drive A: $LT drive --target 127.0.0.1:19971 --rate 1500 --duration 30s --attack-fraction 0.2 (t=0..30s)"
echo "drive B: $LT drive --target 127.0.0.1:19971 --rate 1500 --duration 10s --attack-fraction 0.2 (t=5..15s)"
$LT drive --target 127.0.0.1:19971 --rate 1500 --duration 30s --attack-fraction 0.2 --no-progress > $d/driveA.txt 2>&1 &
a=$!
( sleep 5; $LT drive --target 127.0.0.1:19971 --rate 1500 --duration 10s --attack-fraction 0.2 --no-progress > $d/driveB.txt 2>&1 ) &
b=$!
echo "t_s demand recommended by_rate by_outstanding rpc_rate outstanding_ewma"
t0=$(date +%s.%N)
for s in $(seq 0 33); do
  h=$(curl -s 127.0.0.1:19972/hints)
  t=$(echo "$(date +%s.%N) - $t0" | bc)
  echo "$h" | python3 -c "import json,sys; h=json.load(sys.stdin); print('%.1f'%$t, round(h['demand'],3), h['recommended'], h['by_rate'], h['by_outstanding'], round(h['rpc_rate']), round(h['total_outstanding_ewma'],2))"
  sleep 1
done
wait $a $b
echo "--- drive A"; cat $d/driveA.txt | head -8
echo "--- drive B"; cat $d/driveB.txt | head -8
kill -TERM $px; wait $px
for i in 0 1 2; do curl -s -X POST ${admins[$i]}/shutdown >/dev/null; done
sleep 1
rm -rf $d
