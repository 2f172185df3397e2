#!/usr/bin/env bash
# The autoscaling scenarios (loadtest/scenarios/autoscale-*.toml, CI's shortened one aside), each
# run once per policy side by side (the manifest's HPA, CPU only, a fixed pool for the peak), on
# the release build: writes each scenario's table to stdout and its JSON and SVG plot to
# $OUT (default loadtest/results/autoscale). Run from the repository root after
# `cargo build --release -p sigsci-loadtest -p sigsci-proxy`. About 20 minutes in all.
#
#   scripts/measure/autoscale.sh [NAME ...]     (default: ramp step wave two-proxies)
set -uo pipefail
LT=${LOADTEST:-target/release/loadtest}
OUT=${OUT:-loadtest/results/autoscale}
mkdir -p "$OUT"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(ramp step wave two-proxies)
for name in "${names[@]}"; do
    start=$(date +%s)
    echo "== autoscale-$name (load average before: $(cut -d' ' -f1-3 /proc/loadavg))"
    "$LT" local --scenario "loadtest/scenarios/autoscale-$name.toml" \
        --json "$OUT/$name.json" --plot "$OUT/$name.svg" 2> "$OUT/$name.log"
    echo "(exit $?, $(( $(date +%s) - start )) s, load average after: $(cut -d' ' -f1-3 /proc/loadavg))"
done
