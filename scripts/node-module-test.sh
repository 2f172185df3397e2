#!/usr/bin/env bash
# End-to-end test with the REAL npm module sigsci-module-nodejs (loadtest/node): the example app
# sends its RPCs to simulated agents (`loadtest agent`), directly or through sigsci-proxy, and
# loadtest/node/test/module.test.js checks the HTTP statuses and the agents' counters.
#
# Usage: scripts/node-module-test.sh [--via-proxy N] [--requests N] [--attacks N] [--errors N]
#                                    [--flag-fraction F] [--module-timeout-ms MS] [--no-build]
#   (default)        one simulated agent; the module connects to it directly
#   --via-proxy N    N simulated agents behind sigsci-proxy; the module connects to the proxy
#                    (counters are summed over the agents: every UpdateRequest must reach the
#                    agent that issued its RequestID, so updates_orphaned must stay 0)
#   --flag-fraction  fraction of normal requests the agents flag (answer with a RequestID),
#                    default 0.2
#   --no-build       use the binaries already in $CARGO_TARGET_DIR/$SIGSCI_TEST_PROFILE (release)
#
# Idempotent: runs `npm ci` only when loadtest/node/node_modules is missing; cargo builds are
# incremental. Everything binds 127.0.0.1; every step has a timeout; children are killed on exit.
# CARGO_TARGET_DIR defaults to <repo>/target. Exit status: 0 pass, 2 usage, other non-zero = failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE_DIR="$ROOT/loadtest/node"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# Cargo profile of the binaries: release by default; scripts/test uses debug, which cargo test
# has already built (one compile instead of two in CI).
PROFILE=${SIGSCI_TEST_PROFILE:-release}
case "$PROFILE" in release|debug) ;; *) echo "SIGSCI_TEST_PROFILE must be release or debug" >&2; exit 2;; esac

AGENTS=1
VIA_PROXY=0
REQUESTS=200
ATTACKS=20
ERRORS=10
FLAG_FRACTION=0.2
MODULE_TIMEOUT_MS=1000
BUILD=1

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --via-proxy) VIA_PROXY=1; AGENTS=${2:?--via-proxy needs N}; shift 2 ;;
    --requests) REQUESTS=${2:?}; shift 2 ;;
    --attacks) ATTACKS=${2:?}; shift 2 ;;
    --errors) ERRORS=${2:?}; shift 2 ;;
    --flag-fraction) FLAG_FRACTION=${2:?}; shift 2 ;;
    --module-timeout-ms) MODULE_TIMEOUT_MS=${2:?}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
case "$AGENTS" in ''|*[!0-9]*|0) echo "--via-proxy needs a positive number of agents" >&2; exit 2 ;; esac

for tool in node npm curl; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done
[ "$BUILD" = 0 ] || command -v cargo >/dev/null || { echo "missing tool: cargo" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/node-module-test.XXXXXX")
PIDS=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Give them 5 s to stop (agents print their stats), then kill what is left.
  for _ in $(seq 50); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [ "$status" != 0 ]; then
    for log in "$WORK"/*.log; do
      [ -e "$log" ] || continue
      echo "----- $(basename "$log") (last 40 lines)" >&2
      tail -n 40 "$log" >&2
    done
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "node-module-test: $*" >&2; }

# Waits (up to $3 s) for a line matching regex $2 in file $1 while process $4 lives; prints it.
wait_line() {
  local file=$1 re=$2 secs=$3 pid=$4 line
  for _ in $(seq $((secs * 10))); do
    line=$(grep -m1 -E "$re" "$file" 2>/dev/null || true)
    if [ -n "$line" ]; then echo "$line"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { log "process $pid exited: $(tail -n 5 "$file")"; return 1; }
    sleep 0.1
  done
  log "no line matching '$re' in $file after ${secs}s"
  return 1
}

# A free loopback TCP port (bound then released: good enough on an otherwise quiet loopback).
free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# 1. Node dependencies.
if [ ! -d "$NODE_DIR/node_modules" ]; then
  log "npm ci in loadtest/node"
  (cd "$NODE_DIR" && timeout 300 npm ci --no-audit --no-fund --loglevel=error)
fi

# 2. Binaries.
if [ "$BUILD" = 1 ]; then
  bins=(-p sigsci-loadtest --bin loadtest)
  [ "$VIA_PROXY" = 1 ] && bins+=(-p sigsci-proxy --bin sigsci-proxy)
  log "building ${bins[*]} (CARGO_TARGET_DIR=$TARGET_DIR)"
  if [ "$PROFILE" = release ]; then profile_flag=--release; else profile_flag=; fi
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" timeout 1800 cargo build $profile_flag --quiet "${bins[@]}")
fi
LOADTEST="$TARGET_DIR/$PROFILE/loadtest"
PROXY="$TARGET_DIR/$PROFILE/sigsci-proxy"
[ -x "$LOADTEST" ] || { log "no $LOADTEST"; exit 1; }
[ "$VIA_PROXY" = 0 ] || [ -x "$PROXY" ] || { log "no $PROXY"; exit 1; }

# 3. Simulated agents.
RPCS=()
ADMINS=()
for i in $(seq "$AGENTS"); do
  "$LOADTEST" agent --listen 127.0.0.1:0 --admin 127.0.0.1:0 --flag-fraction "$FLAG_FRACTION" \
    >"$WORK/agent$i.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  line=$(wait_line "$WORK/agent$i.log" '^listening rpc=' 15 "$pid")
  rpc=$(sed -E 's/.*rpc=([^ ]+).*/\1/' <<<"$line")
  admin=$(sed -E 's/.*admin=([^ ]+).*/\1/' <<<"$line")
  RPCS+=("$rpc")
  ADMINS+=("$admin")
  log "agent $i: rpc=$rpc admin=$admin"
done
ADMINS_CSV=$(IFS=,; echo "${ADMINS[*]}")
AGENTS_CSV=$(IFS=,; echo "${RPCS[*]}")

# 4. The proxy, when asked.
TARGET_RPC=${RPCS[0]}
if [ "$VIA_PROXY" = 1 ]; then
  listen_port=$(free_port)
  admin_port=$(free_port)
  "$PROXY" --listen "127.0.0.1:$listen_port" --admin "127.0.0.1:$admin_port" --agents "$AGENTS_CSV" \
    >"$WORK/proxy.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  ready=0
  for _ in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || { log "sigsci-proxy exited"; exit 1; }
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$admin_port/readyz" || true)" = 200 ]; then
      ready=1; break
    fi
    sleep 0.1
  done
  [ "$ready" = 1 ] || { log "sigsci-proxy not ready (GET /readyz) after 15 s"; exit 1; }
  TARGET_RPC="127.0.0.1:$listen_port"
  log "sigsci-proxy: listen=$TARGET_RPC admin=127.0.0.1:$admin_port agents=$AGENTS_CSV"
fi

# 5. The Node test.
log "node --test: requests=$REQUESTS attacks=$ATTACKS errors=$ERRORS via $TARGET_RPC"
status=0
(cd "$NODE_DIR" && \
  SIGSCI_TEST_AGENT_RPC="$TARGET_RPC" \
  SIGSCI_TEST_AGENT_ADMINS="$ADMINS_CSV" \
  SIGSCI_TEST_REQUESTS="$REQUESTS" \
  SIGSCI_TEST_ATTACKS="$ATTACKS" \
  SIGSCI_TEST_ERRORS="$ERRORS" \
  SIGSCI_TEST_MODULE_TIMEOUT_MS="$MODULE_TIMEOUT_MS" \
  timeout 300 node --test --test-reporter=spec test/) || status=$?

# 6. Per-agent counters, for the record.
for i in "${!ADMINS[@]}"; do
  log "agent $((i + 1)) stats: $(curl -s --max-time 2 "http://${ADMINS[$i]}/stats" || echo unavailable)"
done
if [ "$status" = 0 ]; then log "PASS"; else log "FAIL (status $status)"; fi
exit "$status"
