#!/usr/bin/env bash
# CPU per RPC of two proxy binaries, paired: ROUNDS pairs, A B then B A in turn (so neither
# always runs first), each run one `loadtest local --agents 3 --duration 20s --proxy-bin BIN` with the
# arguments given after `--` (e.g. `--rate 2000`, or `--bed netns --rate 1000` as root).
# Prints per run: the load average, CPU µs per RPC (the fronts' CPU line) and the
# PreRequest p50 / p99 in µs; then each binary's median CPU per RPC. On a shared machine
# single runs differ by tens of µs: compare medians, with the counts of wakeups.py.
# Run from the repository root after `cargo build --release --bins`:
#
#   scripts/measure/cpu-pairs.sh ROUNDS BIN_A BIN_B [-- loadtest args]
set -euo pipefail
ROUNDS=$1 A=$2 B=$3
shift 3
[ "${1:-}" = "--" ] && shift
LT=${LOADTEST:-target/release/loadtest}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() { # label bin [loadtest args]
    local label=$1 bin=$2 log="$out/run.log" load cpu pre
    shift 2
    load=$(cut -d' ' -f1 /proc/loadavg)
    "$LT" local --agents 3 --duration 20s --max-errors 1000000 --proxy-bin "$bin" "$@" \
        > "$log" 2>&1 || true
    cpu=$(sed -n "s/.*fronts' CPU: .*, \([0-9.]*\) µs per RPC.*/\1/p" "$log")
    pre=$(awk '$1 == "RPC.PreRequest" { print $4, $6 }' "$log")
    echo "$label load $load cpu_us_per_rpc ${cpu:-?} pre_p50_p99 ${pre:-? ?}" | tee -a "$out/all"
}

for i in $(seq 1 "$ROUNDS"); do
    if [ $((i % 2)) = 1 ]; then
        run A "$A" "$@"
        run B "$B" "$@"
    else
        run B "$B" "$@"
        run A "$A" "$@"
    fi
done
for l in A B; do
    awk -v l=$l '$1 == l && $5 != "?" { print $5 }' "$out/all" | sort -g | awk -v l=$l '
        { v[++n] = $1 } END { m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        printf "%s median cpu_us_per_rpc %.1f over %d runs\n", l, m, n }'
done
